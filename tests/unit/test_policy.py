"""When to refresh and when to retry: rotator.policy, pure, no clock patched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.outcome import Failure, FailureKind, Reason
from rotator.policy import (
    BACKOFF_BASE,
    MIN_RETRY_SECONDS,
    Action,
    Decision,
    backoff_delay,
    decide,
    next_failure,
    phase,
    refresh_at,
)
from rotator.tokens import AccessToken

ISSUED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600

lifetimes = st.integers(min_value=1, max_value=366 * 86400)
fractions = st.floats(min_value=0.1, max_value=0.95)
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
names = st.text(max_size=40)
kinds = st.sampled_from(sorted(BACKOFF_BASE))


def token(
    lifetime: float = HOUR, issued_at: datetime = ISSUED, source_version: int = 1
) -> AccessToken:
    return AccessToken(
        access_token="header.claims.sig",
        token_type="bearer",
        expires_in=int(lifetime),
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=lifetime),
        source_version=source_version,
    )


def decide_for(
    now: datetime,
    output: AccessToken | None,
    *,
    readable: bool = True,
    source_version: int | None = 1,
    failure: Failure | None = None,
    jitter: float = 0.5,
) -> Decision:
    return decide(now, "acme", output, readable, source_version, failure, 0.8, jitter)


# --- refresh timing ---


@given(lifetime=lifetimes, fraction=fractions, jitter=jitters, name=names)
def test_refresh_at_lies_within_the_spread_before_the_refresh_fraction(
    lifetime: int, fraction: float, jitter: float, name: str
) -> None:
    tok = token(lifetime)
    spread = min(0.05 * lifetime, fraction * lifetime / 4)
    moment = refresh_at(tok, name, fraction, jitter)
    assert ISSUED + timedelta(seconds=fraction * lifetime - spread) <= moment
    assert moment <= ISSUED + timedelta(seconds=fraction * lifetime)


@given(lifetime=lifetimes, fraction=fractions, jitter=jitters, name=names)
def test_refresh_at_is_never_at_or_past_expiry(
    lifetime: int, fraction: float, jitter: float, name: str
) -> None:
    tok = token(lifetime)
    assert refresh_at(tok, name, fraction, jitter) < tok.expires_at


@given(lifetime=lifetimes, fraction=fractions, jitter=jitters, name=names)
def test_refresh_at_leaves_consumers_at_least_the_unrefreshed_share_of_the_lifetime(
    lifetime: int, fraction: float, jitter: float, name: str
) -> None:
    tok = token(lifetime)
    left = tok.expires_at - refresh_at(tok, name, fraction, jitter)
    assert left >= timedelta(seconds=(1 - fraction) * lifetime) - timedelta(microseconds=1)


@given(lifetime=lifetimes, fraction=fractions, name=names, a=jitters, b=jitters)
def test_jitter_moves_refresh_by_at_most_a_tenth_of_the_spread(
    lifetime: int, fraction: float, name: str, a: float, b: float
) -> None:
    tok = token(lifetime)
    spread = min(0.05 * lifetime, fraction * lifetime / 4)
    gap = abs(refresh_at(tok, name, fraction, a) - refresh_at(tok, name, fraction, b))
    assert gap <= timedelta(seconds=0.1 * spread) + timedelta(microseconds=2)


@given(name=names)
def test_phase_is_a_stable_number_in_the_unit_interval(name: str) -> None:
    assert 0.0 <= phase(name) < 1.0
    assert phase(name) == phase(name)


@given(lifetime=lifetimes, fraction=fractions, jitter=jitters, name=names)
def test_same_name_and_jitter_give_the_same_refresh_time(
    lifetime: int, fraction: float, jitter: float, name: str
) -> None:
    assert refresh_at(token(lifetime), name, fraction, jitter) == refresh_at(
        token(lifetime), name, fraction, jitter
    )


def test_tokens_issued_together_refresh_at_different_times() -> None:
    tok = token(HOUR)
    times = {refresh_at(tok, f"workspace-{i}", 0.8, 0.0) for i in range(50)}
    assert len(times) == 50


def test_tokens_issued_together_spread_over_most_of_the_spread_window() -> None:
    tok = token(HOUR)
    spread = 0.05 * HOUR
    times = sorted(refresh_at(tok, f"workspace-{i}", 0.8, 0.0) for i in range(200))
    assert times[-1] - times[0] >= timedelta(seconds=0.7 * spread)


# --- decide ---


def test_missing_output_is_refreshed_now() -> None:
    decision = decide_for(ISSUED, None, readable=True)
    assert (decision.action, decision.reason, decision.at) == (
        Action.REFRESH,
        Reason.MISSING,
        ISSUED,
    )


def test_unreadable_output_is_refreshed_now() -> None:
    decision = decide_for(ISSUED, None, readable=False)
    assert (decision.action, decision.reason) == (Action.REFRESH, Reason.UNREADABLE)


def test_expired_output_is_refreshed_now() -> None:
    tok = token(HOUR)
    decision = decide_for(tok.expires_at, tok)
    assert (decision.action, decision.reason) == (Action.REFRESH, Reason.EXPIRED)


def test_changed_source_version_refreshes_a_fresh_token() -> None:
    tok = token(HOUR, source_version=1)
    decision = decide_for(ISSUED + timedelta(minutes=1), tok, source_version=2)
    assert (decision.action, decision.reason) == (Action.REFRESH, Reason.SOURCE_CHANGED)


def test_unknown_source_version_does_not_force_a_refresh() -> None:
    tok = token(HOUR, source_version=1)
    decision = decide_for(ISSUED + timedelta(minutes=1), tok, source_version=None)
    assert (decision.action, decision.reason) == (Action.WAIT, Reason.FRESH)


def test_fresh_token_waits_until_its_refresh_time() -> None:
    tok = token(HOUR)
    now = ISSUED + timedelta(minutes=1)
    decision = decide_for(now, tok, jitter=0.3)
    assert (decision.action, decision.reason) == (Action.WAIT, Reason.FRESH)
    assert decision.at == refresh_at(tok, "acme", 0.8, 0.3)


def test_token_is_refreshed_once_its_refresh_time_has_come() -> None:
    tok = token(HOUR)
    now = refresh_at(tok, "acme", 0.8, 0.3)
    decision = decide_for(now, tok, jitter=0.3)
    assert (decision.action, decision.reason, decision.at) == (Action.REFRESH, Reason.DUE, now)


def test_token_is_not_refreshed_a_moment_before_its_refresh_time() -> None:
    tok = token(HOUR)
    now = refresh_at(tok, "acme", 0.8, 0.3) - timedelta(microseconds=1)
    assert decide_for(now, tok, jitter=0.3).action is Action.WAIT


def test_pending_failure_holds_back_a_due_refresh_until_retry_at() -> None:
    tok = token(HOUR)
    now = ISSUED + timedelta(minutes=55)
    failure = Failure(kind=FailureKind.TRANSIENT, count=2, retry_at=now + timedelta(seconds=20))
    decision = decide_for(now, tok, failure=failure)
    assert (decision.action, decision.reason, decision.at) == (
        Action.WAIT,
        Reason.BACKOFF,
        failure.retry_at,
    )


@pytest.mark.parametrize(
    ("output", "readable", "source_version"),
    [
        (None, True, 1),
        (None, False, 1),
        (token(HOUR, issued_at=ISSUED - timedelta(hours=2)), True, 1),
        (token(HOUR, source_version=1), True, 2),
    ],
    ids=["missing", "unreadable", "expired", "source_changed"],
)
def test_pending_failure_holds_back_every_urgent_refresh(
    output: AccessToken | None, readable: bool, source_version: int
) -> None:
    now = ISSUED + timedelta(minutes=1)
    failure = Failure(kind=FailureKind.REJECTED, count=1, retry_at=now + timedelta(seconds=60))
    decision = decide_for(
        now, output, readable=readable, source_version=source_version, failure=failure
    )
    assert (decision.action, decision.reason) == (Action.WAIT, Reason.BACKOFF)


def test_failure_whose_retry_time_has_come_no_longer_holds_back() -> None:
    tok = token(HOUR)
    now = ISSUED + timedelta(minutes=55)
    failure = Failure(kind=FailureKind.TRANSIENT, count=2, retry_at=now)
    assert decide_for(now, tok, failure=failure).action is Action.REFRESH


def test_fresh_token_with_a_pending_failure_just_waits_for_its_refresh_time() -> None:
    tok = token(HOUR)
    now = ISSUED + timedelta(minutes=1)
    failure = Failure(kind=FailureKind.TRANSIENT, count=1, retry_at=now + timedelta(seconds=5))
    decision = decide_for(now, tok, failure=failure, jitter=0.3)
    assert (decision.action, decision.reason) == (Action.WAIT, Reason.FRESH)
    assert decision.at == refresh_at(tok, "acme", 0.8, 0.3)


# --- backoff_delay ---


def test_backoff_doubles_with_each_consecutive_failure() -> None:
    delays = [backoff_delay(FailureKind.TRANSIENT, n, 10_000, jitter=0.0) for n in range(1, 6)]
    assert delays == [2.5, 5.0, 10.0, 20.0, 40.0]


def test_backoff_is_capped_at_max_backoff() -> None:
    assert backoff_delay(FailureKind.TRANSIENT, 20, 300, jitter=0.999) <= 300
    assert backoff_delay(FailureKind.TRANSIENT, 20, 300, jitter=0.0) == 150


def test_long_failure_streak_does_not_overflow() -> None:
    assert backoff_delay(FailureKind.REJECTED, 10**9, 300, jitter=0.5) <= 300


@given(kind=kinds, failures=st.integers(1, 200), cap=st.floats(1, 86400), jitter=jitters)
def test_backoff_lies_between_half_the_ceiling_and_the_ceiling(
    kind: str, failures: int, cap: float, jitter: float
) -> None:
    ceiling = min(cap, BACKOFF_BASE[kind] * 2.0 ** min(failures - 1, 64))
    delay = backoff_delay(kind, failures, cap, jitter)
    assert ceiling / 2 <= delay <= ceiling


@given(failures=st.integers(1, 200), cap=st.floats(1, 86400), jitter=jitters)
def test_backoff_is_never_above_max_backoff(failures: int, cap: float, jitter: float) -> None:
    assert backoff_delay(FailureKind.TRANSIENT, failures, cap, jitter) <= cap


@given(jitter=jitters)
def test_rejected_api_token_backs_off_slower_than_a_transient_error(jitter: float) -> None:
    assert backoff_delay(FailureKind.REJECTED, 1, 300, jitter) > backoff_delay(
        FailureKind.TRANSIENT, 1, 300, jitter
    )


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    assert backoff_delay(FailureKind.RATE_LIMITED, 1, 300, jitter=0.0, retry_after=120) == 120


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    assert backoff_delay(FailureKind.RATE_LIMITED, 1, 300, jitter=0.0, retry_after=1) == 7.5


def test_hostile_retry_after_is_capped_at_max_backoff() -> None:
    assert (
        backoff_delay(FailureKind.RATE_LIMITED, 1, 300, jitter=0.0, retry_after=365 * 86400) == 300
    )


@given(
    kind=kinds,
    failures=st.integers(1, 200),
    cap=st.floats(1, 86400),
    jitter=jitters,
    retry_after=st.none() | st.floats(allow_nan=True),
)
def test_backoff_is_never_below_one_second(
    kind: str, failures: int, cap: float, jitter: float, retry_after: float | None
) -> None:
    assert backoff_delay(kind, failures, cap, jitter, retry_after) >= MIN_RETRY_SECONDS


def test_backoff_with_a_one_second_cap_is_one_second() -> None:
    assert backoff_delay(FailureKind.TRANSIENT, 1, 1, jitter=0.0) == 1.0


# --- next_failure ---


def test_first_failure_counts_one_and_retries_after_the_backoff() -> None:
    failure = next_failure(None, FailureKind.TRANSIENT, ISSUED, 300, jitter=0.0)
    assert failure == Failure(
        kind=FailureKind.TRANSIENT, count=1, retry_at=ISSUED + timedelta(seconds=2.5)
    )


def test_consecutive_failures_of_the_same_kind_are_counted() -> None:
    first = next_failure(None, FailureKind.TRANSIENT, ISSUED, 300, jitter=0.0)
    second = next_failure(first, FailureKind.TRANSIENT, ISSUED, 300, jitter=0.0)
    third = next_failure(second, FailureKind.TRANSIENT, ISSUED, 300, jitter=0.0)
    assert (second.count, third.count) == (2, 3)
    assert third.retry_at == ISSUED + timedelta(seconds=10)


def test_failure_of_another_kind_restarts_the_count() -> None:
    streak = Failure(kind=FailureKind.TRANSIENT, count=7, retry_at=ISSUED)
    failure = next_failure(streak, FailureKind.REJECTED, ISSUED, 300, jitter=0.0)
    assert (failure.kind, failure.count) == (FailureKind.REJECTED, 1)
    assert failure.retry_at == ISSUED + timedelta(seconds=30)


def test_next_failure_honours_retry_after() -> None:
    failure = next_failure(None, FailureKind.RATE_LIMITED, ISSUED, 300, jitter=0.0, retry_after=90)
    assert failure.retry_at == ISSUED + timedelta(seconds=90)
