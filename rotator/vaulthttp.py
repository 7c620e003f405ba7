"""The HTTP transport under hvac: urllib3 connection pools instead of a `requests.Session`.

hvac accepts any session object with `requests.Session`'s `request()` signature. Vault calls are
rotator's hottest path (several per rotation, one per token per check), and requests' own
per-call work (hooks, cookie jars, environment merging, adapters) costs about as much CPU as the
request itself; urllib3, which requests uses underneath anyway, does the same HTTP for half of it
(bench/README.md has the figures). Only what hvac uses is implemented: a JSON body, query
parameters, headers, a timeout; never a redirect, never a retry (the scheduler retries).

Bounds: every request has a connect and read timeout (hvac passes `timeout`), and an overall
deadline of `DEADLINE_FACTOR` times that timeout for the whole request, status line, headers and
body included (`deadlines.py`: a peer dripping bytes is cut off, not waited for); an answer larger
than `MAX_BODY_BYTES` is refused.

Transport failures surface as `urllib3.exceptions.HTTPError` subclasses; `vault._mapped` turns
them into rotator's errors: `AnswerTooSlow` (the deadline passed) into `VaultUnavailable`,
`UnusableAnswer` (too large, not JSON, nested too deeply) into `VaultError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3
import urllib3.exceptions

from rotator.deadlines import WATCHDOG, watch_pools

MAX_BODY_BYTES = 32 * 1024 * 1024  # a detailed listing of 1,000 outputs is about 3 MiB
DEADLINE_FACTOR = 2.0
_READ_SIZE = 65536


class UnusableAnswer(urllib3.exceptions.HTTPError):
    """Vault answered something rotator cannot use: larger than MAX_BODY_BYTES, not JSON, or
    JSON nested too deeply to parse. The message says which; it never quotes the body."""


class AnswerTooSlow(urllib3.exceptions.TimeoutError):
    """Vault's answer (status line, headers or body) did not complete within the deadline."""


class VaultResponse:
    """The part of `requests.Response` hvac reads: status, headers, body, `.json()`."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def ok(self) -> bool:
        # Unlike requests (< 400): a redirect is not followed, so it is an error, not a result.
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON. Raises `UnusableAnswer`, deliberately not ValueError: hvac takes a
        ValueError on a 200 answer for "no JSON here" and hands the raw response to callers
        that expect a dict."""
        try:
            return json.loads(self.content)
        except RecursionError:
            raise UnusableAnswer("Vault's answer is JSON nested too deeply") from None
        except ValueError:
            raise UnusableAnswer("Vault's answer is not JSON") from None


class VaultHTTP:
    """A pooled, thread-safe HTTP client for one Vault address, shaped like `requests.Session`
    for hvac's adapter.

    `ca_cert`: a CA bundle file (None: the system's trust store). `proxy`: a proxy URL or None.
    `pool_size`: connections kept alive (more may open under load; the extra ones are closed).
    """

    # Read by hvac's adapter when given a session; the settings live in the pool instead.
    verify: Any = None
    cert: Any = None
    proxies: Any = None

    def __init__(
        self, *, ca_cert: str | None = None, proxy: str | None = None, pool_size: int = 10
    ):
        settings: dict[str, Any] = {
            "num_pools": 2,
            "maxsize": pool_size,
            "block": False,
            "retries": False,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": ca_cert,
        }
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **settings) if proxy else urllib3.PoolManager(**settings)
        )
        watch_pools(self._pool)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        allow_redirects: bool = False,
        timeout: float | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        **_: Any,  # cert, verify, proxies: hvac passes its own copies; the pool has them
    ) -> VaultResponse:
        if timeout is None:
            raise ValueError("every Vault request needs a timeout")
        if params:
            url = f"{url}?{urlencode(params)}"
        sent = dict(headers or {})
        body = data
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        with WATCHDOG.deadline(DEADLINE_FACTOR * timeout) as deadline:
            try:
                response = self._pool.request(
                    method.upper(),
                    url,
                    body=body,
                    headers=sent,
                    timeout=urllib3.Timeout(connect=timeout, read=timeout),
                    redirect=False,  # Vault's token never follows a redirect
                    retries=False,
                    preload_content=False,
                )
                content = _read_body(response)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if deadline.expired and not isinstance(exc, UnusableAnswer):
                    raise AnswerTooSlow(_too_slow(deadline.seconds)) from None
                raise
            if deadline.expired:  # cut just as the body ended: it may be incomplete
                raise AnswerTooSlow(_too_slow(deadline.seconds))
        return VaultResponse(response.status, response.headers, content)

    def close(self) -> None:
        self._pool.clear()


def _read_body(response: urllib3.BaseHTTPResponse) -> bytes:
    """The whole body, at most MAX_BODY_BYTES; the connection goes back to the pool only when
    the body was read to its end. Raises `UnusableAnswer` when it is larger."""
    chunks: list[bytes] = []
    size = 0
    complete = False
    try:
        while size <= MAX_BODY_BYTES and (chunk := response.read1(_READ_SIZE)):
            size += len(chunk)
            chunks.append(chunk)
        complete = size <= MAX_BODY_BYTES
    finally:
        if not complete:
            response.close()  # the rest is unread: this connection cannot carry another request
        response.release_conn()
    if not complete:
        raise UnusableAnswer(f"Vault's answer is larger than {_size(MAX_BODY_BYTES)}")
    return b"".join(chunks)


def _too_slow(seconds: float) -> str:
    return f"Vault did not answer within the deadline ({seconds:g} s)"


def _size(count: int) -> str:
    return f"{count // 2**20} MiB" if count >= 2**20 else f"{count // 2**10} KiB"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
