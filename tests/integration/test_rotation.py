"""The rotation executor against a real OpenBao and the stand-in: what it refuses before it
reads or writes anything."""

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
