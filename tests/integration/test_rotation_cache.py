"""Fewer Vault round trips (issue 14), in-process: a `Rotator` on the real dev vault and stand-in
that trusts what the daemon's check listed (`memory.Listing`) instead of reading again, and what
happens when that listing is stale; MACs from earlier source versions; `join_once` and claims.

Every Vault request rotator makes goes through `VaultStore._call` (the detailed listings aside,
which the tests make themselves), so a subclass counting there sees every read and write."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator import peers
from rotator.dev.standin import LeanIXStandIn
from rotator.exchange import TokenExchanger
from rotator.memory import Listing
from rotator.outcome import Reason, State
from rotator.records import MAC_FIELD, output_key
from rotator.rotation import Rotator
from rotator.vault import CLAIMS_ROOT, INSTANCES_ROOT, VaultStore
from tests.conftest import VaultSpace

NAME = "acme/prod"


class CountingStore(VaultStore):
    """A real VaultStore that counts every request it makes by (action, kind of path), and
    records the check-and-set version of every output data write."""

    calls: Counter[tuple[str, str]]
    output_cas: list[int]

    def _call(self, action: str, path: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        if action == "read" and kwargs.get("version") is not None:
            action = "read version"
        self.calls[(action, self._kind(path))] += 1
        return super()._call(action, path, method, **kwargs)

    def write_output_data(self, name: str, fields: Any, cas: int) -> int:
        self.output_cas.append(cas)
        return super().write_output_data(name, fields, cas)

    def _kind(self, path: str) -> str:
        if path.startswith(CLAIMS_ROOT + "/"):
            return "claim"
        if path.startswith(INSTANCES_ROOT + "/"):
            return "registry"
        if path.startswith(self.source_prefix + "/"):
            return "source"
        if path.startswith(self.output_prefix + "/"):
            return "output"
        return path

    def reset(self) -> None:
        self.calls.clear()
        self.output_cas.clear()


class Scene:
    """One token's source at the stand-in and in Vault, and the rotators made on them."""

    def __init__(self, space: VaultSpace, standin: LeanIXStandIn) -> None:
        self.space = space
        self.standin = standin
        self.api_token = self.new_api_token()
        self.source_version = self.write_source(self.api_token)
        self.exchanges: list[str] = []
        self.made: list[Rotator] = []

    def new_api_token(self) -> str:
        api_token = "api-" + secrets.token_urlsafe(24)
        self.standin.add_token(api_token)
        return api_token

    def write_source(self, api_token: str) -> int:
        return self.space.write_source(
            NAME, {"api_token": api_token, "token_url": self.standin.token_url}
        )

    def rotator(self) -> Rotator:
        """A fresh rotator (its own memory: a process of its own) on a counting store."""
        plain = self.space.store()
        store = CountingStore(
            plain._client, plain.mount, plain.source_prefix, plain.output_prefix, plain.auth
        )
        store.calls, store.output_cas = Counter(), []
        exchanger = TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5)
        made = Rotator(
            self.space.config(),
            store,
            exchanger,
            on_exchange=lambda _name, result, _seconds: self.exchanges.append(result),
        )
        self.made.append(made)
        return made

    def output(self) -> dict[str, Any]:
        stored = self.space.read_output(NAME)
        assert stored is not None
        return stored


def _store(rotator: Rotator) -> CountingStore:
    assert isinstance(rotator.store, CountingStore)
    return rotator.store


def _note_listing(rotator: Rotator) -> None:
    """What the daemon's check does before the token jobs run: one listing of the sources' and
    the outputs' metadata, noted in memory."""
    store = rotator.store
    sources, outputs = store.list_source_versions(), store.list_output_metadata()
    assert sources is not None and outputs is not None  # OpenBao has the detailed listing
    for name, version in sources.items():
        rotator.memory.note_listing(name, Listing(version, outputs.get(name)))


@pytest.fixture
def scene(vault_space: VaultSpace, standin: LeanIXStandIn) -> Iterator[Scene]:
    made = Scene(vault_space, standin)
    yield made
    for rotator in made.made:
        rotator.exchanger.close()


@pytest.fixture
def alone(scene: Scene) -> Rotator:
    """A rotator that has rotated NAME once, knows it is alone, and has the check's listing."""
    rotator = scene.rotator()
    rotator.join_once()
    assert not rotator.team.claims
    assert rotator.rotate_one(NAME, force=True).state is State.REFRESHED
    _note_listing(rotator)
    _store(rotator).reset()
    return rotator


def test_a_listed_token_is_rotated_without_reading_its_source_or_output(
    alone: Rotator, scene: Scene
) -> None:
    outcome = alone.rotate_one(NAME, force=True)

    assert outcome.state is State.REFRESHED and outcome.version == 2
    store = _store(alone)
    # One data write (check-and-set against the version the listing vouched for), one metadata
    # write, and nothing read: neither the source nor the output.
    assert store.calls == Counter({("write", "output"): 1, ("write metadata of", "output"): 1})
    assert store.output_cas == [1]
    assert scene.standin.issued_count(scene.api_token) == 2
    stored = scene.output()
    assert stored["metadata"]["version"] == 2
    assert stored["data"]["access_token"] == outcome.output.access_token  # type: ignore[union-attr]
    assert MAC_FIELD in stored["data"]


