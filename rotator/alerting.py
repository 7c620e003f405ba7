"""The alert lifecycle, pure: fire once when a condition starts, repeat every
`repeat_interval` while it lasts, resolve once when it ends.

`AlertBook` is keyed by (kind, token); `token` is None for global alerts (`vault_unavailable`).
Callers report what they observed (`observe(..., active=True/False, now=...)`) and get back the
events to send; `due_repeats(now)` yields the repeats of alerts nobody re-observed. No clock, no
I/O: `now` is an argument and the book is unit-tested without patching.

State is in memory. After a restart a condition that still holds fires once more (on-call hears
it is still there) and then repeats on the normal interval: never a burst.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.inventory import Inventory, Standing
from rotator.outcome import ApiTokenOutcome, FailureKind, Outcome, Reason, Replacement, State
from rotator.tokens import format_time


class Kind(StrEnum):
    API_TOKEN_REJECTED = "api_token_rejected"
    EXCHANGE_FAILED = "exchange_failed"
    ISSUANCE_RATE = "issuance_rate"
    FOREIGN_WRITE = "foreign_write"
    ACCESS_TOKEN_EXPIRING = "access_token_expiring"
    API_TOKEN_EXPIRING = "api_token_expiring"
    PRINCIPAL_CHANGED = "principal_changed"
    VAULT_UNAVAILABLE = "vault_unavailable"
    VAULT_WRITE_FAILED = "vault_write_failed"
    API_TOKEN_REPLACE_FAILED = "api_token_replace_failed"
    API_TOKEN_PROMOTED = "api_token_promoted"
    TECHNICAL_USER_MISSING = "technical_user_missing"
    UNMANAGED_TECHNICAL_USER = "unmanaged_technical_user"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


@dataclass(frozen=True)
class AlertEvent:
    """One notification: what every sink renders (SPEC, "Alerts")."""

    status: str  # "firing" | "resolved"
    kind: Kind
    token: str | None
    severity: Severity
    summary: str
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def key(self) -> tuple[Kind, str | None]:
        return (self.kind, self.token)


@dataclass(frozen=True)
class _Active:
    severity: Severity
    summary: str
    started_at: datetime
    last_sent_at: datetime
    stage: int = 0


class AlertBook:
    """The alerts currently firing. Thread-safe."""

    def __init__(self, repeat_interval: timedelta) -> None:
        self.repeat_interval = repeat_interval
        self._active: dict[tuple[Kind, str | None], _Active] = {}
        self._lock = threading.Lock()

    def observe(
        self,
        kind: Kind,
        token: str | None,
        *,
        active: bool,
        now: datetime,
        severity: Severity = Severity.WARNING,
        summary: str = "",
        stage: int = 0,
    ) -> AlertEvent | None:
        """Record whether the condition (kind, token) holds now; return the event to send, if any.

        Starting: a firing event. Holding: a repeat once `repeat_interval` passed since the last
        one, or at once when the severity rose or the condition reached a higher `stage` (an
        expiry 30, 14, 7, then 1 day away). Ending: a resolved event. Otherwise None.
        """
        key = (kind, token)
        with self._lock:
            current = self._active.get(key)
            if not active:
                if current is None:
                    return None
                del self._active[key]
                return AlertEvent(
                    "resolved",
                    kind,
                    token,
                    current.severity,
                    current.summary,
                    current.started_at,
                    ended_at=now,
                )
            if current is None:
                self._active[key] = _Active(severity, summary, now, now, stage)
                return AlertEvent("firing", kind, token, severity, summary, now)
            escalated = (
                severity is Severity.CRITICAL and current.severity is not Severity.CRITICAL
            ) or stage > current.stage
            if escalated or now - current.last_sent_at >= self.repeat_interval:
                self._active[key] = replace(
                    current, severity=severity, summary=summary, last_sent_at=now, stage=stage
                )
                return AlertEvent("firing", kind, token, severity, summary, current.started_at)
            self._active[key] = replace(current, summary=summary or current.summary)
            return None

    def apply(self, observations: list[Observation], now: datetime) -> list[AlertEvent]:
        """`observe` each observation; returns the events to send."""
        events = []
        for seen in observations:
            event = self.observe(
                seen.kind,
                seen.token,
                active=seen.active,
                now=now,
                severity=seen.severity,
                summary=seen.summary,
                stage=seen.stage,
            )
            if event is not None:
                events.append(event)
        return events

    def due_repeats(self, now: datetime) -> list[AlertEvent]:
        """Repeats for every firing alert whose last notification is `repeat_interval` old."""
        events = []
        with self._lock:
            for (kind, token), current in list(self._active.items()):
                if now - current.last_sent_at >= self.repeat_interval:
                    self._active[(kind, token)] = replace(current, last_sent_at=now)
                    events.append(
                        AlertEvent(
                            "firing",
                            kind,
                            token,
                            current.severity,
                            current.summary,
                            current.started_at,
                        )
                    )
        return events

    def resolve_token(self, token: str, now: datetime) -> list[AlertEvent]:
        """Resolve every alert of a token that is no longer managed (its source was removed)."""
        with self._lock:
            keys = [key for key in self._active if key[1] == token]
        return [
            event
            for kind, name in keys
            if (event := self.observe(kind, name, active=False, now=now)) is not None
        ]

    def firing_events(self) -> list[AlertEvent]:
        """A firing event for every active alert, as sinks that need a periodic re-post
        (Alertmanager) receive them."""
        with self._lock:
            return [
                AlertEvent("firing", kind, token, a.severity, a.summary, a.started_at)
                for (kind, token), a in self._active.items()
            ]

    def firing(self) -> dict[tuple[Kind, str | None], Severity]:
        """What fires right now, for metrics and status."""
        with self._lock:
            return {key: current.severity for key, current in self._active.items()}

    def is_firing(self, kind: Kind, token: str | None) -> bool:
        with self._lock:
            return (kind, token) in self._active


# --- detections: what an outcome says about each alert kind ---------------------------------------

EXCHANGE_FAILED_AFTER = 3  # consecutive failures; a single blip is not worth waking anybody
API_TOKEN_WARN_DAYS = (30, 14, 7, 1)


@dataclass(frozen=True)
class Observation:
    """Whether one alert condition holds, as `AlertBook.observe` takes it."""

    kind: Kind
    token: str | None
    active: bool
    severity: Severity = Severity.WARNING
    summary: str = ""
    stage: int = 0


def token_observations(outcome: Outcome, now: datetime) -> list[Observation]:
    """The alert conditions one rotation outcome settles. Kinds it says nothing about (a
    backoff wait says nothing new about issuance, say) are left out, so they keep their state."""
    name = outcome.name
    found: list[Observation] = []

    def say(
        kind: Kind, active: bool, severity: Severity = Severity.WARNING, text: str = ""
    ) -> None:
        found.append(Observation(kind, name, active, severity, text))

    if outcome.healthy:
        for kind in (Kind.API_TOKEN_REJECTED, Kind.EXCHANGE_FAILED, Kind.VAULT_WRITE_FAILED):
            say(kind, False)
        say(Kind.ISSUANCE_RATE, False)
    elif outcome.state is State.CAPPED and outcome.capped_until is not None:
        say(
            Kind.ISSUANCE_RATE,
            True,
            text=f"{name}: issuance cap reached; next exchange allowed at "
            f"{format_time(outcome.capped_until)}",
        )
    elif outcome.state is State.INVALID_SOURCE:
        say(Kind.EXCHANGE_FAILED, True, Severity.CRITICAL, outcome.error or "invalid source")
    elif outcome.reason is Reason.BACKOFF:
        pass  # a look between attempts says nothing new, nor which attempts (IdP or Vault) failed
    elif outcome.state is State.FAILING and outcome.error_kind is not None:
        kind_of_error = outcome.error_kind
        if kind_of_error is FailureKind.REJECTED:
            say(Kind.API_TOKEN_REJECTED, True, Severity.CRITICAL, outcome.error or "")
        elif kind_of_error is FailureKind.VAULT_WRITE:
            say(Kind.VAULT_WRITE_FAILED, True, Severity.CRITICAL, outcome.error or "")
        elif (
            outcome.reason not in (Reason.VAULT, Reason.VAULT_AUTH)
            and outcome.failures >= EXCHANGE_FAILED_AFTER
        ):
            text = f"{outcome.error} ({outcome.failures} attempts in a row)"
            say(Kind.EXCHANGE_FAILED, True, Severity.WARNING, text)

    if outcome.state is not State.GONE:
        text = f"{name}: the output secret was changed by someone else; rotator restored it"
        say(Kind.FOREIGN_WRITE, outcome.foreign_write, Severity.CRITICAL, text)

    if outcome.principal_change is not None:
        before, after = outcome.principal_change
        text = (
            f"{name}: the new access token speaks for workspace {after.workspace_name!r} "
            f"({after.workspace_id}) as {after.role}, the previous one for "
            f"{before.workspace_name!r} ({before.workspace_id}) as {before.role}"
        )
        say(Kind.PRINCIPAL_CHANGED, True, Severity.WARNING, text)
    elif outcome.state is State.REFRESHED:
        say(Kind.PRINCIPAL_CHANGED, False)
    return found


def expiry_observations(
    name: str,
    access_expires_at: datetime | None,
    lifetime: timedelta | None,
    refresh_fraction: float,
    api_token_expires_at: datetime | None,
    now: datetime,
) -> list[Observation]:
    """`access_token_expiring` and `api_token_expiring` for one token, from what is known of it.

    The access token is "expiring" once half of the margin left after the planned refresh is
    gone, i.e. the refresh is clearly late; critical once it has expired.
    """
    found = []
    if access_expires_at is not None and lifetime is not None:
        margin = lifetime * (1 - refresh_fraction) / 2
        left = access_expires_at - now
        severity = Severity.CRITICAL if left <= timedelta(0) else Severity.WARNING
        text = (
            f"{name}: the access token consumers read expired at {format_time(access_expires_at)}"
            if left <= timedelta(0)
            else f"{name}: the access token consumers read expires at "
            f"{format_time(access_expires_at)} and no fresh one was stored"
        )
        found.append(Observation(Kind.ACCESS_TOKEN_EXPIRING, name, left < margin, severity, text))
    if api_token_expires_at is not None:
        days_left = (api_token_expires_at - now).total_seconds() / 86400
        crossed = [limit for limit in API_TOKEN_WARN_DAYS if days_left <= limit]
        stage = len(crossed)
        severity = Severity.CRITICAL if days_left <= API_TOKEN_WARN_DAYS[-1] else Severity.WARNING
        text = (
            f"{name}: the API token expires at {format_time(api_token_expires_at)} "
            f"(in {max(days_left, 0):.1f} days); replace it in Vault"
        )
        found.append(Observation(Kind.API_TOKEN_EXPIRING, name, stage > 0, severity, text, stage))
    else:
        found.append(Observation(Kind.API_TOKEN_EXPIRING, name, False))
    return found


PROMOTED_RESOLVES_AFTER = timedelta(days=1)  # healthy that long after a promotion: resolved


def api_token_observations(outcome: ApiTokenOutcome) -> list[Observation]:
    """`api_token_replace_failed` and `api_token_promoted` from one lifecycle pass. A pass that
    did nothing says nothing about either (a failure stays firing until a replacement works)."""
    name = outcome.name
    if outcome.result is Replacement.FAILED:
        text = f"{name}: replacing the API token failed: {outcome.error or 'see the log'}"
        return [Observation(Kind.API_TOKEN_REPLACE_FAILED, name, True, Severity.CRITICAL, text)]
    if outcome.result is Replacement.REPLACED:
        return [Observation(Kind.API_TOKEN_REPLACE_FAILED, name, False)]
    if outcome.result is Replacement.PROMOTED:
        text = f"{name}: the API token was rejected; api_token_next took its place"
        return [Observation(Kind.API_TOKEN_PROMOTED, name, True, Severity.WARNING, text)]
    return []


def promotion_over(promoted_at: datetime | None, healthy: bool, now: datetime) -> bool:
    """Whether a promotion's alert resolves: the token has been healthy for a day since."""
    return promoted_at is not None and healthy and now - promoted_at >= PROMOTED_RESOLVES_AFTER


