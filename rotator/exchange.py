"""The IdP adapter: the only module that sends API tokens anywhere.

`TokenExchanger.exchange(source)` performs the OAuth2 client-credentials grant exactly as LeanIX
documents it: `POST {token_url}`, HTTP Basic `client_id:api_token` (client_id defaults to
`apitoken`), form body `grant_type=client_credentials` (plus `scope` when the source has one).

Guarantees, each enforced here and nowhere else:
- the destination passes `sources.check_destination` right before the request (allowlisted host,
  https unless the host is allowlisted for plain http, no userinfo);
- redirects are never followed (3xx is `RedirectRefused`);
- every request has a connect and read timeout, and the whole exchange (connecting, TLS, the
  status line, the headers and the body) one overall deadline of `DEADLINE_FACTOR` times the
  timeout (`deadlines.py` cuts the connection when it passes), shorter than a claim's lease
  (3 x timeout + 15 s), so no other instance takes the token over while this exchange may still
  succeed;
- the answer is asked for uncompressed (`Accept-Encoding: identity`), and the body is read up
  to `MAX_BODY_BYTES` (decoded, should a server compress anyway) and never quoted in an error
  or log line;
- no cookie is ever stored or sent: one tenant's answer cannot follow another tenant's request;
- transport errors become rotator's own (`errors.py`), classified for retrying.

The transport (pools, proxies, trust, the capped body read) is `leanixhttp.py`, shared with MTM.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

import urllib3
import urllib3.exceptions

from rotator.deadlines import WATCHDOG, Deadline, Watchdog
from rotator.errors import (
    ApiTokenRejected,
    IdPUnavailable,
    InvalidResponse,
    RateLimited,
    RedirectRefused,
    RequestRefused,
)
from rotator.leanixhttp import (
    BodyCutOff,
    BodyTooLarge,
    BodyTooSlow,
    LeanIXHTTP,
    done,
    read_capped,
)
from rotator.sources import Source, check_destination
from rotator.tokens import AccessToken, parse_token_response

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
DEADLINE_FACTOR = 2.0  # the whole exchange, against `timeout` for each connect and read
_OAUTH_ERROR_CODE = re.compile(r'"error"\s*:\s*"([a-z_]{1,40})"')


class TokenExchanger:
    """Exchanges API tokens for access tokens over one pooled transport (`leanixhttp.py`)."""

    def __init__(
        self,
        allowed_hosts: tuple[str, ...],
        insecure_http_hosts: tuple[str, ...],
        timeout: float,
        pool_size: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        environ: Mapping[str, str] = os.environ,
        watchdog: Watchdog = WATCHDOG,
    ) -> None:
        """`environ`: proxies and the CA bundle (`leanixhttp.LeanIXHTTP`)."""
        self._allowed = allowed_hosts
        self._insecure = insecure_http_hosts
        self._timeout = timeout
        self.deadline_seconds = DEADLINE_FACTOR * timeout
        self._clock = clock
        self._watchdog = watchdog
        self._http = LeanIXHTTP(pool_size, environ)

    def close(self) -> None:
        self._http.close()

    def exchange(self, source: Source) -> AccessToken:
        """Exchange `source.api_token` at `source.token_url`; returns the validated access token.

        Raises `HostNotAllowed`, `RedirectRefused`, `ApiTokenRejected` (401/403), `RequestRefused`
        (other 4xx), `RateLimited` (429), `IdPUnavailable` (5xx, timeout, connection) or
        `InvalidResponse` (a 200 that is not a usable token).
        """
        check_destination(source.token_url, self._allowed, self._insecure)
        with self._watchdog.deadline(self.deadline_seconds) as deadline:
            try:
                return self._exchange(source, deadline)
            except (IdPUnavailable, InvalidResponse):
                # The watchdog cut the connection: whatever broke, the IdP was too slow.
                if deadline.expired:
                    raise IdPUnavailable(
                        f"token endpoint for {source.name!r} did not answer within the deadline"
                        f" ({self.deadline_seconds:g} s)"
                    ) from None
                raise

    def _exchange(self, source: Source, deadline: Deadline) -> AccessToken:
        form = {"grant_type": "client_credentials"}
        if source.scope:
            form["scope"] = source.scope
        credentials = f"{source.client_id}:{source.api_token}".encode("latin-1")
        headers = {
            "Authorization": f"Basic {base64.b64encode(credentials).decode()}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        try:
            response = self._http.request(
                "POST", source.token_url, headers, self._timeout, body=urlencode(form)
            )
        except urllib3.exceptions.SSLError:
            raise IdPUnavailable(
                f"TLS with the token endpoint for {source.name!r} failed"
            ) from None
        except urllib3.exceptions.NewConnectionError:  # before TimeoutError: a subclass
            raise IdPUnavailable(
                f"cannot reach the token endpoint for {source.name!r} (cannot connect)"
            ) from None
        except urllib3.exceptions.TimeoutError:
            raise IdPUnavailable(
                f"token endpoint for {source.name!r} did not answer in time"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise IdPUnavailable(
                f"cannot reach the token endpoint for {source.name!r} ({type(exc).__name__})"
            ) from None
        complete = False
        try:
            if deadline.expired:
                # Cut mid-headers, http.client takes the end of the stream for the end of the
                # headers: the status line alone is no answer.
                raise IdPUnavailable(f"token endpoint for {source.name!r} was cut off")
            # Whole seconds, as the output secret stores it: the token rotator holds in memory
            # and the one it reads back from Vault must schedule identically.
            issued_at = self._clock().replace(microsecond=0)
            status = response.status
            what = f"token endpoint answered {status} for {source.name!r}"
            if 300 <= status < 400:
                raise RedirectRefused(f"{what}: a redirect, which a token never follows")
            if status in (401, 403):
                raise ApiTokenRejected(f"{what}: the API token is invalid or revoked", status)
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), issued_at)
                raise RateLimited(f"{what}: rate limited", retry_after)
            if status >= 500 or status == 408:
                raise IdPUnavailable(what)
            body = self._read_body(response, deadline, source.name)
            complete = True
            if deadline.expired:  # cut just as the body ended: it may be incomplete
                raise IdPUnavailable(f"token endpoint answer for {source.name!r} was cut off")
            if status != 200:
                raise RequestRefused(f"{what}{_oauth_error(body)}", status)
        finally:
            done(response, complete)
        return parse_token_response(
            body,
            issued_at=issued_at,
            source_version=source.version,
            require_jwt=source.issues_jwts,
        )

    def _read_body(
        self, response: urllib3.BaseHTTPResponse, deadline: Deadline, name: str
    ) -> bytes:
        what = f"token endpoint answer for {name!r}"
        try:
            return read_capped(response, MAX_BODY_BYTES, deadline)
        except BodyTooLarge:
            raise InvalidResponse(f"{what} exceeds {MAX_BODY_BYTES} bytes") from None
        except BodyTooSlow:
            raise IdPUnavailable(f"{what} took too long") from None
        except BodyCutOff as exc:
            raise IdPUnavailable(f"{what} was cut off ({exc})") from None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent
    or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    # ASCII only: str.isdigit() also accepts e.g. '²', and float('²') raises ValueError.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _oauth_error(body: bytes) -> str:
    """The OAuth2 `error` code of a refusal (e.g. `invalid_scope`), never any other body text."""
    match = _OAUTH_ERROR_CODE.search(body[:4096].decode("utf-8", "replace"))
    return f" ({match.group(1)})" if match else ""
