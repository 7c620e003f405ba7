"""End-to-end fixtures: the installed `rotator` command run as a subprocess against the session's
OpenBao dev server and a LeanIX stand-in on loopback, with a config file written per test."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.dev.devvault import DevVault, bao_binary
from rotator.dev.standin import LeanIXStandIn
from rotator.tokens import format_time, parse_time
from tests.conftest import VaultSpace
from tests.waiting import stop_process, wait_for

__all__ = ["Rig", "remaining_seconds", "sample", "scrape", "stop_process", "wait_for"]

ROTATOR = Path(sys.executable).with_name("rotator")


@dataclass
class Rig:
    """A test's Vault corner, stand-in and config file, plus every secret it handed out."""

    space: VaultSpace
    idp: LeanIXStandIn
    config_path: Path
    api_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    outputs_seen: list[str] = field(default_factory=list, repr=False)
    user_ids: dict[str, str] = field(default_factory=dict)
    workspaces: dict[str, str] = field(default_factory=dict)

    def workspace(self, name: str) -> str:
        """The id of the stand-in's workspace `name`, made on first use."""
        if name not in self.workspaces:
            self.workspaces[name] = self.idp.add_workspace(name)
        return self.workspaces[name]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["VAULT_TOKEN"] = self.space.vault.root_token
        return env

    def write_config(self, path: Path | None = None, **sections: dict[str, Any]) -> None:
        """The test's config (at `path`, default `config_path`) with `sections` merged in."""
        raw: dict[str, dict[str, Any]] = {
            "vault": {
                "addr": self.space.vault.addr,
                "source_prefix": self.space.source_prefix,
                "output_prefix": self.space.output_prefix,
            },
            "exchange": {
                "allowed_hosts": ["127.0.0.1"],
                "insecure_http_hosts": ["127.0.0.1"],
                "timeout_seconds": 5,
            },
            "metrics": {"listen": ""},
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        (path or self.config_path).write_text(_toml(raw))

    def add_token(self, name: str, *, revoked: bool = False, workspace: str = "acme") -> str:
        api_token = "api-" + secrets.token_urlsafe(24)
        self.api_tokens[name] = api_token
        self.idp.add_token(api_token, workspace_name=workspace)
        if revoked:
            self.idp.revoke(api_token)
        self.space.write_source(name, {"api_token": api_token, "token_url": self.idp.token_url})
        return api_token

    def add_managed_token(
        self,
        name: str,
        *,
        expires_in: timedelta,
        role: str = "ADMIN",
        workspace: str = "acme",
        admin_source: str | None = None,
        api_token_next: str | None = None,
    ) -> str:
        """A source whose API token belongs to a technical user at the stand-in's MTM, expiring
        `expires_in` from now; returns the technical user's id."""
        api_token = "api-" + secrets.token_urlsafe(24)
        self.api_tokens[name] = api_token
        user_id = self.idp.add_token(
            api_token,
            workspace_id=self.workspace(workspace),
            role=role,
            expiry=datetime.now(UTC) + expires_in,
        )
        self.user_ids[name] = user_id
        source = {
            "api_token": api_token,
            "token_url": self.idp.token_url,
            "technical_user_id": user_id,
            "api_token_expires_at": format_time(datetime.now(UTC) + expires_in),
        }
        if admin_source is not None:
            source["admin_source"] = admin_source
        if api_token_next is not None:
            source["api_token_next"] = api_token_next
        self.space.write_source(name, source)
        return user_id

    def source(self, name: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The source secret as Vault holds it: (version, data, custom_metadata)."""
        answer = self.space.root.secrets.kv.v2.read_secret_version(
            f"{self.space.source_prefix}/{name}",
            mount_point="secret",
            raise_on_deleted_version=True,
        )["data"]
        return (
            int(answer["metadata"]["version"]),
            dict(answer["data"]),
            dict(answer["metadata"].get("custom_metadata") or {}),
        )

    def rotator(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROTATOR), *args, "--config", str(self.config_path)],
            env=self.env() | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self, *args: str, log: Path, env: dict[str, str] | None = None, config: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as sink:
            return subprocess.Popen(
                [str(ROTATOR), *args, "--config", str(config or self.config_path)],
                env=self.env() | (env or {}),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    @contextmanager
    def running(
        self, log: Path, env: dict[str, str] | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        """`rotator run --log-level DEBUG` (the most log text a secret could hide in); SIGTERM
        on the way out, which must end it with exit code 0."""
        process = self.start("run", "--log-level", "DEBUG", log=log, env=env)
        try:
            yield process
        finally:
            code = stop_process(process)
        assert code == 0, f"rotator run exited {code} on SIGTERM"

    def output(self, name: str) -> dict[str, Any] | None:
        data = self.space.read_output(name)
        if data is None:
            return None
        fields = dict(data["data"])  # type: ignore[call-overload]
        self.outputs_seen.append(fields["access_token"])
        return fields

    def issued(self, name: str) -> int:
        return self.idp.issued_count(self.api_tokens[name])

    def secrets(self) -> list[str]:
        """Every secret value this test handed out or saw issued, for leak scans: the API
        tokens, every API token a technical user holds now at MTM, the access tokens seen."""
        current = []
        for user_id in self.user_ids.values():
            with contextlib.suppress(KeyError):  # deleted at MTM
                current.append(self.idp.current_api_token(user_id))
        return [*self.api_tokens.values(), *current, *self.outputs_seen]


def scrape(listen: str) -> str:
    """The daemon's /metrics page at `listen` (HOST:PORT); "" while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def sample(page: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels...}` (other labels ignored) on a /metrics page."""
    for family in text_string_to_metric_families(page):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def looked_at(listen: str, names: Iterable[str]) -> bool:
    """True once the daemon at `listen` has finished a job for each of `names` (every job's
    outcome sets `rotator_token_healthy`, to 1 for a fresh token)."""
    page = scrape(listen)
    return all(sample(page, "rotator_token_healthy", token=name) == 1 for name in names)


def remaining_seconds(fields: dict[str, Any]) -> float:
    return (parse_time(fields["expires_at"]) - parse_time(_now())).total_seconds()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _toml(raw: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def rig(vault_space: VaultSpace, tmp_path: Path) -> Iterator[Rig]:
    if not ROTATOR.exists():
        raise AssertionError(f"the rotator command is not installed at {ROTATOR}")
    with LeanIXStandIn(lifetime_seconds=3599) as idp:
        rig = Rig(vault_space, idp, tmp_path / "rotator.toml")
        rig.write_config()
        yield rig


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BOOTSTRAP = DEPLOY / "vault" / "bootstrap.sh"


def bootstrap_env(
    vault: DevVault, credentials: Path, token_ttl: str, token_max_ttl: str
) -> dict[str, str]:
    """The environment bootstrap.sh runs in against `vault` with its root token."""
    return os.environ | {
        "VAULT_CLI": str(bao_binary()),
        "BAO_ADDR": vault.addr,
        "BAO_TOKEN": vault.root_token,
        "VAULT_ADDR": vault.addr,
        "VAULT_TOKEN": vault.root_token,
        "OUT_DIR": str(credentials),
        "TOKEN_TTL": token_ttl,
        "TOKEN_MAX_TTL": token_max_ttl,
    }


@contextmanager
def approle_dev_vault(credentials: Path, token_ttl: str, token_max_ttl: str) -> Iterator[DevVault]:
    """A fresh dev server prepared by deploy/vault/bootstrap.sh (the policy names the default
    prefixes, so it cannot share the session's server); role-id and secret-id in `credentials`."""
    with DevVault() as vault:
        result = subprocess.run(
            [str(BOOTSTRAP)],
            env=bootstrap_env(vault, credentials, token_ttl, token_max_ttl),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        yield vault
