"""Access tokens: parsing the IdP's answer, decoding JWT claims, the output secret's fields. Pure.

The JWT is decoded for information only (expiry, workspace, role): LeanIX publishes no key to
verify it and rotator is not its audience. Nothing is ever routed by a claim such as `instanceUrl`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.errors import InvalidResponse
from rotator.redact import fingerprint

MAX_TOKEN_LENGTH = 16384


@dataclass(frozen=True)
class Principal:
    """Who a LeanIX access token speaks for; compared across rotations."""

    workspace_id: str | None = None
    workspace_name: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class AccessToken:
    """An access token as stored in the output secret. `access_token` is a secret."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    issued_at: datetime
    expires_at: datetime
    source_version: int
    principal: Principal = Principal()

    def fields(self) -> dict[str, Any]:
        """The output secret's data, exactly as SPEC lists it."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "issued_at": format_time(self.issued_at),
            "expires_at": format_time(self.expires_at),
            "source_version": self.source_version,
        }

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.issued_at

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.access_token)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a `Z`, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Every time read from outside (Vault, the IdP) must lie in here: far enough from datetime's
# limits (years 1 and 9999) that no lifetime, backoff or warning step rotator adds or subtracts
# can overflow, and no sane token, claim or expiry lies outside it.
TIME_WINDOW = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC))


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time into UTC.

    Raises ValueError (never quoting `text`) when it is not an ISO 8601 time, has no time zone,
    or lies outside `TIME_WINDOW` once converted to UTC (e.g. `0001-01-01T00:00:00+14:00`).
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # the offset pushed it past year 1 or 9999
        raise ValueError("lies outside 1970-01-01..9000-01-01 UTC") from None
    if not TIME_WINDOW[0] <= moment < TIME_WINDOW[1]:
        raise ValueError("lies outside 1970-01-01..9000-01-01 UTC")
    return moment


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """Decode a compact JWS's payload without verifying it. Raises ValueError if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise ValueError("not three dot-separated parts")
    header = _b64json(parts[0])
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise ValueError("header has no 'alg'")
    claims = _b64json(parts[1])
    if not isinstance(claims, dict):
        raise ValueError("payload is not a JSON object")
    return claims


def _b64json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ValueError("segment is not base64url JSON") from exc


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """The workspace and role a LeanIX JWT names; missing parts stay None."""
    principal = claims.get("principal")
    if not isinstance(principal, dict):
        return Principal()
    permission = principal.get("permission")
    permission = permission if isinstance(permission, dict) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return Principal(
        workspace_id=text(permission.get("workspaceId")),
        workspace_name=text(permission.get("workspaceName")),
        role=text(principal.get("role")),
    )


def parse_token_response(
    body: bytes, *, issued_at: datetime, source_version: int, require_jwt: bool
) -> AccessToken:
    """Turn a 200 answer from the token endpoint into an `AccessToken`.

    Raises `InvalidResponse` (never quoting the body) when it is not JSON, `expired` is true,
    `access_token` is missing, empty or malformed, `expires_in` is not a positive integer, or the
    token is a JWT that has already expired. `expires_at` is `issued_at + expires_in`, or the JWT's
    `exp` when that is earlier.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidResponse("token endpoint answered 200 with a body that is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidResponse("token endpoint answered 200 with JSON that is not an object")
    if document.get("expired") is True:
        raise InvalidResponse("token endpoint answered 'expired': true")

    token = document.get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise InvalidResponse("token endpoint answer has no access_token")
    # ASCII and printable leaves the space as the only whitespace possible.
    printable = token.isascii() and token.isprintable() and " " not in token
    if len(token) > MAX_TOKEN_LENGTH or not printable:
        raise InvalidResponse("access_token is not a printable token of sane length")

    expires_in = document.get("expires_in")
    if isinstance(expires_in, float) and expires_in.is_integer():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise InvalidResponse("expires_in is not a positive integer")
    expires_in = min(expires_in, 366 * 86400)

    token_type = document.get("token_type", "bearer")
    if (
        not isinstance(token_type, str)
        or not (token_type.isascii() and token_type.isalnum())
        or len(token_type) > 32
    ):
        raise InvalidResponse("token_type is not a short word")

    expires_at = issued_at + timedelta(seconds=expires_in)
    principal = Principal()
    try:
        claims = decode_jwt_claims(token)
    except ValueError:
        if require_jwt:
            raise InvalidResponse("access_token is not a JWT") from None
    else:
        principal = principal_of(claims)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
            jwt_expiry = datetime.fromtimestamp(min(max(exp, 0), 2**33), UTC)
            if jwt_expiry <= issued_at:
                raise InvalidResponse("access_token's JWT 'exp' is already past")
            expires_at = min(expires_at, jwt_expiry)
        elif require_jwt:
            raise InvalidResponse("access_token's JWT has no numeric 'exp'")

    return AccessToken(
        access_token=token,
        token_type=token_type,
        expires_in=expires_in,
        issued_at=issued_at,
        expires_at=expires_at,
        source_version=source_version,
        principal=principal,
    )


def parse_output(data: Mapping[str, Any]) -> AccessToken:
    """Read an output secret's fields back; raises ValueError naming the field that is off."""
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("access_token is missing or empty")
    for key in ("issued_at", "expires_at"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{key} is missing")
    expires_in = data.get("expires_in")
    source_version = data.get("source_version")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool):
        raise ValueError("expires_in is not an integer")
    if not isinstance(source_version, int) or isinstance(source_version, bool):
        raise ValueError("source_version is not an integer")
    try:
        claims = decode_jwt_claims(token)
    except ValueError:
        claims = {}
    return AccessToken(
        access_token=token,
        token_type=str(data.get("token_type", "bearer")),
        expires_in=expires_in,
        issued_at=parse_time(data["issued_at"]),
        expires_at=parse_time(data["expires_at"]),
        source_version=source_version,
        principal=principal_of(claims),
    )


