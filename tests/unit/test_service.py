"""What a SIGHUP reload can apply and what needs a restart: rotator.service.restart_needed."""

from __future__ import annotations

from dataclasses import replace

from rotator.config import AlertsConfig, Config, ExchangeConfig, MetricsConfig, VaultConfig
from rotator.service import restart_needed

RUNNING = Config(vault=VaultConfig(addr="http://127.0.0.1:8200"))


def test_a_reload_of_the_same_config_needs_no_restart() -> None:
    assert restart_needed(RUNNING, RUNNING) == []


def test_reloadable_keys_need_no_restart() -> None:
    new = replace(
        RUNNING,
        exchange=ExchangeConfig(timeout_seconds=3, refresh_fraction=0.7),
        alerts=AlertsConfig(
            max_issuances_per_hour=9,
            repeat_interval_seconds=60,
            webhook_urls=("https://hooks.example.com/x",),
        ),
    )

    assert restart_needed(RUNNING, new) == []


def test_the_listener_the_exchange_pool_and_sentry_are_named_when_changed() -> None:
    new = replace(
        RUNNING,
        metrics=MetricsConfig(listen="127.0.0.1:9999"),
        exchange=ExchangeConfig(max_workers=3),
        alerts=AlertsConfig(sentry_dsn="https://key@sentry.example.com/1"),
    )

    assert restart_needed(RUNNING, new) == [
        "metrics.listen",
        "exchange.max_workers",
        "alerts.sentry_dsn",
    ]
