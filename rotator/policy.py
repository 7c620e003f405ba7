"""When to refresh and when to retry. Pure: every function takes `now` (and any randomness) as
arguments, reads no clock, no network, no file, and is unit-tested without patching.

Refresh timing. A token issued at `issued_at` with lifetime L is refreshed at
`issued_at + refresh_fraction * L - offset`, where `offset` lies in `[0, spread]` and
`spread = min(SPREAD_SHARE * L, refresh_fraction * L / 4)`. Nine tenths of the offset is a
deterministic phase derived from the token's name (so a fleet of tokens issued together does not
refresh together, and the schedule survives restarts); one tenth is random jitter. The offset only
ever moves a refresh *earlier*, so a consumer always reads a token with at least
`1 - refresh_fraction` of its lifetime left, and a refresh never lands past expiry.

Retry timing. A failing token waits `backoff_delay` before the next attempt: exponential, with
"equal jitter" (half fixed, half random) so it is never zero, capped by `max_backoff`, starting
slower for a rejected API token (401/403) than for transient errors, and never shorter than the
IdP's `Retry-After`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.outcome import Failure, FailureKind, Reason
from rotator.tokens import AccessToken

SPREAD_SHARE = 0.05
MIN_RETRY_SECONDS = 1.0

# First retry delay, in seconds, by failure kind; doubles per consecutive failure up to the cap.
BACKOFF_BASE: dict[FailureKind, float] = {
    FailureKind.TRANSIENT: 5.0,
    FailureKind.VAULT_WRITE: 5.0,
    FailureKind.RATE_LIMITED: 15.0,
    FailureKind.REJECTED: 60.0,
    FailureKind.REFUSED: 60.0,
    FailureKind.INVALID_SOURCE: 60.0,
}


class Action(StrEnum):
    REFRESH = "refresh"
    WAIT = "wait"


class VaultTokenAction(StrEnum):
    """What rotator's own Vault token needs (`vault_token_action`)."""

    NONE = "none"
    RENEW = "renew"
    LOGIN = "login"


@dataclass(frozen=True)
class Decision:
    action: Action
    at: datetime  # when to act (REFRESH: now; WAIT: the next time to look)
    reason: Reason  # MISSING, UNREADABLE, SOURCE_CHANGED, DUE, EXPIRED, FRESH or BACKOFF


def phase(name: str) -> float:
    """A stable number in [0, 1) derived from a token's name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def refresh_at(token: AccessToken, name: str, refresh_fraction: float, jitter: float) -> datetime:
    """When `token` should be replaced. `jitter` is a random number in [0, 1)."""
    return refresh_time(token.issued_at, token.expires_at, name, refresh_fraction, jitter)


def deferred(wanted: datetime, expires_at: datetime, defer: timedelta) -> datetime:
    """A refresh planned for `wanted`, put off by `defer` but by no more than half the time
    then left before `expires_at`."""
    return wanted + min(defer, (expires_at - wanted) / 2)


def refresh_time(
    issued_at: datetime, expires_at: datetime, name: str, refresh_fraction: float, jitter: float
) -> datetime:
    """When a token issued at `issued_at` and expiring at `expires_at` should be replaced."""
    lifetime = (expires_at - issued_at).total_seconds()
    spread = min(SPREAD_SHARE * lifetime, refresh_fraction * lifetime / 4)
    offset = spread * (0.9 * phase(name) + 0.1 * jitter)
    return issued_at + timedelta(seconds=refresh_fraction * lifetime - offset)


def backoff_delay(
    kind: FailureKind,
    failures: int,
    max_backoff: float,
    jitter: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the `failures`-th consecutive failure of `kind`.

    `jitter` is a random number in [0, 1). The result lies in [ceiling / 2, ceiling], where
    ceiling = min(max_backoff, base * 2 ** (failures - 1)), and is never below `retry_after`
    (itself capped at max_backoff, so a hostile Retry-After cannot park a token for a year).
    """
    base = BACKOFF_BASE[kind]
    ceiling = min(max_backoff, base * 2.0 ** min(failures - 1, 32))
    delay = ceiling / 2 + jitter * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_backoff))
    return max(delay, MIN_RETRY_SECONDS)


