"""Claims between instances, in-process and interleaved on purpose: two Rotators on the same real
Vault and stand-in, one stepping in between the other's read and its claim."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotator.dev.standin import LeanIXStandIn
from rotator.exchange import TokenExchanger
from rotator.outcome import Reason, State
from rotator.records import SecretVersion
from rotator.rotation import Rotator
from rotator.vault import CLAIMS_ROOT, VaultStore
from tests.conftest import VaultSpace

API_TOKEN = "api-token-for-claim-tests"


class SteppedStore(VaultStore):
    """A real VaultStore that counts reads by kind and can run `after_first_output_read` right
    after its first output read returns: another instance acting between read and claim."""

    after_first_output_read: Callable[[], object] | None = None
    reads: Counter[str]

    def read_output(self, name: str) -> SecretVersion | None:
        secret = super().read_output(name)
        hook, self.after_first_output_read = self.after_first_output_read, None
        if hook is not None:
            hook()
        return secret

    def _read(self, path: str, **options: Any) -> SecretVersion | None:
        kind = "claim" if path.startswith(CLAIMS_ROOT) else "output"
        if path.startswith(self.source_prefix):
            kind = "source"
        self.reads[kind] += 1
        return super()._read(path, **options)


@pytest.fixture
def rotators(vault_space: VaultSpace, standin: LeanIXStandIn) -> Iterator[list[Rotator]]:
    standin.add_token(API_TOKEN)
    vault_space.write_source("shared", {"api_token": API_TOKEN, "token_url": standin.token_url})
    config = vault_space.config()
    made = []
    for _ in range(2):
        plain = vault_space.store()
        store = SteppedStore(
            plain._client, plain.mount, plain.source_prefix, plain.output_prefix, plain.auth
        )
        store.reads = Counter()
        exchanger = TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5)
        made.append(Rotator(config, store, exchanger))
    yield made
    for rotator in made:
        rotator.exchanger.close()


def _store(rotator: Rotator) -> SteppedStore:
    assert isinstance(rotator.store, SteppedStore)
    return rotator.store


def test_an_instance_that_read_before_anothers_write_does_not_issue_again(
    rotators: list[Rotator], standin: LeanIXStandIn, vault_space: VaultSpace
) -> None:
    first, second = rotators
    # `second` reads "no output yet"; before it claims, `first` does a whole rotation.
    _store(second).after_first_output_read = lambda: first.rotate_one("shared")

    outcome = second.rotate_one("shared")

    assert standin.issued_count(API_TOKEN) == 1
    assert outcome.state is State.FRESH and outcome.reason is Reason.REFRESHED_ELSEWHERE
    assert outcome.output is not None
    stored = vault_space.read_output("shared")
    assert stored is not None and isinstance(stored["data"], dict)
    assert outcome.output.access_token == stored["data"]["access_token"]


def test_the_first_claim_on_a_token_needs_no_second_look(
    rotators: list[Rotator], standin: LeanIXStandIn
) -> None:
    first, _ = rotators

    assert first.rotate_one("shared").state is State.REFRESHED

    # No claim existed and the check-and-set at 0 won: no instance ever exchanged this token
    # under a claim, so the output read before claiming is still the latest.
    assert _store(first).reads == Counter({"source": 1, "output": 1, "claim": 1})
    assert standin.issued_count(API_TOKEN) == 1


def test_a_claim_is_read_every_time_so_no_instance_keeps_a_token_for_good(
    rotators: list[Rotator], standin: LeanIXStandIn
) -> None:
    first, _ = rotators
    assert first.rotate_one("shared", force=True).state is State.REFRESHED
    reads = _store(first).reads
    reads.clear()

    outcome = first.rotate_one("shared", force=True)

    # Its own last release recorded the output version it has just read: no output re-read.
    # The claim is read all the same; skipping that would let this instance win every race.
    assert outcome.state is State.REFRESHED
    assert standin.issued_count(API_TOKEN) == 2
    assert reads == Counter({"source": 1, "output": 1, "claim": 1})


def test_after_another_instance_rotated_the_output_is_not_read_twice(
    rotators: list[Rotator], standin: LeanIXStandIn
) -> None:
    first, second = rotators
    assert first.rotate_one("shared", force=True).state is State.REFRESHED
    assert second.rotate_one("shared", force=True).state is State.REFRESHED
    reads = _store(first).reads
    reads.clear()

    outcome = first.rotate_one("shared", force=True)

    # `second`'s release recorded the version `first` has just read: no output re-read.
    assert outcome.state is State.REFRESHED
    assert standin.issued_count(API_TOKEN) == 3
    assert reads == Counter({"source": 1, "output": 1, "claim": 1})
