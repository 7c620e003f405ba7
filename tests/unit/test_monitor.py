"""The glue between outcomes, alerts and metrics: rotator.monitor on a fresh registry with an
injected clock, no notifier (alert events then go to the log)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from rotator.config import Config, VaultConfig
from rotator.metrics import RotatorMetrics
from rotator.monitor import Monitor
from rotator.outcome import FailureKind, Outcome, State
from rotator.records import OutputMetadata
from rotator.tokens import AccessToken

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
CONFIG = Config(vault=VaultConfig(addr="http://127.0.0.1:8200"))


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Setup:
    monitor: Monitor
    registry: CollectorRegistry
    clock: Clock = field(default_factory=Clock)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def firing(self, alert: str) -> float | None:
        return self.value("rotator_alerts_firing", alert=alert)


@pytest.fixture
def setup() -> Setup:
    registry = CollectorRegistry()
    clock = Clock()
    monitor = Monitor(CONFIG, RotatorMetrics(registry), notifier=None, clock=clock)
    return Setup(monitor, registry, clock)


def access_token(issued_at: datetime = T0) -> AccessToken:
    return AccessToken(
        access_token="header.claims.signature",
        token_type="bearer",
        expires_in=3600,
        issued_at=issued_at,
        expires_at=issued_at + HOUR,
        source_version=1,
    )


def refreshed(name: str = "acme", issued_at: datetime = T0) -> Outcome:
    return Outcome(name, State.REFRESHED, access_token(issued_at), issued_at + 0.8 * HOUR)


def rejected(name: str = "acme") -> Outcome:
    return Outcome(
        name,
        State.FAILING,
        None,
        T0 + HOUR,
        error=f"{name}: the IdP answered 401",
        error_kind=FailureKind.REJECTED,
        failures=1,
    )


def alert_lines(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "rotator.monitor" and all(w in record.getMessage() for w in words)
    ]


def test_a_refreshed_outcome_marks_the_token_healthy(setup: Setup) -> None:
    setup.monitor.record(refreshed())

    assert setup.value("rotator_token_healthy", token="acme") == 1


def test_a_refreshed_outcome_exports_when_the_access_token_expires(setup: Setup) -> None:
    setup.monitor.record(refreshed())

    assert setup.value("rotator_access_token_expires_timestamp_seconds", token="acme") == (
        (T0 + HOUR).timestamp()
    )


def test_a_rejected_outcome_marks_the_token_unhealthy_and_fires_api_token_rejected(
    setup: Setup,
) -> None:
    setup.monitor.record(rejected())

    assert setup.value("rotator_token_healthy", token="acme") == 0
    assert setup.firing("api_token_rejected") == 1


def test_a_refresh_after_a_rejection_resolves_api_token_rejected(setup: Setup) -> None:
    setup.monitor.record(rejected())
    setup.clock.now = T0 + timedelta(minutes=5)

    setup.monitor.record(refreshed(issued_at=setup.clock.now))

    assert setup.firing("api_token_rejected") == 0
    assert setup.value("rotator_token_healthy", token="acme") == 1


def test_alerts_firing_counts_tokens_per_kind(setup: Setup) -> None:
    setup.monitor.record(rejected("acme"))
    setup.monitor.record(rejected("globex"))

    assert setup.firing("api_token_rejected") == 2
    assert setup.firing("exchange_failed") == 0


def test_one_failed_vault_health_check_does_not_fire_vault_unavailable(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rotator.monitor")

    setup.monitor.vault_health(False, None)

    assert setup.value("rotator_vault_up") == 0
    assert setup.firing("vault_unavailable") == 0
    assert alert_lines(caplog, "vault_unavailable") == []


def test_two_failed_vault_health_checks_fire_vault_unavailable_once(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rotator.monitor")

    for _ in range(4):
        setup.monitor.vault_health(False, None)
        setup.clock.now += timedelta(minutes=1)

    assert setup.firing("vault_unavailable") == 1
    assert alert_lines(caplog, "firing", "vault_unavailable") == ["alert firing vault_unavailable "]


def test_a_healthy_vault_resolves_vault_unavailable(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rotator.monitor")
    setup.monitor.vault_health(False, None)
    setup.monitor.vault_health(False, None)

    setup.monitor.vault_health(True, 3600.0)

    assert setup.firing("vault_unavailable") == 0
    assert setup.value("rotator_vault_up") == 1
    assert setup.value("rotator_vault_token_ttl_seconds") == 3600
    assert alert_lines(caplog, "resolved", "vault_unavailable") == [
        "alert resolved vault_unavailable "
    ]


def test_a_healthy_check_restarts_the_count_of_vault_failures(setup: Setup) -> None:
    setup.monitor.vault_health(False, None)
    setup.monitor.vault_health(True, None)

    setup.monitor.vault_health(False, None)

    assert setup.firing("vault_unavailable") == 0


def test_check_token_exports_the_issuances_of_the_last_hour(setup: Setup) -> None:
    history = (
        T0 - timedelta(hours=3),
        T0 - timedelta(minutes=61),
        T0 - timedelta(minutes=50),
        T0 - timedelta(minutes=10),
        T0,
    )
    metadata = OutputMetadata(
        current_version=5,
        custom_metadata={"expires_at": "2026-05-01T13:00:00Z", "issued_at": "2026-05-01T12:00:00Z"},
        history=history,
    )

    setup.monitor.check_token("acme", metadata)

    assert setup.value("rotator_issuances_last_hour", token="acme") == 3


def test_check_token_without_an_output_exports_zero_issuances(setup: Setup) -> None:
    setup.monitor.check_token("acme", None)

    assert setup.value("rotator_issuances_last_hour", token="acme") == 0


def test_check_token_fires_access_token_expiring_from_metadata_alone(setup: Setup) -> None:
    setup.monitor.record(refreshed())  # the lifetime is known from the token rotator stored
    metadata = OutputMetadata(5, {"expires_at": "2026-05-01T13:00:00Z"}, (T0,))
    setup.clock.now = T0 + timedelta(minutes=55)

    setup.monitor.check_token("acme", metadata)

    assert setup.firing("access_token_expiring") == 1


def test_token_removed_removes_the_tokens_series(setup: Setup) -> None:
    setup.monitor.record(refreshed("acme"))
    setup.monitor.record(refreshed("globex"))
    setup.monitor.check_token("acme", OutputMetadata(1, {}, (T0,)))
    setup.monitor.record_exchange("acme", "success", 0.2)

    setup.monitor.token_removed("acme")

    for name in (
        "rotator_token_healthy",
        "rotator_access_token_expires_timestamp_seconds",
        "rotator_issuances_last_hour",
    ):
        assert setup.value(name, token="acme") is None, name
    assert setup.value("rotator_exchanges_total", token="acme", result="success") is None
    assert setup.value("rotator_token_healthy", token="globex") == 1


@pytest.mark.parametrize("result", ["success", "rejected", "rate_limited", "transient", "refused"])
def test_token_removed_removes_the_exchange_counts_of_every_result(
    setup: Setup, result: str
) -> None:
    setup.monitor.record_exchange("acme", result, 0.2)

    setup.monitor.token_removed("acme")

    assert setup.value("rotator_exchanges_total", token="acme", result=result) is None


def test_token_removed_resolves_the_tokens_alerts(setup: Setup) -> None:
    setup.monitor.record(rejected("acme"))
    setup.monitor.record(rejected("globex"))

    setup.monitor.token_removed("acme")

    assert setup.firing("api_token_rejected") == 1


def test_record_exchange_counts_exchanges_by_token_and_result(setup: Setup) -> None:
    setup.monitor.record_exchange("acme", "success", 0.2)
    setup.monitor.record_exchange("acme", "success", 0.3)
    setup.monitor.record_exchange("acme", "rejected", 0.1)

    assert setup.value("rotator_exchanges_total", token="acme", result="success") == 2
    assert setup.value("rotator_exchanges_total", token="acme", result="rejected") == 1
    assert setup.value("rotator_exchange_duration_seconds_count") == 3


def test_the_issuance_cap_is_exported(setup: Setup) -> None:
    assert setup.value("rotator_max_issuances_per_hour") == CONFIG.alerts.max_issuances_per_hour


def reloaded(**alerts: object) -> Config:
    return Config(vault=CONFIG.vault, alerts=replace(CONFIG.alerts, **alerts))  # type: ignore[arg-type]


def test_a_reloaded_cap_is_exported(setup: Setup) -> None:
    setup.monitor.reconfigure(reloaded(max_issuances_per_hour=9))

    assert setup.value("rotator_max_issuances_per_hour") == 9


def test_a_reloaded_repeat_interval_decides_the_next_repeat(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rotator.monitor")
    setup.monitor.record(rejected())
    setup.monitor.reconfigure(reloaded(repeat_interval_seconds=60.0))
    setup.clock.now = T0 + timedelta(seconds=61)

    setup.monitor.repeat()

    assert len(alert_lines(caplog, "firing", "api_token_rejected")) == 2
