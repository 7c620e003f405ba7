"""The per-token plan and the check decision: rotator.plan, pure. Every branch of a pass over a
token (see plan.py's docstring) is one test here, without Vault or an IdP."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rotator import config as config_module
from rotator.errors import SourceError
from rotator.outcome import Failure, FailureKind, Reason, State
from rotator.plan import (
    GONE_RECHECK,
    Look,
    OutputView,
    Plan,
    Rules,
    Step,
    TokenFacts,
    moved_look,
    next_look,
    plan_after_conflict,
    plan_check,
    plan_status,
    plan_token,
)
from rotator.records import Claim, SecretVersion, output_fields, output_key
from rotator.sources import Source
from rotator.tokens import AccessToken

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
RULES = Rules(refresh_fraction=0.8, max_issuances_per_hour=6, claim_lease=timedelta(seconds=45))
SOURCE = Source(name="acme", token_url="https://acme.leanix.net/x", version=3, api_token="secret")
KEY = output_key(SOURCE.api_token)


def token(
    issued_at: datetime = T0, value: str = "h.claims.sig", source_version: int = 3
) -> AccessToken:
    return AccessToken(
        access_token=value,
        token_type="bearer",
        expires_in=3600,
        issued_at=issued_at,
        expires_at=issued_at + HOUR,
        source_version=source_version,
    )


def output(tok: AccessToken | None, version: int = 4, *, foreign: bool = False) -> OutputView:
    """An output as read: rotator's own (its MAC verifies) unless `foreign`."""
    if tok is None:
        return OutputView()
    key = output_key("someone else's key") if foreign else KEY
    return OutputView.of(SecretVersion(output_fields(tok, key), version, {}), KEY)


def facts(now: datetime = T0 + timedelta(minutes=10), **fields: object) -> TokenFacts:
    """A token whose output, issued at T0, is fresh at `now` unless told otherwise."""
    defaults: dict[str, object] = {
        "source": SOURCE,
        "output": output(token()),
        "source_version": 3,
        "history": (T0,),
    }
    defaults.update(fields)
    return TokenFacts("acme", now, **defaults)  # type: ignore[arg-type]


DUE = T0 + timedelta(minutes=55)  # past the 80 % refresh point (48 min minus its offset)
CLAIM = Claim(version=2, settled_output_version=4)


def plan(**fields: object) -> Plan:
    return plan_token(facts(**fields), RULES)


# --- reports before any work ----------------------------------------------------------------------


def test_a_deleted_source_is_gone_and_looked_at_again_much_later() -> None:
    result = plan(source=None)

    assert (result.step, result.state, result.reason) == (
        Step.REPORT,
        State.GONE,
        Reason.SOURCE_DELETED,
    )
    assert result.at == T0 + timedelta(minutes=10) + GONE_RECHECK


def test_a_malformed_source_reports_invalid_and_records_a_failure() -> None:
    problem = SourceError("acme", "field 'host' must be a bare hostname")

    result = plan(source=problem)

    assert (result.step, result.state, result.reason) == (
        Step.REPORT,
        State.INVALID_SOURCE,
        Reason.INVALID_SOURCE,
    )
    assert result.record is FailureKind.INVALID_SOURCE
    assert result.detail == str(problem)
    assert result.at is None  # when the recorded failure allows
    assert result.token == token()  # consumers still hold the last good token


def test_a_fresh_token_waits_until_its_refresh_time() -> None:
    result = plan()

    assert (result.step, result.state, result.reason) == (Step.REPORT, State.FRESH, Reason.FRESH)
    assert result.at is not None and T0 + 0.75 * HOUR <= result.at <= T0 + 0.8 * HOUR
    assert result.record is None


def test_a_pending_backoff_reports_failing_until_the_retry() -> None:
    retry = DUE + timedelta(seconds=30)
    failure = Failure(FailureKind.TRANSIENT, 2, retry)

    result = plan(now=DUE, failure=failure)

    assert (result.step, result.state, result.reason) == (
        Step.REPORT,
        State.FAILING,
        Reason.BACKOFF,
    )
    assert result.at == retry
    assert result.detail == f"2 failed attempts; next at {retry:%H:%M:%S}"


def test_a_backoff_for_an_older_source_version_is_over() -> None:
    failure = Failure(FailureKind.REJECTED, 1, DUE + HOUR, source_version=2)

    assert plan(now=DUE, failure=failure).step is Step.CLAIM


