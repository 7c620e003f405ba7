"""What rotator keeps in Vault beside the tokens: rotator.records, pure. Ownership, the write
protocol's metadata, and the claims, each without a server (tests/integration/test_vault.py
runs the same rules against a real OpenBao)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.records import (
    MAX_CLAIM_LEASE,
    NO_FINGERPRINT,
    RELEASED_UNTIL,
    WRITER_ID,
    Claim,
    OutputMetadata,
    SecretVersion,
    announce,
    claim_lease,
    claim_record,
    claim_taken,
    is_claimed_by_another,
    record,
    release_record,
    settled_output_version,
)
from rotator.tokens import ISSUANCE_LOG_KEY, ISSUANCE_LOGGED_KEY, MAX_CLOCK_SKEW, AccessToken

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def token(value: str = "first.token.sig", issued_at: datetime = T0) -> AccessToken:
    return AccessToken(value, "bearer", 3599, issued_at, issued_at + timedelta(seconds=3599), 1)


def written(
    tok: AccessToken, version: int = 1, previous: AccessToken | None = None
) -> SecretVersion:
    """An output as rotator's write protocol leaves it."""
    metadata = record(announce(None, previous or tok), previous or tok)
    if previous is not None:
        metadata = record(announce(SecretVersion(previous.fields(), 1, metadata), tok), tok)
    return SecretVersion(tok.fields(), version, metadata)


# --- ownership ------------------------------------------------------------------------------------


def test_an_output_rotator_wrote_is_its_own() -> None:
    assert written(token()).written_by_rotator


def test_an_output_whose_data_someone_replaced_is_foreign() -> None:
    ours = written(token())
    forged = SecretVersion({**ours.data, "access_token": "forged.value"}, 2, ours.custom_metadata)

    assert not forged.written_by_rotator


def test_an_output_without_rotators_metadata_is_foreign() -> None:
    assert not SecretVersion(token().fields(), 1, {}).written_by_rotator
    other = {"written_by": "someone-else", "fingerprint": token().fingerprint}
    assert not SecretVersion(token().fields(), 1, other).written_by_rotator


def test_a_write_seen_half_way_is_still_rotators_own() -> None:
    """Announced but not yet written: the data still holds the previous token."""
    first = written(token())
    announced = announce(first, token("second.token.sig"))

    half_way = SecretVersion(first.data, 1, announced)

    assert half_way.written_by_rotator
    assert SecretVersion(token("second.token.sig").fields(), 2, announced).written_by_rotator


def test_restoring_over_a_forgery_never_announces_the_forged_value() -> None:
    ours = written(token())
    forged = SecretVersion({**ours.data, "access_token": "forged.value"}, 2, ours.custom_metadata)

    announced = announce(forged, token("restored.token.sig"))

    assert announced["previous_fingerprint"] == token().fingerprint
    assert not SecretVersion(forged.data, 2, announced).written_by_rotator


def test_the_first_write_announces_no_previous_token() -> None:
    announced = announce(None, token())

    assert announced == {
        "written_by": WRITER_ID,
        "fingerprint": token().fingerprint,
        "previous_fingerprint": NO_FINGERPRINT,
    }


def test_a_placeholder_fingerprint_never_makes_an_output_rotators() -> None:
    metadata = {"written_by": WRITER_ID, "fingerprint": "x", "previous_fingerprint": "-"}

    assert not SecretVersion({"note": "no token"}, 1, metadata).written_by_rotator


# --- the recorded metadata ------------------------------------------------------------------------


def test_record_keeps_the_announcement_and_adds_expiry_and_the_issuance() -> None:
    announced = announce(None, token())

    recorded = record(announced, token())

    assert recorded["issued_at"] == "2026-11-29T12:00:00Z"
    assert recorded["expires_at"] == "2026-11-29T12:59:59Z"
    assert recorded[ISSUANCE_LOGGED_KEY] == token().fingerprint
    assert SecretVersion({}, 1, recorded).issuances(T0) == (
        T0 + timedelta(minutes=1) + MAX_CLOCK_SKEW,
    )
    assert {key: recorded[key] for key in announced} == announced