def test_a_stale_cached_source_is_read_again_once_its_api_token_is_rejected(
    alone: Rotator, scene: Scene
) -> None:
    # The operator replaces the API token after the listing; the old one stops working.
    new_api_token = scene.new_api_token()
    new_version = scene.write_source(new_api_token)
    scene.standin.revoke(scene.api_token)
    old_requests = scene.standin.requests_for(scene.api_token)

    outcome = alone.rotate_one(NAME, force=True)

    # The cached (listed) source was used first: the old token was sent, and refused.
    assert scene.standin.requests_for(scene.api_token) == old_requests + 1
    assert scene.standin.issued_count(new_api_token) == 1
    assert outcome.state is State.REFRESHED, outcome
    assert outcome.reason is Reason.FORCED
    assert alone.memory.failure(NAME) is None
    stored = scene.output()
    assert stored["data"]["source_version"] == new_version == 2
    assert outcome.output is not None and outcome.output.source_version == new_version
    calls = _store(alone).calls
    assert calls[("read", "source")] >= 1, calls
    print("stale source: requests", dict(calls), "exchange results", scene.exchanges[-2:])
    # The output written carries the new API token's MAC, so it is rotator's own.
    view = alone.view(NAME, alone.store.read_output(NAME))
    assert not view.foreign and view.token is not None


def test_a_stale_cached_output_loses_its_check_and_set_and_is_read_again(
    alone: Rotator, scene: Scene
) -> None:
    # Someone writes the output after the listing (a foreign write: no MAC).
    forged = {**scene.output()["data"], "access_token": "forged.header.signature"}
    forged.pop(MAC_FIELD)
    scene.space.root.secrets.kv.v2.create_or_update_secret(
        f"{scene.space.output_prefix}/{NAME}", secret=forged, mount_point="secret"
    )
    store = _store(alone)

    failed = alone.rotate_one(NAME, force=True)

    # The write named the listed version 1 and lost; nothing was overwritten blindly.
    assert store.output_cas == [1]
    assert failed.state is State.FAILING and failed.error == "output changed during the write"
    stored = scene.output()
    assert stored["metadata"]["version"] == 2
    assert stored["data"]["access_token"] == "forged.header.signature"
    # The conflict made rotator read the output as it is now.
    assert store.calls[("read", "output")] == 1, store.calls
    assert alone.memory.output_version(NAME) == 2
    store.reset()

    restored = alone.rotate_one(NAME, force=True)

    # The next write is against the foreign version that was read (a restore), not a blind one.
    assert store.output_cas == [2]
    assert restored.state is State.REFRESHED and restored.foreign_write
    stored = scene.output()
    assert stored["metadata"]["version"] == 3 and MAC_FIELD in stored["data"]
    assert stored["data"]["access_token"] == restored.output.access_token  # type: ignore[union-attr]
    print("after the conflict: the next pass's requests", dict(store.calls))


def test_an_output_exchanged_from_an_earlier_source_version_is_still_rotators_own(
    scene: Scene,
) -> None:
    first = scene.rotator()
    first.join_once()
    assert first.rotate_one(NAME, force=True).state is State.REFRESHED
    # The API token is replaced; the output (from version 1) is not rewritten yet.
    new_api_token = scene.new_api_token()
    assert scene.write_source(new_api_token) == 2
    output = first.store.read_output(NAME)
    assert output is not None and output.source_version == 1
    # The MAC is made with version 1's API token, not the current one's.
    assert output.written_by_rotator(output_key(scene.api_token))
    assert not output.written_by_rotator(output_key(new_api_token))

    restarted = scene.rotator()  # a new process: no MAC key in memory
    view = restarted.view(NAME, output)

    assert not view.foreign and view.trusted is not None
    assert _store(restarted).calls == Counter({("read version", "source"): 1})
    inspected = restarted.inspect(NAME)
    assert not inspected.foreign_write and inspected.reason is not Reason.FOREIGN_WRITE
    restarted.join_once()
    outcome = restarted.rotate_one(NAME)
    assert outcome.state is State.REFRESHED and outcome.reason is Reason.SOURCE_CHANGED
    assert not outcome.foreign_write
    assert scene.output()["data"]["source_version"] == 2
    assert scene.standin.issued_count(new_api_token) == 1


def _claim_requests(calls: Counter[tuple[str, str]]) -> Counter[str]:
    return Counter({action: count for (action, kind), count in calls.items() if kind == "claim"})


def test_join_once_claims_only_when_another_instance_is_live(scene: Scene) -> None:
    rotator = scene.rotator()
    store = _store(rotator)
    now = datetime.now(UTC)

    rotator.join_once()
    assert not rotator.team.others and not rotator.team.claims
    assert rotator.rotate_one(NAME, force=True).state is State.REFRESHED
    assert _claim_requests(store.calls) == Counter()

    # An announcement whose lease has ended counts for nothing.
    store.announce_instance("lapsed", peers.announcement(now - timedelta(hours=1), 60))
    rotator.join_once()
    assert not rotator.team.claims
    store.reset()
    assert rotator.rotate_one(NAME, force=True).state is State.REFRESHED
    assert _claim_requests(store.calls) == Counter()

    store.announce_instance("other", peers.announcement(now, 60))
    rotator.join_once()
    assert rotator.team.others == ("other",) and rotator.team.claims
    store.reset()

    outcome = rotator.rotate_one(NAME, force=True)

    assert outcome.state is State.REFRESHED
    # Read the claim, take it, release it.
    assert _claim_requests(store.calls) == Counter({"read": 1, "claim": 2})
    claim = scene.space.root.secrets.kv.v2.read_secret_version(
        f"{CLAIMS_ROOT}/{scene.space.output_prefix}/{NAME}",
        mount_point="secret",
        raise_on_deleted_version=True,
    )["data"]["data"]
    assert claim["owner"] == rotator.instance_id
    assert claim["output_version"] == outcome.version == 3