def inventory_observations(
    inventory: Inventory, unmanaged_before: Mapping[str, str]
) -> list[Observation]:
    """`technical_user_missing` per source and `unmanaged_technical_user` per technical user from
    one survey. `unmanaged_before` maps the users alerted before to the admin source that listed
    them: one absent now (managed since, or deleted) is resolved, unless that admin's workspace
    could not be listed this time."""
    found: list[Observation] = []
    unreachable = {workspace.admin for workspace in inventory.unreachable}
    for entry in inventory.entries:
        if entry.standing is Standing.UNMANAGED:
            text = (
                f"technical user {entry.user_name or entry.user_id!r} ({entry.role or 'no role'}) "
                f"in workspace {entry.workspace!r} has an API token no source in Vault holds: "
                "retire it if nobody uses it"
            )
            found.append(Observation(Kind.UNMANAGED_TECHNICAL_USER, entry.key, True, summary=text))
        elif entry.source is not None:
            missing = entry.standing is Standing.MISSING
            text = f"{entry.source}: MTM no longer knows the technical user of this API token"
            found.append(
                Observation(
                    Kind.TECHNICAL_USER_MISSING, entry.source, missing, Severity.CRITICAL, text
                )
            )
    still = {entry.key for entry in inventory.of(Standing.UNMANAGED)}
    for key, admin in sorted(unmanaged_before.items()):
        if key not in still and admin not in unreachable:
            found.append(Observation(Kind.UNMANAGED_TECHNICAL_USER, key, False))
    return found
