"""HTTP to LeanIX (the token endpoint and MTM): pooled urllib3, held to the transport rules.

`exchange.py` and `mtm.py` decide what to send and what an answer means; this module only
carries it, the same way for both (and `vaulthttp.py` does the same for Vault):

- one `urllib3.PoolManager` (a `ProxyManager` per proxy) whose connections deadlines can cut
  (`deadlines.watch_pools`), so a request runs under one overall deadline;
- never a redirect, never a retry (the scheduler retries), a connect and a read timeout on
  every request;
- no cookie jar at all: one tenant's answer cannot ride along with the next tenant's request;
- proxies from `HTTPS_PROXY` / `NO_PROXY` resolved once per scheme and host (`ProxyCache`), a
  CA bundle from `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` (as requests honours them), else
  certifi's, as requests would use;
- bodies read up to a limit before the deadline (`read_capped`), never quoted anywhere.

Why not requests, which rotator used here before: requests' per-call work (merging settings,
hooks, cookie jars, its adapter) cost 0.57 ms of CPU per exchange against 0.17 ms for the same
request on urllib3, which requests uses underneath anyway (bench/README.md, the profile).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
import urllib3.exceptions

from rotator.deadlines import Deadline, watch_pools
from rotator.httpenv import environ_proxies

USER_AGENT = "rotator/0.1"
_READ_SIZE = 8192
_Manager = TypeVar("_Manager", bound=urllib3.PoolManager)


class LeanIXHTTP:
    """Pooled, thread-safe HTTP(S) for LeanIX hosts."""

    def __init__(self, pool_size: int, environ: Mapping[str, str]) -> None:
        bundle = environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE")
        self._settings: dict[str, Any] = {
            "num_pools": 4,
            "maxsize": pool_size,
            "block": False,
            "retries": False,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": bundle or certifi.where(),
        }
        self._direct = self._watched(urllib3.PoolManager(**self._settings))
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._proxies = ProxyCache(environ)
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        timeout: float,
        body: str | bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request; the answer's status and headers are read, its body is not (see
        `read_capped`; `done` hands the connection back). Raises urllib3's errors."""
        return self._manager(url).request(
            method,
            url,
            body=body,
            headers={**headers, "User-Agent": USER_AGENT},
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=False,  # a token never follows a redirect
            retries=False,
            preload_content=False,
        )

    def close(self) -> None:
        self._direct.clear()
        with self._lock:
            for manager in self._proxied.values():
                manager.clear()

    def _manager(self, url: str) -> urllib3.PoolManager:
        proxies = self._proxies.get(url)
        proxy = proxies.get(urlsplit(url).scheme) or proxies.get("all")
        if proxy is None:
            return self._direct
        with self._lock:
            if proxy not in self._proxied:
                self._proxied[proxy] = self._watched(urllib3.ProxyManager(proxy, **self._settings))
            return self._proxied[proxy]

    @staticmethod
    def _watched(manager: _Manager) -> _Manager:
        watch_pools(manager)
        return manager


class ProxyCache:
    """The environment's proxies per scheme and host, resolved once per pair."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._proxies: dict[str, dict[str, str]] = {}

    def get(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.hostname}"
        if key not in self._proxies:
            self._proxies[key] = environ_proxies(url, self._environ)
        return self._proxies[key]


class BodyTooLarge(Exception):
    """The answer's body is larger than the caller accepts."""


class BodyTooSlow(Exception):
    """The deadline passed while the body was read."""


class BodyCutOff(Exception):
    """The connection ended in the middle of the body; the message names the transport error."""


def read_capped(response: urllib3.BaseHTTPResponse, limit: int, deadline: Deadline) -> bytes:
    """At most `limit` bytes of the (decoded) body, read before the deadline (the watchdog cuts
    the connection then, which ends a blocked read at once). Raises `BodyTooLarge`,
    `BodyTooSlow` or `BodyCutOff`, which the caller turns into its own errors."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.read1(_READ_SIZE, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            if deadline.expired:
                raise BodyTooSlow
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise BodyCutOff(type(exc).__name__) from None
    return b"".join(chunks)


def done(response: urllib3.BaseHTTPResponse, read_to_the_end: bool) -> None:
    """Hand the connection back to its pool if its body was read to the end; otherwise close
    it (what is left unread would be taken for the next answer)."""
    if not read_to_the_end:
        response.close()
    response.release_conn()
