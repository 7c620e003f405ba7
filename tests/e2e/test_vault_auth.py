"""AppRole end to end: Vault prepared by deploy/vault/bootstrap.sh, rotator holding only the
policy from deploy/, short token TTLs so renewals and re-logins both happen during the run."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator import config as config_module
from rotator.dev.devvault import DevVault
from rotator.dev.standin import LeanIXStandIn
from rotator.records import output_key
from rotator.rotation import write_output
from rotator.tokens import AccessToken, parse_time
from rotator.vault import VaultStore
from tests.e2e.conftest import (
    BOOTSTRAP,
    ROTATOR,
    _toml,
    approle_dev_vault,
    bootstrap_env,
)
from tests.waiting import wait_for

SOURCES, OUTPUTS = "leanix/api-tokens", "leanix/access-tokens"  # the policy's defaults


@pytest.fixture
def bootstrapped(tmp_path: Path) -> Iterator[tuple[DevVault, Path]]:
    """A fresh dev server (the policy names the default prefixes) after bootstrap.sh ran."""
    credentials = tmp_path / "credentials"
    with approle_dev_vault(credentials, token_ttl="6s", token_max_ttl="14s") as vault:
        yield vault, credentials


def _access_token() -> AccessToken:
    now = datetime.now(UTC).replace(microsecond=0)
    return AccessToken(
        access_token="header.payload.signature",
        token_type="bearer",
        expires_in=3599,
        issued_at=now,
        expires_at=now + timedelta(seconds=3599),
        source_version=1,
    )


def _approle_client(vault: DevVault, credentials: Path) -> hvac.Client:
    client = hvac.Client(url=vault.addr, timeout=10)
    client.auth.approle.login(
        role_id=(credentials / "role-id").read_text().strip(),
        secret_id=(credentials / "secret-id").read_text().strip(),
    )
    return client


def test_the_deploy_policy_refuses_writes_outside_its_paths(
    bootstrapped: tuple[DevVault, Path],
) -> None:
    vault, credentials = bootstrapped
    client = _approle_client(vault, credentials)
    kv = client.secrets.kv.v2

    kv.create_or_update_secret(f"{OUTPUTS}/allowed", secret={"x": "1"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret(f"{SOURCES}/forged", secret={"x": "1"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret("elsewhere/secret", secret={"x": "1"}, mount_point="secret")
    client.adapter.close()


def test_the_deploy_policy_grants_the_checks_one_request_listing(
    bootstrapped: tuple[DevVault, Path],
) -> None:
    vault, credentials = bootstrapped
    config = config_module.parse(
        {
            "vault": {
                "addr": vault.addr,
                "auth": {
                    "method": "approle",
                    "role_id_file": str(credentials / "role-id"),
                    "secret_id_file": str(credentials / "secret-id"),
                },
            }
        },
        {},
    )
    store = VaultStore.connect(config.vault)
    for name in ("acme/prod", "acme/sandbox"):
        write_output(store, name, _access_token(), None, output_key("the-api-token"))

    listed = store.list_output_metadata()

    assert listed is not None and sorted(listed) == ["acme/prod", "acme/sandbox"]


def test_bootstrap_runs_again_on_a_prepared_vault(
    bootstrapped: tuple[DevVault, Path], tmp_path: Path
) -> None:
    """Re-running the deploy kit (a new secret-id, say) leaves mounts alone and succeeds; run
    several times because a racy mount check fails only now and then."""
    vault, _ = bootstrapped
    env = bootstrap_env(vault, tmp_path / "again", token_ttl="1h", token_max_ttl="24h")
    for _ in range(5):
        result = subprocess.run(
            [str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        client = _approle_client(vault, tmp_path / "again")
        client.secrets.kv.v2.create_or_update_secret(
            f"{OUTPUTS}/after-rerun", secret={"x": "1"}, mount_point="secret"
        )
        client.adapter.close()


def _role(vault: DevVault) -> dict[str, Any]:
    root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
    try:
        return dict(root.read("auth/approle/role/rotator")["data"])
    finally:
        root.adapter.close()


def test_bootstrap_gives_secret_ids_a_ttl_and_binds_nothing_by_default(
    bootstrapped: tuple[DevVault, Path],
) -> None:
    vault, _ = bootstrapped

    role = _role(vault)

    assert role["secret_id_ttl"] == 720 * 3600  # 30 days: a secret-id is not forever
    assert not role.get("secret_id_bound_cidrs")
    assert not role.get("token_bound_cidrs")


def test_bootstrap_binds_secret_ids_and_tokens_to_the_cidrs_given(
    bootstrapped: tuple[DevVault, Path], tmp_path: Path
) -> None:
    vault, _ = bootstrapped
    env = bootstrap_env(vault, tmp_path / "bound", token_ttl="1h", token_max_ttl="24h") | {
        "SECRET_ID_TTL": "48h",
        "SECRET_ID_BOUND_CIDRS": "127.0.0.1/32",
        "TOKEN_BOUND_CIDRS": "127.0.0.0/8",
    }

    result = subprocess.run(
        [str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    role = _role(vault)
    assert role["secret_id_ttl"] == 48 * 3600
    assert role["secret_id_bound_cidrs"] == ["127.0.0.1/32"]
    assert role["token_bound_cidrs"] == ["127.0.0.0/8"]
    # From loopback, inside both bounds, rotator's credentials still work.
    client = _approle_client(vault, tmp_path / "bound")
    client.secrets.kv.v2.create_or_update_secret(
        f"{OUTPUTS}/bound", secret={"x": "1"}, mount_point="secret"
    )
    client.adapter.close()


def test_daemon_keeps_tokens_fresh_across_renewals_and_relogins(
    bootstrapped: tuple[DevVault, Path], tmp_path: Path
) -> None:
    vault, credentials = bootstrapped
    root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
    with LeanIXStandIn(lifetime_seconds=8) as idp:
        api_tokens = {}
        for name in ("acme/prod", "acme/sandbox"):
            api_tokens[name] = "api-" + secrets.token_urlsafe(24)
            idp.add_token(api_tokens[name])
            root.secrets.kv.v2.create_or_update_secret(
                f"{SOURCES}/{name}",
                secret={"api_token": api_tokens[name], "token_url": idp.token_url},
                mount_point="secret",
            )
        config = tmp_path / "rotator.toml"
        config.write_text(
            _toml(
                {
                    "vault": {"addr": vault.addr},
                    # role-id and secret-id from $CREDENTIALS_DIRECTORY, as under systemd.
                    "vault.auth": {"method": "approle"},
                    "exchange": {
                        "allowed_hosts": ["127.0.0.1"],
                        "insecure_http_hosts": ["127.0.0.1"],
                    },
                    "schedule": {"check_interval_seconds": 1, "discovery_interval_seconds": 5},
                    # 8 s tokens refresh ~5 times in 30 s; the default cap (6/hour) would bite.
                    "alerts": {"max_issuances_per_hour": 100},
                    "metrics": {"listen": ""},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        log = tmp_path / "run.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(ROTATOR), "run", "--config", str(config)],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            # 30 s spans two max TTLs (14 s) and several renewals at 2/3 of the 6 s TTL.
            deadline = time.monotonic() + 30
            wait_for(lambda: _outputs(root) == 2, 20, "the first outputs")
            while time.monotonic() < deadline:
                for name in api_tokens:
                    data = root.secrets.kv.v2.read_secret_version(
                        f"{OUTPUTS}/{name}", mount_point="secret", raise_on_deleted_version=True
                    )["data"]["data"]
                    remaining = parse_time(data["expires_at"]).timestamp() - time.time()
                    assert remaining > 0, f"{name}: consumer read an expired token"
                assert process.poll() is None, "the daemon died"
                time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=20)
            root.adapter.close()

    text = log.read_text()
    assert code == 0
    assert "renewed rotator's Vault token" in text
    assert "logging in to Vault again" in text
    # Every refresh period (~6 s of 8 s tokens) was served: about 5 issuances per token in 30 s.
    for api_token in api_tokens.values():
        assert idp.issued_count(api_token) >= 4
        assert api_token not in text


def _outputs(root: hvac.Client) -> int:
    try:
        listing = root.secrets.kv.v2.list_secrets(f"{OUTPUTS}/acme", mount_point="secret")
    except hvac.exceptions.InvalidPath:
        return 0
    return len(listing["data"]["keys"])


def test_replacing_an_api_token_needs_the_lifecycle_policy_and_works_with_it(
    bootstrapped: tuple[DevVault, Path], tmp_path: Path
) -> None:
    """The default policy keeps rotator read-only on the sources (a dry run says what is
    missing); bootstrap.sh with LIFECYCLE=1 grants what a replacement writes."""
    vault, credentials = bootstrapped
    with LeanIXStandIn() as idp:
        api_token = "api-" + secrets.token_urlsafe(24)
        user = idp.add_token(api_token, role="ADMIN")
        root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
        root.secrets.kv.v2.create_or_update_secret(
            f"{SOURCES}/acme/prod",
            secret={"api_token": api_token, "token_url": idp.token_url, "technical_user_id": user},
            mount_point="secret",
        )
        config = tmp_path / "rotator.toml"
        config.write_text(
            _toml(
                {
                    "vault": {"addr": vault.addr},
                    "vault.auth": {
                        "method": "approle",
                        "role_id_file": str(credentials / "role-id"),
                        "secret_id_file": str(credentials / "secret-id"),
                    },
                    "exchange": {
                        "allowed_hosts": ["127.0.0.1"],
                        "insecure_http_hosts": ["127.0.0.1"],
                    },
                    "metrics": {"listen": ""},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}

        def rotator(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(ROTATOR), *args, "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        read_only = rotator("replace-api-token", "acme/prod", "--dry-run")
        assert read_only.returncode == 1
        (line,) = [row for row in read_only.stdout.splitlines() if "Vault grants update" in row]
        assert "FAILED" in line and "rotator-lifecycle-policy.hcl" in line

        granted = subprocess.run(
            [str(BOOTSTRAP)],
            env=bootstrap_env(vault, credentials, token_ttl="1h", token_max_ttl="24h")
            | {"LIFECYCLE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert granted.returncode == 0, granted.stderr
        assert rotator("replace-api-token", "acme/prod", "--dry-run").returncode == 0
        replaced = rotator("replace-api-token", "acme/prod")

        assert replaced.returncode == 0, replaced.stdout + replaced.stderr
        data = root.secrets.kv.v2.read_secret_version(
            f"{SOURCES}/acme/prod", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        assert idp.accepts(data["api_token"]) and not idp.accepts(api_token)
        root.adapter.close()
