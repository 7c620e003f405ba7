"""What rotator remembers beyond Vault: rotator.memory. Failures, held tokens, one lock each."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rotator.memory import TokenMemory
from rotator.outcome import FailureKind
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
