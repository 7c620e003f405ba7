"""The Vault adapter's view of rotator's own token (`VaultAuth.token_identity`) against what a
real OpenBao file audit device writes about that token's requests: with an entity (AppRole) and
without one (the dev root token, recognised by display name and policies)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from rotator import config as config_module
from rotator.audit import LogTally, read_lines
from rotator.dev.devvault import DevVault
from rotator.vault import TokenIdentity, VaultStore
from tests.waiting import wait_for

OUTPUTS = "audit-test/out"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    log = tmp_path_factory.mktemp("audit") / "audit.log"
    with DevVault(audit_log=log) as vault:
        vault.cli("auth", "enable", "approle")
        yield vault


def _store(vault: DevVault, token: str) -> VaultStore:
    config = config_module.parse(
        {"vault": {"addr": vault.addr, "output_prefix": OUTPUTS}}, {"VAULT_TOKEN": token}
    )
    return VaultStore.connect(config.vault)


def _tally(vault: DevVault, own: TokenIdentity) -> LogTally:
    assert vault.audit_log is not None
    tally = LogTally("secret", OUTPUTS, own)
    with vault.audit_log.open("rb") as log:
        for line in read_lines(log):
            tally.feed(line)
    return tally


def _responses_to(log: Path, path: str) -> int:
    lines = log.read_bytes().splitlines()
    return sum(
        1
        for line in lines
        if (entry := json.loads(line))["type"] == "response" and entry["request"]["path"] == path
    )


def test_the_dev_root_token_has_no_entity_and_is_known_by_name_and_policies(
    audited: DevVault,
) -> None:
    store = _store(audited, audited.root_token)

    own = store.auth.token_identity()
    store.write_output_data("root-read", {"x": "1"}, cas=0)
    store.read_output("root-read")

    assert own == TokenIdentity(display_name="token", entity_id="", policies=("root",))
    assert audited.audit_log is not None
    path = f"secret/data/{OUTPUTS}/root-read"
    wait_for(lambda: _responses_to(audited.audit_log, path) == 2, 10, "both responses logged")
    output = _tally(audited, own).outputs["root-read"]
    assert (output.rotator_reads, output.readers) == (1, {})


def test_an_approle_token_is_known_by_its_entity(audited: DevVault) -> None:
    root = hvac.Client(url=audited.addr, token=audited.root_token, timeout=10)
    root.sys.create_or_update_policy(
        "rotator-like",
        f'path "secret/data/{OUTPUTS}/*" {{ capabilities = ["create", "update", "read"] }}\n'
        'path "auth/token/lookup-self" { capabilities = ["read"] }\n',
    )
    root.auth.approle.create_or_update_approle("rotator-like", token_policies=["rotator-like"])
    role_id = root.auth.approle.read_role_id("rotator-like")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("rotator-like")["data"]["secret_id"]
    login = hvac.Client(url=audited.addr, timeout=10)
    login.auth.approle.login(role_id=role_id, secret_id=secret_id)
    store = _store(audited, login.token)

    own = store.auth.token_identity()
    store.write_output_data("approle-read", {"x": "1"}, cas=0)
    store.read_output("approle-read")
    root.secrets.kv.v2.read_secret_version(
        f"{OUTPUTS}/approle-read", mount_point="secret", raise_on_deleted_version=True
    )

    assert own.display_name == "approle" and own.entity_id
    assert own.policies == ("default", "rotator-like")
    assert audited.audit_log is not None
    path = f"secret/data/{OUTPUTS}/approle-read"
    wait_for(lambda: _responses_to(audited.audit_log, path) == 3, 10, "the three responses logged")
    output = _tally(audited, own).outputs["approle-read"]
    assert output.rotator_reads == 1
    assert [(reader.display_name, reader.entity_id) for reader in output.readers] == [("token", "")]
    for client in (root, login):
        client.adapter.close()