# --- why a refresh happens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        (OutputView(), Reason.MISSING),
        (OutputView.of(SecretVersion({"access_token": "x"}, 4, {})), Reason.FOREIGN_WRITE),
        (output(token(), foreign=True), Reason.FOREIGN_WRITE),
        (output(token(T0 - 2 * HOUR)), Reason.EXPIRED),
        (output(token(source_version=2)), Reason.SOURCE_CHANGED),
    ],
    ids=["missing", "foreign-unreadable", "foreign", "expired", "source-changed"],
)
def test_a_token_that_needs_a_refresh_is_claimed_with_the_reason(
    view: OutputView, reason: Reason
) -> None:
    result = plan(output=view)

    assert (result.step, result.reason) == (Step.CLAIM, reason)


def test_an_unreadable_output_of_rotators_own_is_replaced() -> None:
    fields = output_fields(token(), KEY)
    broken = OutputView.of(SecretVersion({**fields, "expires_in": "soon"}, 4, {}), KEY)

    assert not broken.readable and not broken.foreign
    assert plan(output=broken).reason is Reason.UNREADABLE


def test_a_due_token_is_claimed_and_the_plan_counts_the_issuances() -> None:
    result = plan(now=DUE, history=(T0 - timedelta(minutes=30), T0, T0 + timedelta(minutes=20)))

    assert (result.step, result.reason, result.issuances) == (Step.CLAIM, Reason.DUE, 2)


def test_force_refreshes_a_fresh_token() -> None:
    result = plan(force=True)

    assert (result.step, result.reason) == (Step.CLAIM, Reason.FORCED)


def test_force_ignores_a_pending_backoff() -> None:
    failure = Failure(FailureKind.TRANSIENT, 2, T0 + HOUR)

    assert plan(force=True, failure=failure).step is Step.CLAIM


# --- held tokens ----------------------------------------------------------------------------------


def test_a_fresh_held_token_is_written_back_instead_of_exchanging() -> None:
    held = token(T0 + timedelta(minutes=5), value="held.token.sig")

    result = plan(output=OutputView(), held=held)

    assert (result.step, result.token, result.reason) == (Step.WRITE_HELD, held, Reason.MISSING)


def test_a_held_token_past_its_refresh_time_is_not_written_back() -> None:
    held = token(T0, value="held.token.sig")

    assert plan(now=DUE, output=OutputView(), held=held).step is Step.CLAIM


def test_a_forced_rotation_never_writes_back_a_held_token() -> None:
    held = token(T0 + timedelta(minutes=5), value="held.token.sig")

    assert plan(force=True, held=held).step is Step.CLAIM


# --- the issuance cap -----------------------------------------------------------------------------


def test_an_output_without_an_issuance_log_needs_its_version_history() -> None:
    result = plan(now=DUE, history=None)

    assert (result.step, result.reason) == (Step.READ_HISTORY, Reason.DUE)


def test_a_reached_cap_reports_capped_until_the_oldest_issuance_leaves_the_hour() -> None:
    history = tuple(DUE - timedelta(minutes=m) for m in (50, 40, 30, 20, 10, 5))

    result = plan(now=DUE, history=history)

    assert (result.step, result.state) == (Step.REPORT, State.CAPPED)
    assert result.at == history[0] + HOUR
    assert (result.issuances, result.detail) == (6, "issuance cap reached")


def test_the_cap_counts_this_process_s_own_issuances_when_the_log_says_fewer() -> None:
    """A forged or lost issuance log cannot reset the cap within one process."""
    own = tuple(DUE - timedelta(minutes=m) for m in (50, 40, 30, 20, 10, 5))

    result = plan(now=DUE, history=(), own_issuances=own)

    assert (result.state, result.at, result.issuances) == (State.CAPPED, own[0] + HOUR, 6)


def test_the_log_counts_when_it_knows_more_than_this_process() -> None:
    """Other instances' issuances are in the log, not in this process's memory."""
    logged = tuple(DUE - timedelta(minutes=m) for m in (50, 40, 30, 20, 10, 5))

    result = plan(now=DUE, history=logged, own_issuances=logged[-2:])

    assert result.state is State.CAPPED


def test_the_cap_holds_even_for_a_forced_rotation() -> None:
    history = tuple(T0 - timedelta(minutes=m) for m in range(6))

    assert plan(force=True, history=history).state is State.CAPPED


# --- claims ---------------------------------------------------------------------------------------


def test_a_token_claimed_by_another_instance_waits_one_lease() -> None:
    result = plan(now=DUE, claimed_elsewhere=True)

    assert (result.step, result.state, result.reason) == (
        Step.REPORT,
        State.FRESH,
        Reason.CLAIMED_ELSEWHERE,
    )
    assert result.at == DUE + RULES.claim_lease