def next_failure(
    previous: Failure | None,
    kind: FailureKind,
    now: datetime,
    max_backoff: float,
    jitter: float,
    retry_after: float | None = None,
    source_version: int | None = None,
) -> Failure:
    """The failure record after one more failed attempt."""
    count = previous.count + 1 if previous is not None and previous.kind == kind else 1
    delay = backoff_delay(kind, count, max_backoff, jitter, retry_after)
    return Failure(kind, count, now + timedelta(seconds=delay), source_version)


def decide(
    now: datetime,
    name: str,
    output: AccessToken | None,
    output_readable: bool,
    source_version: int | None,
    failure: Failure | None,
    refresh_fraction: float,
    jitter: float,
    defer: timedelta = timedelta(0),
) -> Decision:
    """Refresh now, or wait until `Decision.at`.

    `output` is the access token currently in Vault (None if there is none or it is unreadable,
    which `output_readable` tells apart); `source_version` is the KV version of the source secret,
    None if unknown. A pending `failure` holds every refresh back until its `retry_at`, unless
    the source secret changed since (an operator replaced the API token: try the new one now).
    `defer` puts a routine refresh off (another instance is preferred for it, `peers.py`), by
    at most half the time then left before the token expires.
    """
    if (
        failure is not None
        and failure.source_version is not None
        and source_version is not None
        and failure.source_version != source_version
    ):
        failure = None
    if output is None:
        wanted, reason = now, Reason.MISSING if output_readable else Reason.UNREADABLE
    elif output.expires_at <= now:
        wanted, reason = now, Reason.EXPIRED
    elif source_version is not None and source_version != output.source_version:
        wanted, reason = now, Reason.SOURCE_CHANGED
    else:
        wanted = deferred(
            refresh_at(output, name, refresh_fraction, jitter), output.expires_at, defer
        )
        reason = Reason.DUE if wanted <= now else Reason.FRESH

    if failure is not None and failure.retry_at > now and reason is not Reason.FRESH:
        return Decision(Action.WAIT, failure.retry_at, Reason.BACKOFF)
    if reason is Reason.FRESH:
        return Decision(Action.WAIT, wanted, reason)
    return Decision(Action.REFRESH, now, reason)


ISSUANCE_WINDOW = timedelta(hours=1)


def issuances_in_window(history: Iterable[datetime], now: datetime) -> int:
    """How many of `history`'s issuance times lie in the last hour."""
    return sum(1 for moment in history if moment > now - ISSUANCE_WINDOW)


def issuance_allowed_at(
    history: Iterable[datetime], now: datetime, max_per_hour: int
) -> datetime | None:
    """None while fewer than `max_per_hour` issuances happened in the last hour; otherwise the
    moment the oldest of them leaves the window and the next issuance is allowed again.

    `history` holds issuance times (any order; older ones are ignored).
    """
    recent = sorted(moment for moment in history if moment > now - ISSUANCE_WINDOW)
    if len(recent) < max_per_hour:
        return None
    return recent[-max_per_hour] + ISSUANCE_WINDOW


def vault_token_action(ttl: float, creation_ttl: float, renewable: bool) -> VaultTokenAction:
    """What rotator's own Vault token needs now.

    Renew once two thirds of the token's TTL have passed; a token that cannot be renewed is
    replaced by logging in again. A token without a TTL (`creation_ttl` 0) needs nothing.
    """
    if creation_ttl <= 0 or ttl > creation_ttl / 3:
        return VaultTokenAction.NONE
    return VaultTokenAction.RENEW if renewable else VaultTokenAction.LOGIN


def renewal_fell_short(new_ttl: float, creation_ttl: float) -> bool:
    """True when a renewal left the token with no more than a third of its TTL: it reached its
    max TTL, and only a new login helps."""
    return new_ttl <= creation_ttl / 3


def vault_token_check_delay(creation_ttl: float) -> float:
    """Seconds between looks at rotator's own token: six per TTL, within [1, 60]."""
    if creation_ttl <= 0:
        return 60.0
    return min(60.0, max(1.0, creation_ttl / 6))
