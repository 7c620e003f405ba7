"""What rotator keeps in Vault beside the tokens: rotator.records, pure. Ownership, the write
protocol's metadata, and the claims, each without a server (tests/integration/test_vault.py
runs the same rules against a real OpenBao)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.records import (
    MAC_FIELD,
    MAX_CLAIM_LEASE,
    RELEASED_UNTIL,
    VOUCH_KEY,
    WRITER_ID,
    Claim,
    OutputMetadata,
    SecretVersion,
    claim_lease,
    claim_record,
    claim_taken,
    is_claimed_by_another,
    output_fields,
    output_key,
    record,
    release_record,
    settled_output_version,
)
from rotator.tokens import ISSUANCE_LOG_KEY, ISSUANCE_LOGGED_KEY, MAX_CLOCK_SKEW, AccessToken

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
KEY = output_key("the-api-token")
OTHER_KEY = output_key("another-api-token")


def token(value: str = "first.token.sig", issued_at: datetime = T0) -> AccessToken:
    return AccessToken(value, "bearer", 3599, issued_at, issued_at + timedelta(seconds=3599), 1)


def written(
    tok: AccessToken, version: int = 1, previous: AccessToken | None = None, key: bytes = KEY
) -> SecretVersion:
    """An output as rotator's write protocol leaves it."""
    metadata: dict[str, str] = {}
    if previous is not None:
        metadata = record(metadata, previous, version - 1, key)
    return SecretVersion(output_fields(tok, key), version, record(metadata, tok, version, key))


def listed(secret: SecretVersion) -> OutputMetadata:
    """`secret`'s metadata as the check's listing shows it."""
    return OutputMetadata(secret.version, secret.custom_metadata, ())


# --- ownership ------------------------------------------------------------------------------------


def test_an_output_rotator_wrote_is_its_own() -> None:
    assert written(token()).written_by_rotator(KEY)


def test_the_mac_is_of_the_token_and_never_the_token() -> None:
    data = output_fields(token(), KEY)

    assert data == {**token().fields(), MAC_FIELD: data[MAC_FIELD]}
    assert token().access_token not in data[MAC_FIELD]
    assert output_fields(token(), OTHER_KEY)[MAC_FIELD] != data[MAC_FIELD]


def test_an_output_whose_token_someone_replaced_is_foreign() -> None:
    ours = written(token())
    forged = SecretVersion({**ours.data, "access_token": "forged.value"}, 2, ours.custom_metadata)

    assert not forged.written_by_rotator(KEY)


def test_a_mac_made_with_another_key_or_an_unknown_one_is_foreign() -> None:
    ours = written(token(), key=OTHER_KEY)

    assert not ours.written_by_rotator(KEY)
    assert not ours.written_by_rotator(None)


def test_a_mac_that_is_not_text_is_foreign() -> None:
    ours = written(token())

    assert not SecretVersion({**ours.data, MAC_FIELD: 7}, 1, {}).written_by_rotator(KEY)


def test_an_output_without_a_mac_or_rotators_metadata_is_foreign() -> None:
    assert not SecretVersion(token().fields(), 1, {}).written_by_rotator(KEY)
    other = {"written_by": "someone-else", "fingerprint": token().fingerprint}
    assert not SecretVersion(token().fields(), 1, other).written_by_rotator(KEY)


def test_an_output_an_older_rotator_announced_is_its_own_until_written_again() -> None:
    """Before MACs, rotator announced the token's fingerprint in the metadata first."""
    legacy = {"written_by": WRITER_ID, "fingerprint": "x", "previous_fingerprint": "-"}
    announced = {**legacy, "fingerprint": token().fingerprint}

    assert SecretVersion(token().fields(), 1, announced).written_by_rotator(None)
    assert not SecretVersion({"note": "no token"}, 1, legacy).written_by_rotator(None)
    assert "fingerprint" not in record(announced, token(), 2, KEY)


def test_a_deleted_output_is_nobodys_forgery() -> None:
    assert SecretVersion({}, 3, {}, deleted=True).written_by_rotator(None)


def test_the_version_an_output_was_exchanged_from() -> None:
    assert written(token()).source_version == 1
    assert SecretVersion({"source_version": True}, 1, {}).source_version is None


# --- vouching from metadata -----------------------------------------------------------------------


def test_metadata_vouches_for_the_version_rotator_wrote() -> None:
    metadata = listed(written(token(), 4))

    assert metadata.vouched_source_version == 1
    assert metadata.vouched(KEY)
    assert not metadata.vouched(OTHER_KEY)
    assert not metadata.vouched(None)


def test_a_newer_version_than_vouched_for_is_not_vouched() -> None:
    """Someone wrote the data after rotator (the metadata stays as rotator left it)."""
    ours = written(token(), 4)

    assert not OutputMetadata(5, ours.custom_metadata, ()).vouched(KEY)


def test_changed_times_or_a_garbled_vouch_are_not_vouched() -> None:
    ours = written(token(), 4).custom_metadata

    later = {**ours, "expires_at": "2026-11-29T23:00:00Z"}
    assert not OutputMetadata(4, later, ()).vouched(KEY)
    for garbled in ("", "1.4", "x.4.abc", "1.4.abc"):
        assert not OutputMetadata(4, {**ours, VOUCH_KEY: garbled}, ()).vouched(KEY), garbled
    assert not OutputMetadata(4, {VOUCH_KEY: ours[VOUCH_KEY]}, ()).vouched(KEY)


# --- the recorded metadata ------------------------------------------------------------------------


def test_record_adds_expiry_the_issuance_and_the_vouch() -> None:
    recorded = record({"team": "kept"}, token(), 1, KEY)

    assert recorded["team"] == "kept"
    assert recorded["written_by"] == WRITER_ID
    assert recorded["issued_at"] == "2026-11-29T12:00:00Z"
    assert recorded["expires_at"] == "2026-11-29T12:59:59Z"
    assert recorded[ISSUANCE_LOGGED_KEY] == token().fingerprint
    assert recorded[VOUCH_KEY].startswith("1.1.")
    assert SecretVersion({}, 1, recorded).issuances(T0) == (
        T0 + timedelta(minutes=1) + MAX_CLOCK_SKEW,
    )


def test_writing_the_same_token_back_is_no_new_issuance() -> None:
    once = record({}, token(), 1, KEY)

    again = record(once, token(), 2, KEY)

    assert again[ISSUANCE_LOG_KEY] == once[ISSUANCE_LOG_KEY]


def test_each_new_token_is_one_more_issuance() -> None:
    later = token("second.token.sig", T0 + timedelta(minutes=5))

    recorded = written(later, 2, previous=token()).custom_metadata

    assert len(SecretVersion({}, 2, recorded).issuances(T0 + timedelta(minutes=5)) or ()) == 2


def test_metadata_knows_the_recorded_expiry_and_counts_by_log_or_history() -> None:
    recorded = record({}, token(), 1, KEY)
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
