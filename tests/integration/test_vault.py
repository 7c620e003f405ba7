"""The Vault adapter against a real OpenBao dev server."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rotator import config as config_module
from rotator.dev.devvault import DevVault, free_port
from rotator.errors import VaultAuthError, VaultConflict, VaultError, VaultUnavailable
from rotator.records import MAC_FIELD, output_key
from rotator.rotation import release_claim, take_claim, write_output
from rotator.tokens import AccessToken, parse_output
from rotator.vault import VaultStore
from tests.conftest import VaultSpace

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEY = output_key("the-api-token")


def _token(value: str = "header.payload.signature", lifetime: int = 3599) -> AccessToken:
    return AccessToken(
        access_token=value,
        token_type="bearer",
        expires_in=lifetime,
        issued_at=NOW,
        expires_at=NOW + timedelta(seconds=lifetime),
        source_version=3,
    )


def test_discovery_lists_every_secret_below_the_prefix_recursively(vault_space: VaultSpace) -> None:
    for name in ("alpha", "team-a/beta", "team-a/deep/gamma"):
        vault_space.write_source(name, {"api_token": "x", "host": "acme.leanix.net"})

    assert vault_space.store().list_sources() == ["alpha", "team-a/beta", "team-a/deep/gamma"]


def test_discovery_of_a_prefix_that_does_not_exist_is_empty(vault_space: VaultSpace) -> None:
    assert vault_space.store().list_sources() == []


def test_read_source_returns_data_and_current_version(vault_space: VaultSpace) -> None:
    vault_space.write_source("alpha", {"api_token": "one", "host": "acme.leanix.net"})
    vault_space.write_source("alpha", {"api_token": "two", "host": "acme.leanix.net"})

    secret = vault_space.store().read_source("alpha")

    assert secret is not None
    assert secret.version == 2
    assert secret.data["api_token"] == "two"


def test_read_source_of_a_deleted_secret_is_none(vault_space: VaultSpace) -> None:
    vault_space.write_source("alpha", {"api_token": "one"})
    vault_space.root.secrets.kv.v2.delete_latest_version_of_secret(
        f"{vault_space.source_prefix}/alpha", mount_point="secret"
    )

    assert vault_space.store().read_source("alpha") is None


def test_write_output_stores_spec_fields_and_custom_metadata(vault_space: VaultSpace) -> None:
    store = vault_space.store()

    written = write_output(store, "alpha", _token(), None, KEY)

    stored = store.read_output("alpha")
    assert stored is not None
    assert written == replace(stored, created=written.created)
    assert written.version == 1
    assert set(stored.data) == {
        "access_token",
        "token_type",
        "expires_in",
        "issued_at",
        "expires_at",
        "source_version",
        MAC_FIELD,
    }
    metadata = store.read_output_metadata("alpha")
    assert metadata is not None and metadata.vouched(KEY)
    assert stored.data["issued_at"] == "2026-11-29T12:00:00Z"
    assert stored.data["expires_at"] == "2026-11-29T12:59:59Z"
    assert stored.custom_metadata["expires_at"] == "2026-11-29T12:59:59Z"
    assert stored.custom_metadata["issued_at"] == "2026-11-29T12:00:00Z"
    assert parse_output(stored.data) == _token()


def test_write_output_with_a_stale_version_is_a_conflict_and_keeps_the_stored_token(
    vault_space: VaultSpace,
) -> None:
    store = vault_space.store()
    write_output(store, "alpha", _token("first.token.value"), None, KEY)
    stale = store.read_output("alpha")
    write_output(store, "alpha", _token("second.token.value"), stale, KEY)

    with pytest.raises(VaultConflict):
        write_output(store, "alpha", _token("third.token.value"), stale, KEY)

    stored = store.read_output("alpha")
    assert stored is not None
    assert stored.data["access_token"] == "second.token.value"


def test_creating_an_output_that_someone_else_created_is_a_conflict(
    vault_space: VaultSpace,
) -> None:
    store = vault_space.store()
    write_output(store, "alpha", _token(), None, KEY)

    with pytest.raises(VaultConflict):
        write_output(store, "alpha", _token("other.token.value"), None, KEY)


def _issued(value: str, at: datetime) -> AccessToken:
    return replace(_token(value), issued_at=at, expires_at=at + timedelta(seconds=3599))


def test_each_new_token_is_logged_once_as_an_issuance(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    for minute in range(3):
        token = _issued(f"token.number.{minute}", NOW + timedelta(minutes=minute))
        write_output(store, "alpha", token, store.read_output("alpha"), KEY)
    # The last token written back (after someone overwrote it, say) is no new issuance.
    write_output(store, "alpha", token, store.read_output("alpha"), KEY)

    read_at = NOW + timedelta(minutes=3)
    issuances = store.output_issuances("alpha", read_at)
    current = store.read_output("alpha")

    # Logged per minute, each at the end of its minute plus the clock skew allowed.
    assert issuances == tuple(NOW + timedelta(minutes=minute + 2) for minute in range(3))
    assert current is not None and current.issuances(read_at) == issuances
    assert store.output_issuances("never-written", read_at) == ()


def test_two_tokens_issued_in_the_same_second_are_two_issuances(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    write_output(store, "alpha", _token("first.token.value"), None, KEY)
    write_output(store, "alpha", _token("second.token.value"), store.read_output("alpha"), KEY)

    assert len(store.output_issuances("alpha", NOW)) == 2


def test_an_output_without_an_issuance_log_counts_its_versions(vault_space: VaultSpace) -> None:
    for number in range(2):  # written by someone else: no custom_metadata at all
        vault_space.root.secrets.kv.v2.create_or_update_secret(
            f"{vault_space.output_prefix}/alpha",
            secret={**_token(f"token.number.{number}").fields()},
            mount_point="secret",
        )
    store = vault_space.store()

    current = store.read_output("alpha")

    assert current is not None and current.issuances(NOW) is None
    assert len(store.output_issuances("alpha", NOW)) == 2


def test_an_output_rotator_wrote_is_recognised_as_its_own(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    write_output(store, "alpha", _token("first.token.value"), None, KEY)
    write_output(store, "alpha", _token("second.token.value"), store.read_output("alpha"), KEY)

    stored = store.read_output("alpha")

    assert stored is not None and stored.written_by_rotator(KEY)


def test_an_output_overwritten_by_someone_else_is_not_rotators(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    write_output(store, "alpha", _token("first.token.value"), None, KEY)
    vault_space.root.secrets.kv.v2.create_or_update_secret(
        f"{vault_space.output_prefix}/alpha",
        secret={**_token("forged.token.value").fields()},
        mount_point="secret",
    )

    stored = store.read_output("alpha")

    assert stored is not None and not stored.written_by_rotator(KEY)


def test_output_keeps_the_requested_number_of_versions(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    for number in range(5):
        write_output(
            store,
            "alpha",
            _token(f"token.number.{number}"),
            store.read_output("alpha"),
            KEY,
            keep_versions=3,
        )

    metadata = store.read_output_metadata("alpha")
    assert metadata is not None and len(metadata.history) == 3


def test_one_listing_gives_every_outputs_metadata_as_reads_do(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    names = ["alpha", "beta", "team-a/gamma", "team-a/deep/delta", "zeta"]
    for name in names:
        write_output(store, name, _token(f"token.for.{name.replace('/', '.')}"), None, KEY)

    for page_size in (1000, 2):  # one page per folder, and several
        listed = store.list_output_metadata(page_size=page_size)

        assert listed is not None and sorted(listed) == sorted(names)
        assert listed == {name: store.read_output_metadata(name) for name in names}


def test_no_outputs_yet_list_as_none_at_all(vault_space: VaultSpace) -> None:
    assert vault_space.store().list_output_metadata() == {}


def test_one_listing_gives_every_sources_current_version(vault_space: VaultSpace) -> None:
    for name in ("alpha", "team-a/beta"):
        vault_space.write_source(name, {"api_token": "x", "host": "acme.leanix.net"})
    vault_space.write_source("alpha", {"api_token": "y", "host": "acme.leanix.net"})

    assert vault_space.store().list_source_versions() == {"alpha": 2, "team-a/beta": 1}


def test_an_earlier_source_version_is_read_by_number(vault_space: VaultSpace) -> None:
    vault_space.write_source("alpha", {"api_token": "one", "host": "acme.leanix.net"})
    vault_space.write_source("alpha", {"api_token": "two", "host": "acme.leanix.net"})

    older = vault_space.store().read_source_version("alpha", 1)

    assert older is not None and (older.version, older.data["api_token"]) == (1, "one")
    assert vault_space.store().read_source_version("alpha", 7) is None


def test_a_deleted_output_reads_as_deleted_with_its_version_and_log(
    vault_space: VaultSpace,
) -> None:
    """Check-and-set over a deleted version must name it, and its issuance log still counts."""
    store = vault_space.store()
    write_output(store, "alpha", _token(), None, KEY)
    vault_space.root.secrets.kv.v2.delete_latest_version_of_secret(
        f"{vault_space.output_prefix}/alpha", mount_point="secret"
    )

    deleted = store.read_output("alpha")

    assert deleted is not None and deleted.deleted and deleted.version == 1
    assert deleted.data == {} and deleted.issuances(NOW) is not None
    assert write_output(store, "alpha", _token("next.token.value"), deleted, KEY).version == 2


def test_the_instance_registry_announces_lists_and_withdraws(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    assert store.list_instances() == {}

    store.announce_instance("host-a.1.aa", {"until": "2026-12-01T12:02:10Z"})
    store.announce_instance("host-b.2.bb", {"until": "2026-12-01T12:03:00Z"})
    store.announce_instance("host-a.1.aa", {"until": "2026-12-01T12:04:10Z"})

    assert store.list_instances() == {
        "host-a.1.aa": {"until": "2026-12-01T12:04:10Z"},
        "host-b.2.bb": {"until": "2026-12-01T12:03:00Z"},
    }
    store.withdraw_instance("host-a.1.aa")
    store.withdraw_instance("host-a.1.aa")  # gone already: nothing to do
    assert list(store.list_instances()) == ["host-b.2.bb"]


def test_without_the_listing_in_its_policy_rotator_reads_one_by_one(
    vault_space: VaultSpace,
) -> None:
    vault_space.write_source("alpha", {"api_token": "x", "host": "acme.leanix.net"})
    write_output(vault_space.store(), "alpha", _token(), None, KEY)
    vault_space.root.sys.create_or_update_policy(
        "no-detailed-listing",
        'path "secret/data/*" { capabilities = ["read"] }\n'
        'path "secret/metadata/*" { capabilities = ["read", "list"] }',
    )
    limited = vault_space.root.auth.token.create(policies=["no-detailed-listing"], ttl="10m")
    config = config_module.parse(
        {
            "vault": {
                "addr": vault_space.config().vault.addr,
                "source_prefix": vault_space.source_prefix,
                "output_prefix": vault_space.output_prefix,
            }
        },
        {"VAULT_TOKEN": limited["auth"]["client_token"]},
    )
    store = VaultStore.connect(config.vault)

    assert store.list_output_metadata() is None
    assert store.list_output_metadata() is None  # remembered: not asked again
    assert store.read_output_metadata("alpha") is not None


def test_a_token_vault_does_not_know_is_refused_at_login(dev_vault: DevVault) -> None:
    config = config_module.parse(
        {"vault": {"addr": dev_vault.addr}}, {"VAULT_TOKEN": "not-a-real-token"}
    )

    with pytest.raises(VaultAuthError) as caught:
        VaultStore.connect(config.vault)
    assert "not-a-real-token" not in str(caught.value)


def test_a_write_outside_the_tokens_policy_is_refused(vault_space: VaultSpace) -> None:
    vault_space.root.sys.create_or_update_policy(
        "read-only-test", 'path "secret/*" { capabilities = ["read", "list"] }'
    )
    limited = vault_space.root.auth.token.create(policies=["read-only-test"], ttl="10m")
    config = config_module.parse(
        {
            "vault": {
                "addr": vault_space.vault.addr,
                "source_prefix": vault_space.source_prefix,
                "output_prefix": vault_space.output_prefix,
            }
        },
        {"VAULT_TOKEN": limited["auth"]["client_token"]},
    )
    store = VaultStore.connect(config.vault)

    with pytest.raises(VaultAuthError, match="permission denied"):
        write_output(store, "alpha", _token(), None, KEY)


def test_vault_that_does_not_listen_is_unavailable() -> None:
    config = config_module.parse(
        {"vault": {"addr": f"http://127.0.0.1:{free_port()}"}}, {"VAULT_TOKEN": "whatever"}
    )

    with pytest.raises(VaultUnavailable):
        VaultStore.connect(config.vault)


def test_a_sealed_vault_is_unavailable_to_the_health_probe_and_every_route() -> None:
    with DevVault() as vault:
        config = config_module.parse(
            {"vault": {"addr": vault.addr}}, {"VAULT_TOKEN": vault.root_token}
        )
        store = VaultStore.connect(config.vault)
        assert store.auth.token_info().ttl == 0  # the dev root token does not expire

        vault.cli("operator", "seal")

        with pytest.raises(VaultUnavailable):
            store.auth.token_info()
        with pytest.raises(VaultUnavailable):
            store.list_sources()


def test_a_claim_excludes_other_owners_until_it_lapses(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    lease = timedelta(seconds=30)

    assert take_claim(store, "alpha", "one", NOW, lease) is not None
    assert take_claim(store, "alpha", "two", NOW + timedelta(seconds=29), lease) is None
    assert take_claim(store, "alpha", "two", NOW + timedelta(seconds=31), lease) is not None


def test_a_released_claim_can_be_taken_at_once(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    lease = timedelta(seconds=30)
    claim = take_claim(store, "alpha", "one", NOW, lease)
    assert claim is not None

    release_claim(store, "alpha", "one", claim, output_version=4)

    taken = take_claim(store, "alpha", "two", NOW, lease)
    assert taken is not None
    assert taken.settled_output_version == 4


def test_a_claim_never_released_records_no_output_version(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    lease = timedelta(seconds=30)
    first = take_claim(store, "alpha", "one", NOW, lease)
    assert first is not None and first.first
    assert not first.output_may_have_changed(0)  # nobody ever claimed: nobody wrote under one

    lapsed = take_claim(store, "alpha", "two", NOW + timedelta(seconds=31), lease)

    # The first owner may have died after writing the output: the new owner must look again.
    assert lapsed is not None and not lapsed.first
    assert lapsed.output_may_have_changed(0) and lapsed.output_may_have_changed(1)


def test_a_release_records_the_output_version_for_the_next_owner(
    vault_space: VaultSpace,
) -> None:
    store = vault_space.store()
    lease = timedelta(seconds=30)
    claim = take_claim(store, "alpha", "one", NOW, lease)
    assert claim is not None
    release_claim(store, "alpha", "one", claim, output_version=7)
    theirs = take_claim(store, "alpha", "two", NOW + timedelta(seconds=1), lease)
    assert theirs is not None and theirs.settled_output_version == 7

    # "two" holds a live claim: "one" waits, also for its own token.
    assert take_claim(store, "alpha", "one", NOW + timedelta(seconds=2), lease) is None

    release_claim(store, "alpha", "two", theirs, output_version=8)
    after = take_claim(store, "alpha", "one", NOW + timedelta(seconds=3), lease)
    assert after is not None and after.settled_output_version == 8
    assert not after.output_may_have_changed(8) and after.output_may_have_changed(7)


def test_releasing_a_claim_someone_else_took_since_leaves_theirs(vault_space: VaultSpace) -> None:
    store = vault_space.store()
    lease = timedelta(seconds=30)
    stale = take_claim(store, "alpha", "one", NOW, lease)
    assert stale is not None
    assert take_claim(store, "alpha", "two", NOW + timedelta(seconds=31), lease) is not None

    release_claim(store, "alpha", "one", stale, output_version=1)

    assert take_claim(store, "alpha", "three", NOW + timedelta(seconds=32), lease) is None


def test_of_two_simultaneous_claims_exactly_one_wins(vault_space: VaultSpace) -> None:
    lease = timedelta(seconds=30)
    stores = [vault_space.store() for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def claim(index: int) -> bool:
        barrier.wait()
        return take_claim(stores[index], "alpha", f"owner-{index}", NOW, lease) is not None

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(claim, range(len(stores))))

    assert results.count(True) == 1


def test_a_source_secret_nested_too_deeply_is_a_vault_error_not_a_crash(
    vault_space: VaultSpace,
) -> None:
    # Written over raw HTTP: Python's own json.dumps (hvac's) cannot encode this depth either.
    depth = 5000
    body = b'{"data": {"api_token": "x", "nested": ' + b"[" * depth + b"]" * depth + b"}}"
    request = urllib.request.Request(
        f"{vault_space.vault.addr}/v1/secret/data/{vault_space.source_prefix}/deep",
        data=body,
        method="POST",
        headers={"X-Vault-Token": vault_space.vault.root_token},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    with pytest.raises(VaultError) as caught:
        vault_space.store().read_source("deep")

    assert type(caught.value) is VaultError  # neither retried as "unavailable" nor a crash
    assert "nested too deeply" in str(caught.value)
    assert f"{vault_space.source_prefix}/deep" in str(caught.value)
