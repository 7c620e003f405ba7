"""Fixtures shared by the integration and end-to-end layers: one real OpenBao dev server per
test session, and a fresh pair of Vault prefixes per test so tests never see each other's data.

A missing `bao` binary fails the session loudly (DevVault raises); nothing is ever skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import hvac
import pytest
from hypothesis import HealthCheck, settings

from rotator import config as config_module
from rotator.config import Config
from rotator.dev.devvault import DevVault
from rotator.vault import VaultStore
from tests.sinks import Alertmanager, EnvelopeSink, RecordingServer

_counter = itertools.count()

# CI machines have 2 cores and run servers beside the tests: generation speed is not under test.
settings.register_profile("rotator", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rotator")


@pytest.fixture(scope="session")
def dev_vault() -> Iterator[DevVault]:
    with DevVault() as vault:
        yield vault


@dataclass(frozen=True)
class VaultSpace:
    """A test's own corner of the dev server: its prefixes and a root hvac client."""

    vault: DevVault
    source_prefix: str
    output_prefix: str
    root: hvac.Client

    def config(self, **sections: dict[str, object]) -> Config:
        raw: dict[str, dict[str, object]] = {
            "vault": {
                "addr": self.vault.addr,
                "source_prefix": self.source_prefix,
                "output_prefix": self.output_prefix,
            },
            "exchange": {"allowed_hosts": ["127.0.0.1"], "insecure_http_hosts": ["127.0.0.1"]},
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return config_module.parse(raw, {"VAULT_TOKEN": self.vault.root_token})

    def store(self) -> VaultStore:
        return VaultStore.connect(self.config().vault)

    def write_source(self, name: str, data: dict[str, object]) -> int:
        response = self.root.secrets.kv.v2.create_or_update_secret(
            f"{self.source_prefix}/{name}", secret=data, mount_point="secret"
        )
        return int(response["data"]["version"])

    def read_output(self, name: str) -> dict[str, object] | None:
        try:
            response = self.root.secrets.kv.v2.read_secret_version(
                f"{self.output_prefix}/{name}", mount_point="secret", raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        return dict(response["data"])


@pytest.fixture
def vault_space(dev_vault: DevVault, request: pytest.FixtureRequest) -> Iterator[VaultSpace]:
    tag = f"t{next(_counter)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    root = hvac.Client(url=dev_vault.addr, token=dev_vault.root_token, timeout=10)
    yield VaultSpace(dev_vault, f"{tag}/src", f"{tag}/out", root)
    root.adapter.close()


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[Alertmanager]:
    with Alertmanager() as manager:
        yield manager


@pytest.fixture
def webhook() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def envelope_sink() -> Iterator[EnvelopeSink]:
    with EnvelopeSink() as sink:
        yield sink
