"""`rotator audit` end to end: an OpenBao dev server with its file audit device, rotator logged
in by AppRole (deploy/vault/bootstrap.sh) writing the outputs, two consumers with tokens of their
own reading one output each, one refused, one output nobody reads; the installed command reads
the real log (a copy with garbage lines appended, its .gz and stdin)."""

from __future__ import annotations

import gzip
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator.dev.devvault import DevVault
from rotator.dev.standin import LeanIXStandIn
from rotator.tokens import parse_time
from tests.conftest import VaultSpace
from tests.e2e.conftest import BOOTSTRAP, ROTATOR, Rig, bootstrap_env, wait_for

SOURCES, OUTPUTS = "leanix/api-tokens", "leanix/access-tokens"  # the deploy policy's defaults
GARBAGE = (
    b"this is not JSON\n"
    + b"[1, 2, 3]\n"
    + b'{"type": "response", "request": {"path": "secret/data/leanix/access-tokens/acme/prod"}}\n'
    + b'{"pad": "'
    + b"x" * (2 << 20)
    + b'"}\n'
)
TIMES = ("audited_at", "first", "last", "first_read", "last_read")


@dataclass
class Scene:
    """What happened in Vault, and the secrets involved (for the leak checks)."""

    rig: Rig
    log: Path  # the live audit log
    copy: Path  # the log as it was after the consumers' reads, plus GARBAGE
    rotator_entity: str
    consumer_b_entity: str
    started: datetime
    secrets: list[str]

    def audit(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [str(ROTATOR), "audit", *args, "--config", str(self.rig.config_path)],
            env=self.rig.env(),
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )
        for secret in self.secrets:
            for text in (result.stdout, result.stderr):
                assert secret.encode() not in text, "a secret value reached audit's output"
        assert b"hmac-sha256" not in result.stdout and b"eyJ" not in result.stdout
        return result


def _policy(root: hvac.Client, name: str, *outputs: str) -> None:
    rules = "".join(
        f'path "secret/data/{OUTPUTS}/{output}" {{ capabilities = ["read"] }}\n'
        for output in outputs
    )
    root.sys.create_or_update_policy(name, rules)


def _read(client: hvac.Client, name: str) -> str:
    secret = client.secrets.kv.v2.read_secret_version(
        f"{OUTPUTS}/{name}", mount_point="secret", raise_on_deleted_version=True
    )
    return str(secret["data"]["data"]["access_token"])


def _approle(root: hvac.Client, vault: DevVault, role: str) -> tuple[hvac.Client, str]:
    """A client logged in with a new secret-id of AppRole `role`, and that secret-id."""
    role_id = root.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    client = hvac.Client(url=vault.addr, timeout=10)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return client, secret_id