def test_claimed_elsewhere_while_consumers_hold_an_expired_token_is_failing() -> None:
    expired = output(token(T0 - 2 * HOUR))

    result = plan(output=expired, claimed_elsewhere=True)

    assert (result.state, result.reason) == (State.FAILING, Reason.CLAIMED_ELSEWHERE)


def test_claimed_elsewhere_without_a_token_is_failing() -> None:
    result = plan(output=OutputView(), claimed_elsewhere=True)

    assert (result.state, result.reason) == (State.FAILING, Reason.CLAIMED_ELSEWHERE)


def test_alone_a_due_token_is_exchanged_without_a_claim() -> None:
    result = plan(now=DUE, claims=False)

    assert (result.step, result.reason, result.issuances) == (Step.EXCHANGE, Reason.DUE, 1)


def test_a_newcomer_holds_a_due_refresh_back_until_its_wait_ends() -> None:
    due_at = plan().at
    assert due_at is not None
    until = due_at + timedelta(minutes=2)

    waiting = plan(now=due_at, wait_until=until)

    assert (waiting.step, waiting.state, waiting.reason, waiting.at) == (
        Step.REPORT,
        State.FRESH,
        Reason.NEWCOMER,
        until,
    )
    assert plan(now=until, wait_until=until).step is Step.CLAIM
    assert plan(now=due_at, wait_until=until, force=True).step is Step.CLAIM


def test_a_newcomer_never_waits_past_a_third_of_the_time_left_after_the_refresh_time() -> None:
    """Sooner than another instance's deference (half of it): the preferred one goes first."""
    due_at = plan().at
    assert due_at is not None
    limit = due_at + (T0 + HOUR - due_at) / 3

    assert plan(now=due_at, wait_until=T0 + 2 * HOUR).at == limit
    assert plan(now=limit, wait_until=T0 + 2 * HOUR).step is Step.CLAIM


def test_a_newcomer_holds_a_missing_or_expired_token_back_for_its_whole_wait() -> None:
    """The instance already running may not claim yet: it refreshes those meanwhile."""
    later = T0 + 3 * HOUR

    missing = plan(output=OutputView(), wait_until=later)
    expired = plan(now=T0 + 2 * HOUR, wait_until=later)

    assert (missing.step, missing.reason, missing.state, missing.at) == (
        Step.REPORT,
        Reason.NEWCOMER,
        State.FAILING,  # consumers have no valid token meanwhile
        later,
    )
    assert (expired.reason, expired.state, expired.at) == (Reason.NEWCOMER, State.FAILING, later)
    assert plan(output=OutputView(), wait_until=later, force=True).step is Step.CLAIM
    assert plan(output=OutputView(), now=later, wait_until=later).step is Step.CLAIM


def test_a_fresh_token_is_not_held_up_by_a_newcomers_wait() -> None:
    result = plan(wait_until=DUE)

    assert (result.state, result.reason) == (State.FRESH, Reason.FRESH)


def test_a_token_another_instance_is_preferred_for_is_due_later() -> None:
    due_at = plan().at
    assert due_at is not None

    deferred = plan(now=due_at, defer=timedelta(minutes=2))
    capped = plan(defer=HOUR).at  # at most half the time left before it expires

    assert (deferred.state, deferred.at) == (State.FRESH, due_at + timedelta(minutes=2))
    assert capped == due_at + (T0 + HOUR - due_at) / 2
    assert plan(now=due_at + timedelta(minutes=2), defer=timedelta(minutes=2)).step is Step.CLAIM


def test_a_missing_output_is_not_deferred() -> None:
    assert plan(output=OutputView(), defer=HOUR).step is Step.CLAIM


def test_under_a_claim_settled_at_the_version_read_the_token_is_exchanged_at_once() -> None:
    result = plan(now=DUE, claim=CLAIM)

    assert (result.step, result.reason) == (Step.EXCHANGE, Reason.DUE)


def test_under_the_first_claim_ever_there_is_nothing_to_read_again() -> None:
    result = plan(output=OutputView(), claim=Claim(1, None, first=True))

    assert result.step is Step.EXCHANGE


def test_under_a_claim_settled_elsewhere_the_output_is_read_again_first() -> None:
    result = plan(now=DUE, claim=Claim(version=2, settled_output_version=5))

    assert (result.step, result.reason) == (Step.REREAD, Reason.DUE)


