"""The alert lifecycle and what outcomes and expiries say about each alert: rotator.alerting,
pure, no clock patched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.alerting import (
    API_TOKEN_WARN_DAYS,
    EXCHANGE_FAILED_AFTER,
    AlertBook,
    Kind,
    Observation,
    Severity,
    expiry_observations,
    token_observations,
)
from rotator.outcome import FailureKind, Outcome, Reason, State
from rotator.tokens import AccessToken, Principal

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
REPEAT = timedelta(hours=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def book() -> AlertBook:
    return AlertBook(REPEAT)


def fire(alerts: AlertBook, now: datetime = T0, **kwargs: Any) -> Any:
    kwargs.setdefault("summary", "acme: broken")
    return alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=True, now=now, **kwargs)


# --- AlertBook ------------------------------------------------------------------------------------


def test_an_alert_fires_when_its_condition_starts() -> None:
    event = fire(book(), severity=Severity.CRITICAL)

    assert event is not None
    assert event.status == "firing"
    assert event.kind is Kind.EXCHANGE_FAILED
    assert event.token == "acme"
    assert event.severity is Severity.CRITICAL
    assert event.summary == "acme: broken"
    assert event.started_at == T0
    assert event.ended_at is None


def test_a_holding_condition_does_not_repeat_before_the_repeat_interval() -> None:
    alerts = book()
    fire(alerts)

    assert fire(alerts, T0 + timedelta(minutes=1)) is None
    assert fire(alerts, T0 + REPEAT - timedelta(seconds=1)) is None


def test_a_holding_condition_repeats_once_the_repeat_interval_passed() -> None:
    alerts = book()
    fire(alerts)

    event = fire(alerts, T0 + REPEAT)

    assert event is not None
    assert event.status == "firing"
    assert event.started_at == T0


def test_the_repeat_interval_counts_from_the_last_notification() -> None:
    alerts = book()
    fire(alerts)
    fire(alerts, T0 + REPEAT)

    assert fire(alerts, T0 + REPEAT + timedelta(minutes=30)) is None
    assert fire(alerts, T0 + 2 * REPEAT) is not None


def test_due_repeats_re_notifies_an_alert_nobody_re_observed() -> None:
    alerts = book()
    fire(alerts)

    assert alerts.due_repeats(T0 + REPEAT - timedelta(seconds=1)) == []
    repeats = alerts.due_repeats(T0 + REPEAT)

    assert [(e.status, e.kind, e.token, e.started_at) for e in repeats] == [
        ("firing", Kind.EXCHANGE_FAILED, "acme", T0)
    ]


def test_due_repeats_restarts_the_repeat_interval() -> None:
    alerts = book()
    fire(alerts)
    alerts.due_repeats(T0 + REPEAT)

    assert alerts.due_repeats(T0 + REPEAT + timedelta(minutes=1)) == []
    assert fire(alerts, T0 + REPEAT + timedelta(minutes=1)) is None


def test_an_ending_condition_resolves_once_with_ended_at() -> None:
    alerts = book()
    fire(alerts, severity=Severity.CRITICAL)
    ended = T0 + timedelta(minutes=5)

    event = alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=False, now=ended)
    again = alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=False, now=ended + HOUR)

    assert event is not None
    assert event.status == "resolved"
    assert event.started_at == T0
    assert event.ended_at == ended
    assert event.severity is Severity.CRITICAL
    assert event.summary == "acme: broken"
    assert again is None


def test_a_resolved_alert_is_no_longer_repeated() -> None:
    alerts = book()
    fire(alerts)
    alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=False, now=T0 + timedelta(minutes=5))

    assert alerts.due_repeats(T0 + 10 * REPEAT) == []


def test_an_inactive_condition_that_never_fired_yields_nothing() -> None:
    alerts = book()

    assert alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=False, now=T0) is None
    assert alerts.firing() == {}


def test_escalation_to_critical_re_fires_at_once() -> None:
    alerts = book()
    fire(alerts, severity=Severity.WARNING)

    event = fire(alerts, T0 + timedelta(minutes=1), severity=Severity.CRITICAL)

    assert event is not None
    assert event.severity is Severity.CRITICAL
    assert event.started_at == T0
    assert alerts.firing() == {(Kind.EXCHANGE_FAILED, "acme"): Severity.CRITICAL}


def test_staying_critical_does_not_re_fire_before_the_repeat_interval() -> None:
    alerts = book()
    fire(alerts, severity=Severity.CRITICAL)

    assert fire(alerts, T0 + timedelta(minutes=1), severity=Severity.CRITICAL) is None


def test_a_higher_stage_re_fires_at_once() -> None:
    alerts = book()
    fire(alerts, stage=1)

    event = fire(alerts, T0 + timedelta(minutes=1), stage=2)

    assert event is not None
    assert event.status == "firing"


def test_the_same_stage_does_not_re_fire() -> None:
    alerts = book()
    fire(alerts, stage=2)

    assert fire(alerts, T0 + timedelta(minutes=1), stage=2) is None


def test_resolve_token_resolves_every_alert_of_that_token_only() -> None:
    alerts = book()
    alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=True, now=T0)
    alerts.observe(Kind.FOREIGN_WRITE, "acme", active=True, now=T0)
    alerts.observe(Kind.EXCHANGE_FAILED, "other", active=True, now=T0)
    alerts.observe(Kind.VAULT_UNAVAILABLE, None, active=True, now=T0)

    events = alerts.resolve_token("acme", T0 + HOUR)

    assert sorted((e.status, e.kind, e.token) for e in events) == [
        ("resolved", Kind.EXCHANGE_FAILED, "acme"),
        ("resolved", Kind.FOREIGN_WRITE, "acme"),
    ]
    assert all(e.ended_at == T0 + HOUR for e in events)
    assert set(alerts.firing()) == {(Kind.EXCHANGE_FAILED, "other"), (Kind.VAULT_UNAVAILABLE, None)}


def test_firing_lists_what_fires_with_its_severity() -> None:
    alerts = book()
    alerts.observe(Kind.API_TOKEN_REJECTED, "acme", active=True, now=T0, severity=Severity.CRITICAL)
    alerts.observe(Kind.ISSUANCE_RATE, "other", active=True, now=T0)

    assert alerts.firing() == {
        (Kind.API_TOKEN_REJECTED, "acme"): Severity.CRITICAL,
        (Kind.ISSUANCE_RATE, "other"): Severity.WARNING,
    }
    assert alerts.is_firing(Kind.ISSUANCE_RATE, "other")
    assert not alerts.is_firing(Kind.ISSUANCE_RATE, "acme")


def test_firing_events_re_states_every_active_alert_without_touching_the_repeat_clock() -> None:
    alerts = book()
    alerts.observe(Kind.EXCHANGE_FAILED, "acme", active=True, now=T0, summary="down")
    alerts.observe(Kind.VAULT_UNAVAILABLE, None, active=True, now=T0, severity=Severity.CRITICAL)
    alerts.observe(Kind.FOREIGN_WRITE, "gone", active=True, now=T0)
    alerts.observe(Kind.FOREIGN_WRITE, "gone", active=False, now=T0 + HOUR / 2)

    events = alerts.firing_events()

    assert sorted((e.status, e.kind, e.token, e.started_at) for e in events) == [
        ("firing", Kind.EXCHANGE_FAILED, "acme", T0),
        ("firing", Kind.VAULT_UNAVAILABLE, None, T0),
    ]
    assert len(alerts.due_repeats(T0 + REPEAT)) == 2, "repeats still fall due"


def test_apply_returns_the_events_of_its_observations() -> None:
    alerts = book()
    alerts.observe(Kind.FOREIGN_WRITE, "acme", active=True, now=T0)

    events = alerts.apply(
        [
            Observation(Kind.EXCHANGE_FAILED, "acme", True, Severity.CRITICAL, "down"),
            Observation(Kind.FOREIGN_WRITE, "acme", False),
            Observation(Kind.ISSUANCE_RATE, "acme", False),
        ],
        T0 + timedelta(minutes=1),
    )

    assert [(e.status, e.kind) for e in events] == [
        ("firing", Kind.EXCHANGE_FAILED),
        ("resolved", Kind.FOREIGN_WRITE),
    ]


# --- token_observations ---------------------------------------------------------------------------


def access_token(issued_at: datetime = T0, lifetime: timedelta = HOUR) -> AccessToken:
    return AccessToken(
        access_token="header.claims.signature",
        token_type="bearer",
        expires_in=int(lifetime.total_seconds()),
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        source_version=1,
    )


def outcome(state: str, **fields: Any) -> Outcome:
    fields.setdefault("output", access_token() if state in ("fresh", "refreshed") else None)
    fields.setdefault("next_at", T0 + timedelta(minutes=48))
    return Outcome(name="acme", state=State(state), **fields)


def failing(error_kind: str, failures: int = 1, reason: str = "", error: str = "boom") -> Outcome:
    return outcome(
        "failing",
        error_kind=FailureKind(error_kind),
        failures=failures,
        reason=Reason(reason) if reason else None,
        error=error,
    )


def by_kind(observations: list[Observation]) -> dict[Kind, Observation]:
    kinds = [seen.kind for seen in observations]
    assert len(kinds) == len(set(kinds)), f"one observation per kind expected: {kinds}"
    return {seen.kind: seen for seen in observations}


def test_a_rejected_api_token_is_a_critical_api_token_rejected() -> None:
    seen = by_kind(token_observations(failing("rejected", error="acme: 401"), T0))

    rejected = seen[Kind.API_TOKEN_REJECTED]
    assert rejected.active
    assert rejected.severity is Severity.CRITICAL
    assert rejected.token == "acme"
    assert rejected.summary == "acme: 401"
    assert Kind.EXCHANGE_FAILED not in seen


@pytest.mark.parametrize("state", ["fresh", "refreshed"])
def test_a_working_token_resolves_its_failure_alerts(state: str) -> None:
    seen = by_kind(token_observations(outcome(state), T0))

    for kind in (
        Kind.API_TOKEN_REJECTED,
        Kind.EXCHANGE_FAILED,
        Kind.VAULT_WRITE_FAILED,
        Kind.ISSUANCE_RATE,
        Kind.FOREIGN_WRITE,
    ):
        assert seen[kind].active is False, kind


def test_transient_failures_below_the_threshold_do_not_fire_exchange_failed() -> None:
    seen = by_kind(token_observations(failing("transient", EXCHANGE_FAILED_AFTER - 1), T0))

    assert Kind.EXCHANGE_FAILED not in seen


@pytest.mark.parametrize("failures", [EXCHANGE_FAILED_AFTER, EXCHANGE_FAILED_AFTER + 5])
def test_transient_failures_at_or_after_the_threshold_fire_exchange_failed(failures: int) -> None:
    seen = by_kind(token_observations(failing("transient", failures, error="acme: 503"), T0))

    failed = seen[Kind.EXCHANGE_FAILED]
    assert failed.active
    assert failed.severity is Severity.WARNING
    assert failed.summary == f"acme: 503 ({failures} attempts in a row)"


def test_failures_for_the_reason_vault_never_fire_exchange_failed() -> None:
    seen = by_kind(token_observations(failing("transient", 50, reason="vault"), T0))

    assert Kind.EXCHANGE_FAILED not in seen


def test_a_token_that_could_not_be_stored_is_vault_write_failed() -> None:
    seen = by_kind(token_observations(failing("vault_write", error="acme: write failed"), T0))

    assert seen[Kind.VAULT_WRITE_FAILED].active
    assert seen[Kind.VAULT_WRITE_FAILED].severity is Severity.CRITICAL
    assert Kind.EXCHANGE_FAILED not in seen


def test_a_capped_token_is_issuance_rate_naming_when_the_next_exchange_is_allowed() -> None:
    until = T0 + timedelta(minutes=20)

    seen = by_kind(token_observations(outcome("capped", capped_until=until), T0))

    assert seen[Kind.ISSUANCE_RATE].active
    assert "2026-05-01T12:20:00Z" in seen[Kind.ISSUANCE_RATE].summary


def test_an_invalid_source_is_a_critical_exchange_failed() -> None:
    seen = by_kind(
        token_observations(outcome("invalid_source", error="acme: api_token missing"), T0)
    )

    assert seen[Kind.EXCHANGE_FAILED].active
    assert seen[Kind.EXCHANGE_FAILED].severity is Severity.CRITICAL
    assert seen[Kind.EXCHANGE_FAILED].summary == "acme: api_token missing"


def test_a_foreign_write_is_observed_active() -> None:
    seen = by_kind(token_observations(outcome("refreshed", foreign_write=True), T0))

    assert seen[Kind.FOREIGN_WRITE].active
    assert seen[Kind.FOREIGN_WRITE].severity is Severity.CRITICAL


def test_a_changed_principal_names_both_workspaces() -> None:
    before = Principal("ws-1111", "Acme Production", "ADMIN")
    after = Principal("ws-2222", "Acme Sandbox", "MEMBER")

    seen = by_kind(token_observations(outcome("refreshed", principal_change=(before, after)), T0))

    changed = seen[Kind.PRINCIPAL_CHANGED]
    assert changed.active
    for text in ("ws-1111", "Acme Production", "ws-2222", "Acme Sandbox", "ADMIN", "MEMBER"):
        assert text in changed.summary


def test_a_refresh_without_a_principal_change_resolves_principal_changed() -> None:
    seen = by_kind(token_observations(outcome("refreshed"), T0))

    assert seen[Kind.PRINCIPAL_CHANGED].active is False


def test_a_gone_token_says_nothing_about_foreign_write() -> None:
    seen = by_kind(token_observations(outcome("gone"), T0))

    assert Kind.FOREIGN_WRITE not in seen


# --- expiry_observations --------------------------------------------------------------------------

FRACTION = 0.8
# Refresh is planned at 80 % of an hour (48 min); "expiring" once less than half of the
# remaining 12 minutes is left, i.e. from 6 minutes before expiry.
MARGIN = HOUR * (1 - FRACTION) / 2


def access_expiry(now: datetime, expires_at: datetime = T0 + HOUR) -> Observation:
    seen = by_kind(expiry_observations("acme", expires_at, HOUR, FRACTION, None, now))
    return seen[Kind.ACCESS_TOKEN_EXPIRING]


def api_expiry(now: datetime, expires_at: datetime | None) -> Observation:
    seen = by_kind(expiry_observations("acme", None, None, FRACTION, expires_at, now))
    return seen[Kind.API_TOKEN_EXPIRING]


def test_an_access_token_with_more_than_half_its_refresh_margin_left_is_not_expiring() -> None:
    assert access_expiry(T0 + HOUR - MARGIN - timedelta(seconds=1)).active is False
    assert access_expiry(T0 + HOUR - MARGIN).active is False


def test_an_access_token_with_less_than_half_its_refresh_margin_left_is_expiring() -> None:
    seen = access_expiry(T0 + HOUR - MARGIN + timedelta(seconds=1))

    assert seen.active
    assert seen.severity is Severity.WARNING
    assert seen.token == "acme"


def test_an_expired_access_token_is_critical() -> None:
    seen = access_expiry(T0 + HOUR)

    assert seen.active
    assert seen.severity is Severity.CRITICAL
    assert "expired" in seen.summary


def test_an_unknown_access_token_expiry_says_nothing_about_access_token_expiring() -> None:
    seen = by_kind(expiry_observations("acme", None, None, FRACTION, None, T0))

    assert Kind.ACCESS_TOKEN_EXPIRING not in seen


@pytest.mark.parametrize(
    ("days_left", "stage"), [(30, 1), (20, 1), (14, 2), (8, 2), (7, 3), (2, 3), (1, 4), (0.5, 4)]
)
def test_api_token_expiring_stages_at_30_14_7_and_1_days(days_left: float, stage: int) -> None:
    seen = api_expiry(T0, T0 + days_left * DAY)

    assert seen.active
    assert seen.stage == stage


@pytest.mark.parametrize("days_left", [30, 14, 7, 1.5])
def test_api_token_expiring_is_a_warning_above_one_day(days_left: float) -> None:
    assert api_expiry(T0, T0 + days_left * DAY).severity is Severity.WARNING


@pytest.mark.parametrize("days_left", [1, 0.1, -3])
def test_api_token_expiring_is_critical_at_one_day_or_less(days_left: float) -> None:
    seen = api_expiry(T0, T0 + days_left * DAY)

    assert seen.active
    assert seen.severity is Severity.CRITICAL


def test_api_token_expiring_is_inactive_beyond_30_days() -> None:
    seen = api_expiry(T0, T0 + API_TOKEN_WARN_DAYS[0] * DAY + timedelta(seconds=1))

    assert seen.active is False


def test_api_token_expiring_is_inactive_when_the_expiry_is_unknown() -> None:
    assert api_expiry(T0, None).active is False


def test_an_api_token_expiry_re_fires_at_each_stage_even_inside_the_repeat_interval() -> None:
    alerts = AlertBook(timedelta(days=365))
    expires = T0 + 40 * DAY
    fired = []
    for day in range(41):
        now = T0 + day * DAY
        fired += [(day, e.severity) for e in alerts.apply([api_expiry(now, expires)], now)]

    assert fired == [
        (10, Severity.WARNING),
        (26, Severity.WARNING),
        (33, Severity.WARNING),
        (39, Severity.CRITICAL),
    ]


def test_a_look_during_backoff_does_not_fire_exchange_failed() -> None:
    # The pending failure may have been Vault's, not the IdP's: a backoff look says nothing new.
    seen = by_kind(
        token_observations(failing("transient", EXCHANGE_FAILED_AFTER + 2, reason="backoff"), T0)
    )

    assert Kind.EXCHANGE_FAILED not in seen
