"""The HTTP transport under hvac: urllib3 connection pools instead of a `requests.Session`.

hvac accepts any session object with `requests.Session`'s `request()` signature. Vault calls are
rotator's hottest path (several per rotation, one per token per check), and requests' own
per-call work (hooks, cookie jars, environment merging, adapters) costs about as much CPU as the
request itself; urllib3, which requests uses underneath anyway, does the same HTTP for half of it
(bench/README.md has the figures). Only what hvac uses is implemented: a JSON body, query
parameters, headers, a timeout; never a redirect, never a retry (the scheduler retries).

Transport failures surface as `urllib3.exceptions.HTTPError` subclasses; `vault._mapped` turns
them into rotator's errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3


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
        return json.loads(self.content)


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
        response = self._pool.request(
            method.upper(),
            url,
            body=body,
            headers=sent,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=False,  # Vault's token never follows a redirect (allow_redirects is ignored)
            retries=False,
            preload_content=True,
        )
        return VaultResponse(response.status, response.headers, response.data)

    def close(self) -> None:
        self._pool.clear()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