def test_a_fresh_token_another_instance_stored_meanwhile_is_kept() -> None:
    theirs = token(DUE - timedelta(seconds=5), value="their.token.sig")
    moved = Claim(version=2, settled_output_version=5)

    result = plan(now=DUE, claim=moved, latest=output(theirs, version=5))

    assert (result.step, result.state, result.reason) == (
        Step.REPORT,
        State.FRESH,
        Reason.REFRESHED_ELSEWHERE,
    )
    assert (result.token, result.version) == (theirs, 5)


def test_read_again_unchanged_the_token_is_exchanged() -> None:
    moved = Claim(version=2, settled_output_version=5)

    result = plan(now=DUE, claim=moved, latest=output(token(), version=4))

    assert result.step is Step.EXCHANGE


def test_read_again_a_foreign_write_is_no_reason_to_wait() -> None:
    forged = output(token(DUE, value="forged.token.sig"), version=5, foreign=True)

    result = plan(now=DUE, claim=Claim(2, 5), latest=forged)

    assert result.step is Step.EXCHANGE


def test_read_again_a_token_that_is_already_due_is_exchanged() -> None:
    theirs = token(T0 + timedelta(seconds=1), value="their.token.sig")

    result = plan(now=DUE, claim=Claim(2, 5), latest=output(theirs, version=5))

    assert result.step is Step.EXCHANGE


def test_a_forced_rotation_exchanges_even_over_another_instances_fresh_token() -> None:
    theirs = token(T0 + timedelta(minutes=9), value="their.token.sig")

    result = plan(force=True, claim=Claim(2, 5), latest=output(theirs, version=5))

    assert result.step is Step.EXCHANGE


def test_a_write_replaces_the_output_read_under_the_claim() -> None:
    latest = output(token(), version=5)

    assert facts(latest=latest).written_over is latest
    assert facts().written_over.version == 4


# --- after a write lost its check-and-set --------------------------------------------------------


def test_a_lost_write_keeps_another_instances_valid_token() -> None:
    theirs = output(token(DUE - timedelta(seconds=2), value="their.token.sig"), version=6)

    result = plan_after_conflict(facts(now=DUE), theirs, Reason.DUE, RULES)

    assert (result.state, result.reason, result.version) == (State.FRESH, Reason.CONFLICT, 6)
    assert result.token == theirs.token and result.record is None
    assert result.at is not None and result.at > DUE


@pytest.mark.parametrize(
    "latest",
    [
        OutputView(),
        output(token(value="forged.token.sig"), version=6, foreign=True),
        output(token(T0 - 2 * HOUR), version=6),
    ],
    ids=["deleted", "foreign", "expired"],
)
def test_a_lost_write_over_anything_else_fails_softly(latest: OutputView) -> None:
    result = plan_after_conflict(facts(now=DUE), latest, Reason.DUE, RULES)

    assert (result.state, result.reason, result.record) == (
        State.FAILING,
        Reason.DUE,
        FailureKind.TRANSIENT,
    )
    assert result.detail == "output changed during the write"


def test_a_stored_token_is_looked_at_again_at_its_refresh_time_whatever_failed_before() -> None:
    stored = token(DUE)
    failing = facts(now=DUE, failure=Failure(FailureKind.TRANSIENT, 3, DUE + HOUR))

    assert DUE + 0.75 * HOUR <= next_look(failing, stored, RULES) <= DUE + 0.8 * HOUR


# --- status (read-only) ---------------------------------------------------------------------------


def test_status_of_a_fresh_token() -> None:
    result = plan_status(facts(), RULES)

    assert (result.state, result.reason, result.token) == (State.FRESH, Reason.FRESH, token())


@pytest.mark.parametrize(
    ("view", "state", "reason"),
    [
        (OutputView(), State.FAILING, Reason.MISSING),
        (output(token(T0 - 2 * HOUR)), State.FAILING, Reason.EXPIRED),
    ],
    ids=["missing", "expired"],
)
def test_status_without_a_valid_token_is_failing(
    view: OutputView, state: State, reason: Reason
) -> None:
    result = plan_status(facts(output=view), RULES)

    assert (result.state, result.reason) == (state, reason)


def test_status_of_a_foreign_write_is_failing_and_says_why() -> None:
    result = plan_status(facts(output=output(token(), foreign=True)), RULES)

    assert (result.state, result.reason) == (State.FAILING, Reason.FOREIGN_WRITE)
    assert result.detail == "the output secret was changed by someone else"


def test_status_of_a_deleted_and_of_a_malformed_source() -> None:
    assert plan_status(facts(source=None), RULES).state is State.GONE
    problem = SourceError("acme", "field 'api_token' is missing")
    malformed = plan_status(facts(source=problem), RULES)
    assert (malformed.state, malformed.detail) == (State.INVALID_SOURCE, str(problem))


