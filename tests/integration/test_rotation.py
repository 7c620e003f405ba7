"""The rotation executor against a real OpenBao and the stand-in: what it refuses before it
reads or writes anything, and how many exchanges it has in flight."""

from __future__ import annotations

import pytest

from rotator.dev.standin import LeanIXStandIn
from rotator.exchange import TokenExchanger
from rotator.outcome import FailureKind, State
from rotator.rotation import Rotator
from tests.conftest import VaultSpace


@pytest.mark.parametrize("name", ["team/../other", "./other", "team//other", "/other", "a\x00b"])
def test_a_name_that_would_address_another_secret_is_refused_before_any_request(
    vault_space: VaultSpace, standin: LeanIXStandIn, name: str
) -> None:
    standin.add_token("api-token-of-other")
    vault_space.write_source(
        "other", {"api_token": "api-token-of-other", "token_url": standin.token_url}
    )
    rotator = Rotator(
        vault_space.config(), vault_space.store(), TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5)
    )

    outcome = rotator.rotate_one(name, force=True)

    assert (outcome.state, outcome.error_kind) == (State.INVALID_SOURCE, FailureKind.INVALID_SOURCE)
    assert standin.requests_total == 0
    assert vault_space.read_output("other") is None  # `other` was never rotated through it
    assert rotator.inspect(name).state is State.INVALID_SOURCE
    rotator.exchanger.close()


def _rotator(
    vault_space: VaultSpace, standin: LeanIXStandIn, names: list[str], workers: int
) -> Rotator:
    for name in names:
        api_token = f"api-token-{name}"
        standin.add_token(api_token)
        vault_space.write_source(name, {"api_token": api_token, "token_url": standin.token_url})
    config = vault_space.config(exchange={"max_workers": workers})
    return Rotator(config, vault_space.store(), TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5))


def test_a_cycle_works_on_twice_max_workers_tokens_but_never_has_more_at_the_idp(
    vault_space: VaultSpace, standin: LeanIXStandIn
) -> None:
    names = [f"fleet/t{index}" for index in range(12)]
    rotator = _rotator(vault_space, standin, names, workers=3)
    standin.latency_seconds = 0.2  # exchanges overlap for sure

    outcomes = rotator.run_cycle(force=True)

    assert [outcome.state for outcome in outcomes] == [State.REFRESHED] * 12
    assert standin.max_in_flight == 3
    rotator.exchanger.close()


def test_a_token_that_finds_no_exchange_slot_in_time_fails_softly_and_sends_nothing(
    vault_space: VaultSpace, standin: LeanIXStandIn
) -> None:
    rotator = _rotator(vault_space, standin, ["acme/prod"], workers=1)
    rotator._slot_wait = 0.1  # instead of timeout + 10 s
    assert rotator.exchange_slots.acquire()  # a slow exchange holds the only slot

    outcome = rotator.rotate_one("acme/prod")

    assert (outcome.state, outcome.error_kind) == (State.FAILING, FailureKind.TRANSIENT)
    assert "no exchange slot" in (outcome.error or "")
    assert standin.requests_total == 0
    rotator.exchange_slots.release()
    assert rotator.rotate_one("acme/prod", force=True).state is State.REFRESHED  # past the backoff
    rotator.exchanger.close()