def _logged_denied_read(log: Path, name: str) -> bool:
    for line in log.read_bytes().splitlines():
        entry = json.loads(line)
        if (
            entry["type"] == "response"
            and entry["request"]["path"] == f"secret/data/{OUTPUTS}/{name}"
            and entry.get("error")
        ):
            return True
    return False


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("audit")
    log, credentials = tmp / "audit.log", tmp / "credentials"
    started = datetime.now(UTC).replace(microsecond=0)
    with DevVault(audit_log=log) as vault, LeanIXStandIn(lifetime_seconds=3599) as idp:
        bootstrapped = subprocess.run(
            [str(BOOTSTRAP)],
            env=bootstrap_env(vault, credentials, token_ttl="1h", token_max_ttl="2h"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bootstrapped.returncode == 0, bootstrapped.stderr
        root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
        rig = Rig(VaultSpace(vault, SOURCES, OUTPUTS, root), idp, tmp / "rotator.toml")
        rig.write_config(
            **{
                "vault.auth": {
                    "method": "approle",
                    "role_id_file": str(credentials / "role-id"),
                    "secret_id_file": str(credentials / "secret-id"),
                }
            }
        )
        for name in ("acme/prod", "acme/sandbox", "legacy/unused"):
            rig.add_token(name)
        checked = rig.rotator("check")
        assert checked.returncode == 0, checked.stderr
        # An output nobody refreshes any more: written by hand, its source never existed.
        root.secrets.kv.v2.create_or_update_secret(
            f"{OUTPUTS}/gone/old", secret={"note": "left over"}, mount_point="secret"
        )

        as_rotator, _ = _approle(root, vault, "rotator")
        rotator_entity = as_rotator.auth.token.lookup_self()["data"]["entity_id"]
        _policy(root, "consumer-a", "acme/prod")
        _policy(root, "consumer-b", "acme/sandbox")
        consumer_a_token = root.auth.token.create(
            policies=["consumer-a"], display_name="consumer-a", ttl="1h"
        )["auth"]["client_token"]
        consumer_a = hvac.Client(url=vault.addr, token=consumer_a_token, timeout=10)
        root.auth.approle.create_or_update_approle("consumer-b", token_policies=["consumer-b"])
        consumer_b, consumer_b_secret_id = _approle(root, vault, "consumer-b")
        consumer_b_entity = consumer_b.auth.token.lookup_self()["data"]["entity_id"]

        read = [_read(consumer_a, "acme/prod"), _read(consumer_a, "acme/prod")]
        read.append(_read(consumer_b, "acme/sandbox"))
        with pytest.raises(hvac.exceptions.Forbidden):
            _read(consumer_a, "acme/sandbox")
        wait_for(lambda: _logged_denied_read(log, "acme/sandbox"), 10, "the denied read logged")

        copy = tmp / "copy.log"
        shutil.copyfile(log, copy)
        with copy.open("ab") as appended:
            appended.write(GARBAGE)
        assert rotator_entity and consumer_b_entity and rotator_entity != consumer_b_entity
        yield Scene(
            rig,
            log,
            copy,
            rotator_entity,
            consumer_b_entity,
            started,
            [
                vault.root_token,
                consumer_a_token,
                consumer_a.token,
                consumer_b.token,
                consumer_b_secret_id,
                as_rotator.token,
                (credentials / "secret-id").read_text().strip(),
                *read,
                *rig.secrets(),
            ],
        )
        for client in (root, as_rotator, consumer_a, consumer_b):
            client.adapter.close()


def _normalised(document: dict[str, Any], since: datetime) -> dict[str, Any]:
    """`document` with every time checked to lie in this test run and then replaced by "T",
    and rotator's own read counts checked to be positive and replaced by "N"."""
    until = datetime.now(UTC)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: check(key, value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    def check(key: str, value: Any) -> Any:
        if key in TIMES and value is not None:
            assert since <= parse_time(value) <= until, f"{key} {value} outside the test run"
            return "T"
        return walk(value)

    normalised = walk(document)
    assert normalised["rotator"]["reads"] > 0
    normalised["rotator"]["reads"] = "N"
    for output in normalised["outputs"]:
        if output["source"]:
            assert output["rotator_reads"] > 0, f"rotator's reads of {output['name']} missing"
            output["rotator_reads"] = "N"
    assert normalised["log"]["lines"] == normalised["log"]["entries"] + 4
    normalised["log"]["lines"] = normalised["log"]["entries"] = "L"
    return normalised


def _reader(name: str, entity: str, reads: int, denied: int) -> dict[str, Any]:
    seen = "T" if reads else None
    return {
        "display_name": name,
        "entity_id": entity,
        "remote_address": "127.0.0.1",
        "reads": reads,
        "denied": denied,
        "first_read": seen,
        "last_read": seen,
    }


def _expected(scene: Scene) -> dict[str, Any]:
    def output(name: str, state: str, readers: list[dict[str, Any]], **fields: Any) -> Any:
        reads = sum(reader["reads"] for reader in readers)
        return {
            "name": name,
            "state": state,
            "source": state != "no_source",
            "reads": reads,
            "last_read": "T" if reads else None,
            "denied": sum(reader["denied"] for reader in readers),
            "rotator_reads": "N" if state != "no_source" else 0,
            "note": None,
            "readers": readers,
            **fields,
        }

    return {
        "audited_at": "T",
        "unused_days": 30,
        "unused": ["legacy/unused"],
        "log": {
            "lines": "L",
            "entries": "L",
            "unparsable": 4,
            "unparsable_by_kind": {
                "not_json": 1,
                "not_an_object": 1,
                "bad_fields": 1,
                "too_long": 1,
            },
            "first": "T",
            "last": "T",
            "covers_days": 0.0,
            "short": True,
        },
        "rotator": {"display_name": "approle", "entity_id": scene.rotator_entity, "reads": "N"},
        "outputs": [
            output("acme/prod", "used", [_reader("token-consumer-a", "", 2, 0)]),
            output(
                "acme/sandbox",
                "used",
                [
                    _reader("approle", scene.consumer_b_entity, 1, 0),
                    _reader("token-consumer-a", "", 0, 1),
                ],
            ),
            output("gone/old", "no_source", []),
            output("legacy/unused", "unused", [], note="log covers 0.0 of 30 days"),
        ],
    }


def test_the_report_names_each_outputs_readers_and_the_unused_one_and_exits_1(
    scene: Scene,
) -> None:
    result = scene.audit("--log", str(scene.copy), "--json")

    assert result.returncode == 1, result.stderr
    assert _normalised(json.loads(result.stdout), scene.started) == _expected(scene)


def test_a_gz_copy_and_stdin_give_the_same_report(scene: Scene) -> None:
    compressed = scene.copy.with_name("copy.log.gz")
    compressed.write_bytes(gzip.compress(scene.copy.read_bytes()))

    plain = scene.audit("--log", str(scene.copy), "--json")
    from_gz = scene.audit("--log", str(compressed), "--json")
    from_stdin = scene.audit("--log", "-", "--json", stdin=scene.copy.read_bytes())

    documents = [json.loads(result.stdout) for result in (plain, from_gz, from_stdin)]
    for document in documents:
        document.pop("audited_at")
    assert documents[0] == documents[1] == documents[2]
    assert {result.returncode for result in (plain, from_gz, from_stdin)} == {1}


def test_the_table_shows_every_output_and_reader_without_secrets(scene: Scene) -> None:
    result = scene.audit("--log", str(scene.copy))

    assert result.returncode == 1, result.stderr
    text = result.stdout.decode()
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines()[6:10]}
    assert rows == {
        "acme/prod": "used",
        "acme/sandbox": "used",
        "gone/old": "no",
        "legacy/unused": "unused",
    }
    assert "unparsable lines: 4 (not_json 1, not_an_object 1, bad_fields 1, too_long 1)" in text
    assert f"by entity {scene.rotator_entity}" in text
    assert scene.consumer_b_entity in text and "token-consumer-a" in text


def test_a_truncated_gz_is_an_error_not_a_verdict(scene: Scene) -> None:
    compressed = gzip.compress(scene.copy.read_bytes())
    truncated = scene.copy.with_name("truncated.log.gz")
    truncated.write_bytes(compressed[: len(compressed) // 2])

    result = scene.audit("--log", str(truncated), "--json")

    assert result.returncode == 2
    assert result.stdout == b""
    assert b"cannot read" in result.stderr


def test_once_every_output_is_read_the_audit_exits_0(scene: Scene) -> None:
    """On the live log: a third consumer reads the last unread output."""
    vault, root = scene.rig.space.vault, scene.rig.space.root
    _policy(root, "consumer-c", "legacy/unused")
    token = root.auth.token.create(policies=["consumer-c"], display_name="consumer-c", ttl="1h")
    consumer_c = hvac.Client(url=vault.addr, token=token["auth"]["client_token"], timeout=10)
    scene.secrets += [consumer_c.token, _read(consumer_c, "legacy/unused")]
    consumer_c.adapter.close()

    result = scene.audit("--log", str(scene.log), "--json", "--unused-days", "1")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["unused"] == [] and document["unused_days"] == 1
    assert {o["name"]: o["state"] for o in document["outputs"]} == {
        "acme/prod": "used",
        "acme/sandbox": "used",
        "gone/old": "no_source",
        "legacy/unused": "used",
    }
    assert document["log"]["unparsable"] == 0


def test_a_missing_log_is_a_usage_error(scene: Scene, tmp_path: Path) -> None:
    result = scene.audit("--log", str(tmp_path / "absent.log"))

    assert result.returncode == 2
    assert b"No such file or directory" in result.stderr


def test_vault_refusing_rotators_credentials_exits_3(scene: Scene, tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    wrong = tmp_path / "secret-id"
    wrong.write_text(secrets.token_hex(16))
    scene.rig.write_config(
        config,
        **{
            "vault.auth": {
                "method": "approle",
                "role_id_file": str(Path(scene.rig.config_path).parent / "credentials" / "role-id"),
                "secret_id_file": str(wrong),
            }
        },
    )

    result = subprocess.run(
        [str(ROTATOR), "audit", "--log", str(scene.copy), "--config", str(config)],
        env=scene.rig.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 3, result.stderr