# --- the output as read ---------------------------------------------------------------------------


def test_an_absent_output_is_version_0_readable_and_not_foreign() -> None:
    view = OutputView()

    assert (view.version, view.readable, view.foreign, view.trusted, view.issuances(T0)) == (
        0,
        True,
        False,
        None,
        (),  # nothing was ever issued to it
    )


def test_a_deleted_output_keeps_its_version_and_issuance_log_and_is_missing() -> None:
    logged = output(token(), version=5).secret
    assert logged is not None
    deleted = OutputView.of(SecretVersion({}, 6, {"issuances": "x"}, deleted=True))

    assert (deleted.version, deleted.foreign, deleted.token, deleted.readable) == (
        6,
        False,
        None,
        True,
    )
    assert plan(output=deleted).reason is Reason.MISSING


def test_a_foreign_token_is_read_but_never_trusted() -> None:
    view = output(token(), foreign=True)

    assert view.token == token() and view.trusted is None


def test_facts_know_the_api_tokens_expiry_only_from_a_parsed_source() -> None:
    expiring = replace(SOURCE, api_token_expires_at=T0 + 30 * HOUR)

    assert facts(source=expiring).api_token_expires_at == T0 + 30 * HOUR
    assert facts(source=SourceError("acme", "broken")).api_token_expires_at is None


# --- the daemon's check ---------------------------------------------------------------------------


def check(**fields: object) -> Look:
    arguments: dict[str, object] = {
        "running": False,
        "has_job": True,
        "seen_version": 4,
        "version": 4,
        "expires_at": T0 + HOUR,
        "now": T0,
    }
    arguments.update(fields)
    return plan_check(**arguments)  # type: ignore[arg-type]


def test_a_check_leaves_an_unchanged_valid_output_alone() -> None:
    assert check() is Look.KEEP


def test_a_check_leaves_a_running_job_alone_whatever_it_sees() -> None:
    assert check(running=True, has_job=False, version=9, expires_at=None) is Look.KEEP


def test_a_check_puts_a_lost_job_back() -> None:
    assert check(has_job=False) is Look.ADD_JOB


def test_a_check_pulls_a_token_forward_when_its_output_changed() -> None:
    assert check(version=5) is Look.CHANGED
    assert check(version=0) is Look.CHANGED  # deleted


def test_a_check_pulls_a_token_forward_when_its_source_moved() -> None:
    assert check(source_moved=True) is Look.CHANGED
    assert check(source_moved=True, running=True) is Look.KEEP


def test_a_check_keeps_a_version_this_process_wrote_or_read() -> None:
    assert check(version=5, known_version=5) is Look.KEEP


def test_a_check_reschedules_by_another_instances_vouched_version_without_a_look() -> None:
    assert check(version=5, known_version=4, vouched=True) is Look.MOVED
    assert check(version=5, vouched=True, expires_at=T0) is Look.CHANGED  # expired: look
    assert check(version=5, known_version=4) is Look.CHANGED  # not vouched: maybe foreign


def test_a_moved_token_is_looked_at_when_its_new_version_is_due() -> None:
    issued = T0 + timedelta(minutes=10)
    stored = token(issued)

    plain = moved_look("acme", issued, issued + HOUR, timedelta(0), RULES)
    later = moved_look("acme", issued, issued + HOUR, timedelta(minutes=2), RULES)

    assert plain == next_look(facts(), stored, RULES)
    assert later == plain + timedelta(minutes=2)


def test_the_first_check_takes_the_version_it_sees_as_known() -> None:
    assert check(seen_version=None, version=7) is Look.KEEP


@pytest.mark.parametrize("expires_at", [None, T0, T0 - HOUR], ids=["unknown", "now", "past"])
def test_a_check_pulls_a_token_forward_when_its_output_is_missing_or_expired(
    expires_at: datetime | None,
) -> None:
    assert check(expires_at=expires_at) is Look.STALE


def test_the_rules_come_from_the_config_with_a_claim_lease_past_an_exchange() -> None:
    config = config_module.parse(
        {
            "vault": {"addr": "http://127.0.0.1:8200"},
            "exchange": {"timeout_seconds": 10, "refresh_fraction": 0.7},
            "alerts": {"max_issuances_per_hour": 9},
        },
        {"VAULT_TOKEN": "dev-only"},
    )

    assert Rules.from_config(config) == Rules(0.7, 9, timedelta(seconds=45))


def test_reading_no_output_secret_is_the_absent_output() -> None:
    assert OutputView.of(None) == OutputView()
