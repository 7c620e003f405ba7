"""What rotator remembers beyond Vault: rotator.memory. Failures, held tokens, one lock each,
and what Vault held when last seen."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rotator.memory import Listing, TokenMemory
from rotator.outcome import FailureKind
from rotator.records import OutputMetadata, SecretVersion, output_key
from rotator.tokens import AccessToken

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def token(issued_at: datetime = T0) -> AccessToken:
    return AccessToken(
        "held.token.sig", "bearer", 60, issued_at, issued_at + timedelta(minutes=1), 1
    )


def test_failures_count_up_per_kind_and_clear() -> None:
    memory = TokenMemory()

    memory.record_failure("acme", FailureKind.TRANSIENT, T0, 300, 0.0)
    second = memory.record_failure("acme", FailureKind.TRANSIENT, T0, 300, 0.0)

    assert second.count == 2 and memory.failure("acme") == second
    memory.clear_failure("acme")
    assert memory.failure("acme") is None


def test_clear_transient_forgets_only_outage_failures() -> None:
    memory = TokenMemory()
    memory.record_failure("outage", FailureKind.TRANSIENT, T0, 300, 0.0)
    memory.record_failure("write", FailureKind.VAULT_WRITE, T0, 300, 0.0)
    memory.record_failure("revoked", FailureKind.REJECTED, T0, 300, 0.0)

    assert memory.clear_transient() == ["outage", "write"]
    assert memory.failure("revoked") is not None and memory.failure("outage") is None


def test_a_held_token_is_given_back_until_it_expires() -> None:
    memory = TokenMemory()
    memory.hold("acme", token())

    assert memory.held("acme", T0 + timedelta(seconds=59)) == token()
    assert memory.held("acme", T0 + timedelta(seconds=60)) is None
    assert memory.held("acme", T0) is None  # dropped once seen expired


def test_forget_drops_failure_and_held_token() -> None:
    memory = TokenMemory()
    memory.hold("acme", token())
    memory.record_failure("acme", FailureKind.TRANSIENT, T0, 300, 0.0)

    memory.forget("acme")

    assert memory.failure("acme") is None and memory.held("acme", T0) is None


def test_each_token_has_one_lock_shared_by_every_caller() -> None:
    memory = TokenMemory()
    locks: list[threading.Lock] = []
    threads = [threading.Thread(target=lambda: locks.append(memory.lock("acme"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(lock) for lock in locks}) == 1
    assert memory.lock("other") is not locks[0]


# --- what Vault holds, as last seen -----------------------------------------------------------


def _source(version: int, api_token: str = "api-one") -> SecretVersion:
    return SecretVersion({"api_token": f" {api_token} "}, version, {})


def _output(version: int) -> SecretVersion:
    return SecretVersion({"access_token": "a.b.c"}, version, {"issued_at": "old"})


def test_a_source_is_current_only_while_the_last_listing_shows_its_version() -> None:
    memory = TokenMemory()
    memory.note_source("acme", _source(3))
    assert memory.current_source("acme") is None  # never listed: read it

    memory.note_listing("acme", Listing(3, None))
    assert memory.current_source("acme") == _source(3)

    memory.note_listing("acme", Listing(4, None))  # someone wrote version 4
    assert memory.current_source("acme") is None
    memory.note_source("acme", _source(4, "api-two"))  # read again: current once more
    assert memory.current_source("acme") == _source(4, "api-two")

    memory.forget_source("acme")  # this process wrote it
    assert memory.current_source("acme") is None and memory.source("acme") is None


def test_an_output_is_current_with_the_listed_metadata_while_its_version_holds() -> None:
    memory = TokenMemory()
    memory.note_output("acme", _output(5))
    assert memory.current_output("acme") == (False, None)  # never listed

    memory.note_listing("acme", Listing(3, OutputMetadata(5, {"issued_at": "new"}, ())))
    known, current = memory.current_output("acme")
    assert known and current == replace(_output(5), custom_metadata={"issued_at": "new"})

    memory.note_listing("acme", Listing(3, OutputMetadata(6, {}, ())))
    assert memory.current_output("acme") == (False, None)
    assert memory.output_version("acme") == 5


def test_a_write_or_read_makes_its_version_the_current_one() -> None:
    memory = TokenMemory()
    memory.note_listing("acme", Listing(3, OutputMetadata(5, {}, ())))

    memory.note_output("acme", _output(6))

    assert memory.current_output("acme") == (True, _output(6))
    memory.note_output("acme", None)  # read: there is none
    assert memory.current_output("acme") == (True, None)
    assert memory.output_version("acme") == 0
    assert memory.output_version("other") is None


def test_a_deleted_output_or_one_listed_as_absent_is_read_again() -> None:
    memory = TokenMemory()
    memory.note_listing("acme", Listing(3, None))
    memory.note_output("acme", replace(_output(5), deleted=True))
    assert memory.current_output("acme") == (False, None)

    memory.note_output("acme", _output(5))
    memory.note_listing("acme", Listing(3, None))  # deleted since, metadata and all
    assert memory.current_output("acme") == (False, None)


def test_mac_keys_are_kept_for_the_latest_source_versions_seen() -> None:
    memory = TokenMemory()
    for version in range(1, 7):
        memory.note_key("acme", _source(version, f"api-{version}"))
    memory.note_key("acme", SecretVersion({"api_token": 7}, 9, {}))  # not text: no key

    assert memory.key("acme", 6) == output_key("api-6")  # stripped, as the source parses it
    assert [memory.key("acme", v) is not None for v in range(1, 7)] == [False] * 2 + [True] * 4
    assert memory.key("acme", 9) is None


def test_forget_drops_what_was_seen_of_vault_too() -> None:
    memory = TokenMemory()
    memory.note_listing("acme", Listing(3, None))
    memory.note_source("acme", _source(3))
    memory.note_output("acme", _output(5))

    memory.forget("acme")

    assert memory.current_source("acme") is None and memory.output_version("acme") is None
    assert memory.key("acme", 3) is None


def test_after_a_vault_failure_nothing_is_current_until_listed_again() -> None:
    memory = TokenMemory()
    for name in ("acme", "beta"):
        memory.note_listing(name, Listing(3, None))
        memory.note_source(name, _source(3))

    memory.forget_listings("acme")
    assert memory.current_source("acme") is None and memory.current_source("beta") is not None
    memory.forget_listings()
    assert memory.current_source("beta") is None
