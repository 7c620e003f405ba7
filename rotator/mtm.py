"""The LeanIX MTM adapter: technical users, read and listed, and their API tokens replaced. The
only module that talks to MTM (`https://{host}/services/mtm/v1`, SPEC "API-token lifecycle").

Every request carries the admin source's access token as `Authorization: Bearer` and follows the
IdP adapter's transport rules (`leanixhttp.py`): an allowlisted host, https unless
allowed plain, no redirects, a connect and read timeout and one overall deadline, a bounded
answer, no cookies. An answer's body is never quoted in an error or log line: the one of
`replaceToken` holds the new API token, which is registered with the redactor before anything
else happens to it.

Errors (`errors.py`): `MtmRefused` (401, 403, another 4xx, a redirect, a 404 of the listing:
nothing changed), `TechnicalUserMissing` (404 for a URL naming a user), `MtmUnavailable` (5xx,
timeouts, a connection lost, an answer that is not what MTM sends: it may or may not have acted).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3.exceptions

from rotator.deadlines import WATCHDOG, Deadline, Watchdog
from rotator.errors import HostNotAllowed, MtmRefused, MtmUnavailable, TechnicalUserMissing
from rotator.exchange import DEADLINE_FACTOR
from rotator.leanixhttp import (
    BodyCutOff,
    BodyTooLarge,
    BodyTooSlow,
    LeanIXHTTP,
    done,
    read_capped,
)
from rotator.redact import SECRETS
from rotator.sources import check_destination
from rotator.tokens import parse_time

logger = logging.getLogger(__name__)

PAGE_SIZE = 100  # MTM's maximum
MAX_PAGES = 1000  # 100,000 technical users in one workspace: far past any real one
MAX_BODY_BYTES = 4 * 1024 * 1024  # a page of 100 users is some 50 KiB
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TechnicalUser:
    """A technical user as MTM describes it. `api_token` only in a `replace_token` answer."""

    id: str
    user_name: str
    role: str | None
    workspace_id: str | None
    expires_at: datetime | None
    api_token: str | None = field(default=None, repr=False)


class MtmClient:
    """Technical users at MTM over one pooled transport (`leanixhttp.py`)."""

    def __init__(
        self,
        allowed_hosts: tuple[str, ...],
        insecure_http_hosts: tuple[str, ...],
        timeout: float,
        pool_size: int = 4,
        environ: Mapping[str, str] = os.environ,
        watchdog: Watchdog = WATCHDOG,
    ) -> None:
        self._allowed = allowed_hosts
        self._insecure = insecure_http_hosts
        self._timeout = timeout
        self.deadline_seconds = DEADLINE_FACTOR * timeout
        self._watchdog = watchdog
        self._http = LeanIXHTTP(pool_size, environ)

    def close(self) -> None:
        self._http.close()

    def technical_user(self, base: str, bearer: str, user_id: str, *, name: str) -> TechnicalUser:
        """`GET {base}/technicalusers/{user_id}`. `name` is the source it is for (messages)."""
        document = self._call("GET", f"{base}/technicalusers/{user_id}", bearer, name)
        return _user(_data(document, dict, name), name)

    def technical_users(self, base: str, bearer: str, *, name: str) -> list[TechnicalUser]:
        """Every technical user of the bearer's workspace: `GET {base}/technicalusers`, page by
        page (`page` from 1, `size` 100) until `total` are read or a page comes back short."""
        users: list[TechnicalUser] = []
        for page in range(1, MAX_PAGES + 1):
            url = f"{base}/technicalusers?page={page}&size={PAGE_SIZE}"
            document = self._call("GET", url, bearer, name)
            items = _data(document, list, name)
            users += [_user(item, name) for item in items]
            total = document.get("total")
            if not isinstance(total, int) or isinstance(total, bool):
                total = None
            if len(items) < PAGE_SIZE or (total is not None and len(users) >= total):
                return users
        raise MtmUnavailable(f"MTM listed more than {MAX_PAGES} pages of technical users")

    def replace_token(self, base: str, bearer: str, user_id: str, *, name: str) -> TechnicalUser:
        """`PUT {base}/technicalusers/{user_id}/replaceToken` (no body): the user with its new
        API token (registered as a secret at once) and that token's expiry. The old token stops
        working at once (LEANIX.md: assumed)."""
        url = f"{base}/technicalusers/{user_id}/replaceToken"
        document = self._call("PUT", url, bearer, name)
        data = _data(document, dict, name)
        token_data = data.get("apiTokenData")
        token = token_data.get("token") if isinstance(token_data, dict) else None
        if isinstance(token, str):
            token = token.strip()
            SECRETS.register(token)
        if (
            not isinstance(token, str)
            or not token
            or not token.isascii()
            or not token.isprintable()
        ):
            raise MtmUnavailable(f"MTM's replaceToken answer for {name!r} holds no new API token")
        if " " in token or len(token) > 8192:
            raise MtmUnavailable(f"MTM's replaceToken answer for {name!r} holds no usable token")
        user = _user(data, name)
        return TechnicalUser(
            user.id, user.user_name, user.role, user.workspace_id, user.expires_at, token
        )

    # --- plumbing -----------------------------------------------------------------------------

    def _call(self, method: str, url: str, bearer: str, name: str) -> dict[str, Any]:
        """One request under the overall deadline; the answer's JSON document."""
        try:
            check_destination(url.split("?", 1)[0], self._allowed, self._insecure)
        except HostNotAllowed as exc:  # the source's token URL passed it already: a bug
            raise MtmRefused(f"MTM for {name!r}: {exc}", 0) from None
        route = url.split("?", 1)[0].rsplit("/technicalusers", 1)[-1] or "/"
        what = f"MTM {method} technicalusers{route if route != '/' else ''} for {name!r}"
        with self._watchdog.deadline(self.deadline_seconds) as deadline:
            try:
                return self._request(method, url, bearer, what, deadline, route != "/")
            except MtmUnavailable:
                if deadline.expired:
                    raise MtmUnavailable(
                        f"{what}: no answer within the deadline ({self.deadline_seconds:g} s)"
                    ) from None
                raise

    def _request(
        self, method: str, url: str, bearer: str, what: str, deadline: Deadline, of_user: bool
    ) -> dict[str, Any]:
        """`of_user`: the URL names a technical user, so a 404 means MTM does not know it (for
        the listing, a 404 says only that MTM is not there: a refusal)."""
        headers = {
            "Authorization": f"Bearer {bearer}",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        try:
            response = self._http.request(method, url, headers, self._timeout)
        except urllib3.exceptions.NewConnectionError:  # before TimeoutError: a subclass
            raise MtmUnavailable(f"{what}: cannot reach MTM (cannot connect)") from None
        except urllib3.exceptions.TimeoutError:
            raise MtmUnavailable(f"{what}: no answer in time") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise MtmUnavailable(f"{what}: cannot reach MTM ({type(exc).__name__})") from None
        complete = False
        try:
            if deadline.expired:
                raise MtmUnavailable(f"{what}: cut off")
            status = response.status
            if status == 404 and of_user:
                raise TechnicalUserMissing(f"{what}: MTM does not know the technical user")
            if status in (401, 403):
                raise MtmRefused(f"{what}: MTM refused the admin's access token ({status})", status)
            if 300 <= status < 500 and status != 429:
                raise MtmRefused(f"{what}: MTM answered {status}", status)
            if status != 200:
                raise MtmUnavailable(f"{what}: MTM answered {status}")
            try:
                body = read_capped(response, MAX_BODY_BYTES, deadline)
            except BodyTooLarge:
                raise MtmUnavailable(f"{what}: the answer exceeds {MAX_BODY_BYTES} bytes") from None
            except (BodyTooSlow, BodyCutOff):
                raise MtmUnavailable(f"{what}: the answer was cut off") from None
            complete = True
        finally:
            done(response, complete)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise MtmUnavailable(f"{what}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise MtmUnavailable(f"{what}: the answer is not a JSON object")
        return document


def _data(document: dict[str, Any], kind: type, name: str) -> Any:
    data = document.get("data")
    if not isinstance(data, kind):
        raise MtmUnavailable(f"MTM's answer for {name!r} has no {kind.__name__} of data")
    return data


def _user(item: Any, name: str) -> TechnicalUser:
    """A TechnicalUserData object; raises MtmUnavailable when it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise MtmUnavailable(f"MTM's answer for {name!r} holds a technical user without an id")
    token_data = item.get("apiTokenData")
    expiry = token_data.get("expiry") if isinstance(token_data, dict) else None
    return TechnicalUser(
        id=item["id"],
        user_name=_text(item.get("userName")) or "",
        role=_text(item.get("permissionRole")),
        workspace_id=_text(item.get("workspaceId")),
        expires_at=parse_expiry(expiry),
    )


def parse_expiry(value: Any) -> datetime | None:
    """An `apiTokenData.expiry` as MTM sends it: ISO 8601, or epoch milliseconds (the wire format
    is undocumented). None when absent, unreadable or outside the times `tokens.parse_time`
    accepts."""
    try:
        if isinstance(value, str):
            text = value.strip()
            # ASCII digits only: str.isdigit() also accepts '²' (which int() refuses) and other
            # scripts' digits (which it takes). int() refuses over 4300 digits: caught below.
            if not (text.isascii() and text.isdigit()):
                return parse_time(text)
            value = int(text)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # timedelta, not a float division: exact to the millisecond across the window
            return parse_time((_EPOCH + timedelta(milliseconds=value)).isoformat())
    except (OverflowError, ValueError):
        pass
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