# --- the issuance log ---------------------------------------------------------------------------
#
# Kept in the output secret's custom_metadata (key `issuances`) so that the issuance cap and the
# issuances-last-hour figure come with the output read rotator makes anyway. Counts per minute
# for the last hour: "<newest minute> <age>:<count> ...", ages in minutes before the newest
# (e.g. "29459874 0:1 48:1"). Minutes keep it within Vault's 512-byte limit for a value at any
# cap.
#
# Several rotators write it, and their clocks disagree by up to MAX_CLOCK_SKEW. So entries are
# kept relative to the time of the issuance being added, never relative to the newest entry: a
# writer whose clock runs ahead cannot push real issuances out. An entry further in the future
# than the skew allows (of the writer, or of the reader's `now`) is no issuance a rotator made:
# it is dropped, so forged or skewed garbage never outlives the hour. And each issuance is taken
# to happen at the end of its minute plus the skew, so that a reader whose clock runs ahead of
# the writer's still counts it for a whole hour: the cap errs strict by under two minutes.

ISSUANCE_LOG_KEY = "issuances"
ISSUANCE_LOGGED_KEY = "issuance_logged"  # the fingerprint of the token counted last
MAX_CLOCK_SKEW = timedelta(seconds=60)  # how far two rotators' clocks may disagree
_SKEW_MINUTES = 1  # MAX_CLOCK_SKEW in whole minutes: how far ahead an honest entry can be
_KEEP_MINUTES = 62  # an hour, the skew, and the minute in progress, before the issuance added
_MAX_AGE = _KEEP_MINUTES + _SKEW_MINUTES  # the oldest age a written log can hold
_MAX_PER_MINUTE = 3600  # alerts.max_issuances_per_hour's own maximum
_LOG_MAX_LENGTH = 500  # Vault refuses custom_metadata values over 512 bytes


def issuance_log_add(log: str | None, at: datetime) -> str:
    """`log` with one more issuance at `at`, the issuance's own time on this writer's clock.

    Entries more than `_KEEP_MINUTES` before `at`'s minute, or more than the clock skew after
    it, are dropped. An unreadable or missing `log` starts afresh.
    """
    minute = _minute(at)
    counts = {
        logged: count
        for logged, count in (_log_counts(log) or {}).items()
        if minute - _KEEP_MINUTES < logged <= minute + _SKEW_MINUTES
    }
    counts[minute] = min(counts.get(minute, 0) + 1, _MAX_PER_MINUTE)
    newest = max(counts)
    kept = sorted(counts.items(), reverse=True)
    while True:
        text = f"{newest} " + " ".join(f"{newest - m}:{c}" for m, c in kept)
        if len(text) <= _LOG_MAX_LENGTH or len(kept) == 1:
            return text
        kept.pop()  # only with absurd counts: forget the oldest minute rather than fail the write


def issuance_log_times(log: str | None, now: datetime) -> tuple[datetime, ...] | None:
    """The issuances `log` records as of `now` (the reader's clock), oldest first, each at the
    end of its minute plus MAX_CLOCK_SKEW. Entries further ahead of `now` than the skew allows
    are ignored.

    None when there is no log, it is unreadable, or nothing in it lies within the last hour (a
    log forged to look old is as good as none): the caller then counts another way.
    """
    counts = _log_counts(log)
    if counts is None:
        return None
    minute = _minute(now)
    counts = {
        logged: count
        for logged, count in counts.items()
        if minute - _KEEP_MINUTES < logged <= minute + _SKEW_MINUTES
    }
    if not counts:
        return None
    times: list[datetime] = []
    for minute in sorted(counts):
        at = datetime.fromtimestamp((minute + 1) * 60, UTC) + MAX_CLOCK_SKEW
        times += [at] * counts[minute]
    return tuple(times)


def _minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def _log_counts(log: str | None) -> dict[int, int] | None:
    if not log or len(log) > _LOG_MAX_LENGTH:
        return None
    newest, *pairs = log.split()
    try:
        base = int(newest)
        counts: dict[int, int] = {}
        for pair in pairs:
            age, count = pair.split(":")
            if not 0 <= int(age) <= _MAX_AGE or not 0 < int(count) <= _MAX_PER_MINUTE:
                return None
            counts[base - int(age)] = counts.get(base - int(age), 0) + int(count)
    except ValueError:
        return None
    if not 0 < base < 2**33 // 60 or not pairs or max(counts.values()) > _MAX_PER_MINUTE:
        return None
    return counts
