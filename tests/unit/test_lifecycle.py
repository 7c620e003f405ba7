"""The API token's lifecycle: rotator.lifecycle, pure. When a replacement is due, how one
interrupted at any step rolls forward, the once-an-hour limit, promotion of api_token_next."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rotator.lifecycle import (
    ATTEMPTED_KEY,
    ATTEMPTS_KEY,
    INTENT_FROM_KEY,
    INTENT_KEY,
    RECOVERY_DELAYS,
    REPLACED_KEY,
    REPLACEMENT_INTERVAL,
    UNPROVEN,
    ApiTokenFacts,
    Intent,
    LifecyclePlan,
    LifecycleRules,
    Proof,
    Step,
    Verdict,
    Why,
    cleared_metadata,
    intent_metadata,
    last_attempt,
    plan_api_token,
    read_intent,
    replaced_at,
    stored_metadata,
)
from rotator.redact import fingerprint
from rotator.sources import Source
from rotator.tokens import format_time

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = LifecycleRules(replace_every=None, replace_before_expiry=14 * DAY)
SOURCE = Source(
    name="acme/prod",
    token_url="https://acme.leanix.net/services/mtm/v1/oauth2/token",
    version=3,
    api_token="old-api-token",
    api_token_expires_at=NOW + 100 * DAY,
    technical_user_id="0a1b2c3d-4e5f-6789-abcd-ef0123456789",
)
WORKS = Proof(Verdict.WORKS, NOW - timedelta(minutes=1))
REJECTED = Proof(Verdict.REJECTED, NOW - timedelta(minutes=1))


def facts(**fields: object) -> ApiTokenFacts:
    defaults: dict[str, object] = {
        "source": SOURCE,
        "metadata": {},
        "created": NOW - 30 * DAY,
        "api_token": WORKS,
        "output_source_version": 3,
    }
    defaults.update(fields)
    return ApiTokenFacts("acme/prod", NOW, **defaults)  # type: ignore[arg-type]


def plan(rules: LifecycleRules = RULES, **fields: object) -> LifecyclePlan:
    return plan_api_token(facts(**fields), rules)


def recorded(since: datetime, replaces: str = "old-api-token", attempts: int = 1) -> dict[str, str]:
    return {
        INTENT_KEY: format_time(since),
        INTENT_FROM_KEY: fingerprint(replaces),
        ATTEMPTS_KEY: str(attempts),
    }


# --- when a replacement is due --------------------------------------------------------------------


def test_nothing_is_due_far_from_expiry_and_the_next_look_is_the_expiry_margin() -> None:
    result = plan()

    assert result == LifecyclePlan(Step.NONE, Why.EXPIRY, SOURCE.api_token_expires_at - 14 * DAY)


def test_a_token_within_the_expiry_margin_is_replaced() -> None:
    soon = replace(SOURCE, api_token_expires_at=NOW + 13 * DAY)

    assert plan(source=soon) == LifecyclePlan(Step.REPLACE, Why.EXPIRY)


def test_an_expired_managed_token_is_replaced_too() -> None:
    gone = replace(SOURCE, api_token_expires_at=NOW - DAY)

    assert plan(source=gone, api_token=REJECTED).step is Step.REPLACE


def test_replace_every_counts_from_the_last_replacement() -> None:
    rules = LifecycleRules(replace_every=90 * DAY, replace_before_expiry=None)
    metadata = {REPLACED_KEY: format_time(NOW - 91 * DAY)}

    assert plan(rules, metadata=metadata) == LifecyclePlan(Step.REPLACE, Why.EVERY)
    later = {REPLACED_KEY: format_time(NOW - 10 * DAY)}
    assert plan(rules, metadata=later) == LifecyclePlan(Step.NONE, Why.EVERY, NOW + 80 * DAY)


def test_replace_every_counts_from_the_source_version_for_a_token_never_replaced() -> None:
    rules = LifecycleRules(replace_every=20 * DAY, replace_before_expiry=None)

    assert plan(rules, created=NOW - 30 * DAY).step is Step.REPLACE


def test_the_earlier_of_both_schedules_wins() -> None:
    rules = LifecycleRules(replace_every=90 * DAY, replace_before_expiry=14 * DAY)

    every_first = plan(rules, created=NOW - 10 * DAY)
    expiry_first = plan(
        rules, created=NOW - 10 * DAY, source=replace(SOURCE, api_token_expires_at=NOW + 50 * DAY)
    )

    assert every_first == LifecyclePlan(Step.NONE, Why.EVERY, NOW + 80 * DAY)
    assert expiry_first == LifecyclePlan(Step.NONE, Why.EXPIRY, NOW + 36 * DAY)


def test_without_a_schedule_nothing_is_ever_due() -> None:
    rules = LifecycleRules(replace_every=None, replace_before_expiry=None)

    assert plan(rules) == LifecyclePlan(Step.NONE, Why.NOTHING)
    no_expiry = replace(SOURCE, api_token_expires_at=None)
    assert plan(source=no_expiry) == LifecyclePlan(Step.NONE, Why.NOTHING)


def test_a_request_replaces_now() -> None:
    assert plan(requested=True) == LifecyclePlan(Step.REPLACE, Why.REQUESTED)


@pytest.mark.parametrize(
    "source",
    [
        replace(SOURCE, technical_user_id=None),
        replace(SOURCE, token_url="https://idp.example.com/oauth/token"),
    ],
    ids=["no-technical-user", "not-mtm"],
)
def test_a_token_rotator_does_not_manage_is_never_replaced(source: Source) -> None:
    soon = replace(source, api_token_expires_at=NOW + DAY)

    assert plan(source=soon) == LifecyclePlan(Step.NONE, Why.NOT_MANAGED)
    assert plan(source=soon, requested=True) == LifecyclePlan(Step.REFUSED, Why.NOT_MANAGED)


# --- never more than one an hour ------------------------------------------------------------------


def test_a_replacement_completed_within_the_hour_blocks_the_next() -> None:
    metadata = {REPLACED_KEY: format_time(NOW - timedelta(minutes=20))}

    result = plan(requested=True, metadata=metadata)

    assert result == LifecyclePlan(Step.WAIT, Why.HOUR, NOW + timedelta(minutes=40))


def test_a_replacement_started_within_the_hour_blocks_the_next() -> None:
    """Even one whose record is still open and whose old token still works."""
    started = NOW - timedelta(minutes=59)
    metadata = recorded(started)
    result = plan(requested=True, metadata=metadata, api_token=Proof(Verdict.UNKNOWN))

    assert result.step is Step.PROVE  # first learn whether it happened
    # Once the old token is proven to work, the record is cleared; the hour still counts from
    # the replacement record's start as long as it is there.
    cleared = {REPLACED_KEY: format_time(started)}
    assert plan(requested=True, metadata=cleared) == LifecyclePlan(
        Step.WAIT, Why.HOUR, started + REPLACEMENT_INTERVAL
    )


def test_an_hour_after_the_last_replacement_the_next_may_start() -> None:
    metadata = {REPLACED_KEY: format_time(NOW - REPLACEMENT_INTERVAL)}

    assert plan(requested=True, metadata=metadata).step is Step.REPLACE


def test_a_schedule_due_later_than_the_hour_is_not_a_wait() -> None:
    metadata = {REPLACED_KEY: format_time(NOW - timedelta(minutes=30))}

    result = plan(metadata=metadata)

    assert result == LifecyclePlan(Step.NONE, Why.EXPIRY, SOURCE.api_token_expires_at - 14 * DAY)


# --- rolling an interrupted replacement forward ---------------------------------------------------


def test_a_new_token_held_in_memory_is_stored_before_anything_else() -> None:
    assert plan(holding=True, metadata=recorded(NOW)) == LifecyclePlan(Step.STORE_HELD, Why.HELD)


STORED = replace(SOURCE, version=4, api_token="new-api-token")
PROVEN_NEW = Proof(Verdict.WORKS, NOW - timedelta(seconds=5))


def test_a_stored_replacement_waits_for_its_first_exchange() -> None:
    metadata = recorded(NOW - timedelta(minutes=1))

    unproven = plan(source=STORED, metadata=metadata, output_source_version=3)
    no_output = plan(
        source=STORED, metadata=metadata, output_source_version=3, api_token=PROVEN_NEW
    )

    assert unproven == LifecyclePlan(Step.NONE, Why.PENDING)
    assert no_output == LifecyclePlan(Step.NONE, Why.PENDING)


def test_a_proven_replacement_clears_its_record() -> None:
    metadata = recorded(NOW - timedelta(minutes=1))

    result = plan(source=STORED, metadata=metadata, output_source_version=4, api_token=PROVEN_NEW)

    assert result == LifecyclePlan(Step.CLEAR, Why.DONE)


def test_a_source_written_since_the_record_with_the_old_token_still_in_it_is_no_replacement() -> (
    None
):
    """Another write (an expiry recorded, an admin's edit) moves the version, not the token."""
    metadata = recorded(NOW - timedelta(minutes=1))
    moved = replace(SOURCE, version=4)
    rejected_since = Proof(Verdict.REJECTED, NOW - timedelta(seconds=5))

    result = plan(
        source=moved, metadata=metadata, output_source_version=4, api_token=rejected_since
    )

    assert result == LifecyclePlan(Step.REPLACE, Why.LOST)


def test_a_record_whose_old_token_still_works_never_happened() -> None:
    metadata = recorded(NOW - timedelta(minutes=5))

    assert plan(metadata=metadata, api_token=WORKS) == LifecyclePlan(Step.CLEAR, Why.NEVER_HAPPENED)


def test_a_record_with_nothing_known_since_proves_the_token_first() -> None:
    metadata = recorded(NOW - timedelta(minutes=5))
    before = Proof(Verdict.WORKS, NOW - timedelta(minutes=6))  # from before the record

    assert plan(metadata=metadata, api_token=before) == LifecyclePlan(Step.PROVE, Why.UNPROVEN)


def test_a_lost_replacement_is_replaced_again_at_once_the_first_time() -> None:
    metadata = recorded(NOW - timedelta(seconds=30), attempts=1)
    rejected_since = Proof(Verdict.REJECTED, NOW - timedelta(seconds=5))

    assert plan(metadata=metadata, api_token=rejected_since) == LifecyclePlan(
        Step.REPLACE, Why.LOST
    )


def test_a_rejection_from_before_the_record_proves_nothing_about_it() -> None:
    metadata = recorded(NOW - timedelta(seconds=30), attempts=1)

    assert plan(metadata=metadata, api_token=REJECTED).step is Step.PROVE


def test_lost_replacements_again_and_again_back_off_up_to_the_hour() -> None:
    for attempts, delay in enumerate([*RECOVERY_DELAYS, REPLACEMENT_INTERVAL], start=1):
        since = NOW - timedelta(seconds=10)
        metadata = recorded(since, attempts=attempts)
        rejected_since = Proof(Verdict.REJECTED, NOW - timedelta(seconds=5))
        result = plan(metadata=metadata, api_token=rejected_since)
        if delay <= timedelta(seconds=10):
            assert result.step is Step.REPLACE, attempts
        else:
            assert result == LifecyclePlan(Step.WAIT, Why.LOST, since + delay), attempts


def test_a_lost_replacement_of_a_token_no_longer_managed_is_left_alone() -> None:
    metadata = recorded(NOW - timedelta(minutes=5))
    unmanaged = replace(SOURCE, technical_user_id=None)

    rejected_since = Proof(Verdict.REJECTED, NOW - timedelta(seconds=5))
    assert plan(source=unmanaged, metadata=metadata, api_token=rejected_since).step is Step.NONE


# --- api_token_next -------------------------------------------------------------------------------


def test_a_rejected_token_with_a_working_next_is_promoted() -> None:
    staged = replace(SOURCE, api_token_next="next-api-token")

    result = plan(source=staged, api_token=REJECTED, next_token=WORKS)

    assert result == LifecyclePlan(Step.PROMOTE, Why.PROMOTE)


@pytest.mark.parametrize(
    ("current", "following"),
    [(WORKS, WORKS), (REJECTED, REJECTED), (REJECTED, UNPROVEN), (UNPROVEN, WORKS)],
    ids=["both-work", "both-rejected", "next-unknown", "current-unknown"],
)
def test_next_is_promoted_only_when_the_token_is_rejected_and_next_works(
    current: Proof, following: Proof
) -> None:
    staged = replace(SOURCE, api_token_next="next-api-token")

    assert plan(source=staged, api_token=current, next_token=following).step is not Step.PROMOTE


def test_promotion_works_for_a_token_rotator_does_not_replace() -> None:
    staged = replace(SOURCE, api_token_next="next-api-token", technical_user_id=None)

    assert plan(source=staged, api_token=REJECTED, next_token=WORKS).step is Step.PROMOTE


# --- the record -----------------------------------------------------------------------------------


def test_the_record_counts_attempts_and_clears_without_touching_other_keys() -> None:
    first = intent_metadata({"owner": "ops"}, NOW, "old-api-token")
    second = intent_metadata(first, NOW + DAY, "old-api-token")

    assert read_intent(first) == Intent(NOW, fingerprint("old-api-token"), 1)
    assert read_intent(second) == Intent(NOW + DAY, fingerprint("old-api-token"), 2)
    assert "old-api-token" not in str(second)  # a fingerprint, never the token
    done = stored_metadata(second, NOW + DAY)
    assert replaced_at(done) == NOW + DAY
    assert cleared_metadata(done) == {
        "owner": "ops",
        REPLACED_KEY: format_time(NOW + DAY),
        ATTEMPTED_KEY: format_time(NOW + DAY),
    }


def test_a_cleared_attempt_still_counts_for_the_hour() -> None:
    """A replacement that never happened (its old token works) still started: the next waits."""
    started = NOW - timedelta(minutes=10)
    cleared = cleared_metadata(recorded(started))

    assert last_attempt(cleared) == started
    assert plan(requested=True, metadata=cleared) == LifecyclePlan(
        Step.WAIT, Why.HOUR, started + REPLACEMENT_INTERVAL
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {INTENT_KEY: "soon", INTENT_FROM_KEY: "abc"},
        {INTENT_KEY: "2026-12-01T12:00:00Z"},
        {INTENT_KEY: "2026-12-01T12:00:00Z", INTENT_FROM_KEY: ""},
        {INTENT_KEY: "2026-12-01T12:00:00Z", INTENT_FROM_KEY: "abc", ATTEMPTS_KEY: "none"},
    ],
    ids=["none", "bad-time", "no-token", "empty-token", "bad-attempts"],
)
def test_a_record_rotator_cannot_read_is_no_record(metadata: dict[str, str]) -> None:
    assert read_intent(metadata) is None


def test_a_proof_counts_only_after_the_moment_asked_about() -> None:
    assert WORKS.since(NOW - timedelta(minutes=2)) is Verdict.WORKS
    assert WORKS.since(NOW) is Verdict.UNKNOWN
    assert UNPROVEN.since(NOW - DAY) is Verdict.UNKNOWN


def test_replace_every_without_any_known_baseline_waits_for_one() -> None:
    rules = LifecycleRules(replace_every=20 * DAY, replace_before_expiry=None)

    assert plan(rules, created=None) == LifecyclePlan(Step.NONE, Why.NOTHING)


def test_clearing_without_a_record_changes_nothing_else() -> None:
    assert cleared_metadata({"owner": "ops"}) == {"owner": "ops"}