def test_writing_the_same_token_back_is_no_new_issuance() -> None:
    once = record(announce(None, token()), token())

    again = record(announce(SecretVersion(token().fields(), 1, once), token()), token())

    assert again[ISSUANCE_LOG_KEY] == once[ISSUANCE_LOG_KEY]


def test_each_new_token_is_one_more_issuance() -> None:
    later = token("second.token.sig", T0 + timedelta(minutes=5))

    recorded = written(later, 2, previous=token()).custom_metadata

    assert len(SecretVersion({}, 2, recorded).issuances(T0 + timedelta(minutes=5)) or ()) == 2


def test_metadata_knows_the_recorded_expiry_and_counts_by_log_or_history() -> None:
    recorded = record(announce(None, token()), token())
    history = (T0 - timedelta(minutes=3), T0)

    assert OutputMetadata(1, recorded, history).expires_at == T0 + timedelta(seconds=3599)
    assert OutputMetadata(1, recorded, history).issuances(T0) == (
        T0 + timedelta(minutes=1) + MAX_CLOCK_SKEW,
    )
    assert OutputMetadata(1, {}, history).issuances(T0) == history
    assert OutputMetadata(1, {"expires_at": "yesterday"}, ()).expires_at is None


# --- claims ---------------------------------------------------------------------------------------


def claim_secret(owner: str, until: datetime, version: int = 1, **extra: object) -> SecretVersion:
    return SecretVersion({**claim_record(owner, until), **extra}, version, {})


def test_another_owners_live_claim_blocks() -> None:
    existing = claim_secret("one", T0 + timedelta(seconds=30))

    assert is_claimed_by_another(existing, "two", T0 + timedelta(seconds=29))
    assert not is_claimed_by_another(existing, "two", T0 + timedelta(seconds=30))


def test_an_owners_own_claim_never_blocks_it() -> None:
    assert not is_claimed_by_another(claim_secret("one", T0 + timedelta(hours=1)), "one", T0)


def test_no_claim_and_an_unreadable_claim_block_nobody() -> None:
    assert not is_claimed_by_another(None, "two", T0)
    broken = SecretVersion({"owner": "one", "until": "soon"}, 1, {})
    assert not is_claimed_by_another(broken, "two", T0)


def test_a_released_claim_is_lapsed_and_records_the_output_version() -> None:
    released = SecretVersion(release_record("one", 7), 2, {})

    assert released.data["until"] == RELEASED_UNTIL
    assert not is_claimed_by_another(released, "two", T0)
    assert settled_output_version(released) == 7


def test_the_first_claim_ever_knows_nobody_wrote_under_one() -> None:
    first = claim_taken(None, 1)

    assert first == Claim(1, None, first=True)
    assert not first.output_may_have_changed(0)


def test_a_claim_over_one_never_released_must_read_again() -> None:
    taken = claim_taken(claim_secret("one", T0), 2)

    assert taken.settled_output_version is None
    assert taken.output_may_have_changed(0) and taken.output_may_have_changed(5)


def test_a_claim_over_a_release_reads_again_only_if_the_output_moved() -> None:
    taken = claim_taken(SecretVersion(release_record("one", 7), 2, {}), 3)

    assert not taken.output_may_have_changed(7)
    assert taken.output_may_have_changed(6)


def test_a_settled_version_that_is_not_an_integer_is_unknown() -> None:
    for value in ("7", True, None, 7.0):
        assert settled_output_version(SecretVersion({"output_version": value}, 1, {})) is None
    assert settled_output_version(None) is None


def test_a_claim_further_ahead_than_any_rotator_writes_is_not_honoured() -> None:
    """A forged or clock-skewed far-future claim must not block refreshes until then."""
    forged = claim_secret("one", T0 + MAX_CLAIM_LEASE + timedelta(seconds=1))
    longest = claim_secret("one", T0 + MAX_CLAIM_LEASE)

    assert not is_claimed_by_another(forged, "two", T0)
    assert is_claimed_by_another(longest, "two", T0)


def test_the_longest_claim_is_the_longest_timeout_s_lease_plus_the_clock_skew() -> None:
    assert claim_lease(10) == timedelta(seconds=45)
    assert claim_lease(300) + MAX_CLOCK_SKEW == MAX_CLAIM_LEASE
