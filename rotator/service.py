"""Assembling the daemon from a config, and taking it apart again in order.

`build_rotator` wires the Vault and IdP adapters; `run_service` adds the monitor (alerts and
metrics), the alert sinks, Sentry, and the `/metrics` server, runs until a signal, then shuts
down in this order: drain the scheduler, stop the HTTP server, deliver queued alerts, flush
Sentry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry

from rotator import config as config_module
from rotator import sentry
from rotator.config import Config
from rotator.daemon import Daemon, run_forever
from rotator.errors import ConfigError, VaultError
from rotator.exchange import TokenExchanger
from rotator.metrics import MetricsServer, RotatorMetrics
from rotator.monitor import Monitor
from rotator.notify import AlertmanagerSink, Notifier, Sink, WebhookSink
from rotator.redact import SECRETS
from rotator.rotation import Rotator
from rotator.systemd import SystemdNotifier
from rotator.vault import VaultStore

logger = logging.getLogger(__name__)


def build_rotator(config: Config, previous: Rotator | None = None) -> Rotator:
    """Wire the adapters for `config`. Raises VaultError / ConfigError from the Vault login.

    With `previous` (a reload), the new rotator takes over its memory (failures, backoff, held
    tokens) and instance id, so a reload neither forgets a backoff nor re-issues a token it
    holds."""
    workers = config.exchange.max_workers
    store = VaultStore.connect(config.vault, pool_size=workers + 2)
    exchanger = TokenExchanger(
        config.exchange.allowed_hosts,
        config.exchange.insecure_http_hosts,
        config.exchange.timeout_seconds,
        pool_size=workers,
    )
    if previous is None:
        return Rotator(config, store, exchanger)
    return Rotator(
        config,
        store,
        exchanger,
        memory=previous.memory,
        on_exchange=previous.on_exchange,
        instance_id=previous.instance_id,
    )


def build_monitor(config: Config, registry: CollectorRegistry, host: str) -> Monitor:
    """The monitor with every configured alert sink."""
    alerts = config.alerts
    session = requests.Session()
    sinks: list[Sink] = []
    for url in alerts.webhook_urls:
        SECRETS.register(url)  # webhook URLs often embed a secret
        sinks.append(WebhookSink(url, host, session))
    if alerts.alertmanager_url:
        resend = timedelta(seconds=max(config.schedule.check_interval_seconds, 60))
        sinks.append(AlertmanagerSink(alerts.alertmanager_url, host, session, resend))
    if alerts.sentry_dsn:
        SECRETS.register(alerts.sentry_dsn)
        sinks.append(sentry.SentrySink(host))
    notifier = Notifier(sinks) if sinks else None
    return Monitor(config, RotatorMetrics(registry), notifier)


def run_service(
    config: Config,
    rotator: Rotator | None = None,
    stop: threading.Event | None = None,
    on_idle: Callable[[Daemon], None] | None = None,
    idle_seconds: float = 1.0,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or `stop`); returns the exit code."""
    host = socket.gethostname()
    if config.alerts.sentry_dsn:
        sentry.init(config.alerts.sentry_dsn, host)
    rotator = rotator or build_rotator(config)
    registry = CollectorRegistry()
    monitor = build_monitor(config, registry, host)
    rotator.on_exchange = monitor.record_exchange
    check_ins = None
    if config.alerts.sentry_dsn:
        interval = config.schedule.check_interval_seconds
        check_ins = sentry.CronMonitor(interval, max_runtime_seconds=interval)
    daemon = Daemon(rotator, monitor, check_ins, systemd=SystemdNotifier())
    server = None
    if config.metrics.listen:
        server = MetricsServer(config.metrics.listen, registry, daemon.is_healthy).start()
    try:
        idle = (lambda: on_idle(daemon)) if on_idle is not None else None
        return run_forever(
            daemon,
            stop,
            on_idle=idle,
            idle_seconds=idle_seconds,
            on_reload=lambda: reload(daemon, config.path, monitor),
        )
    finally:
        if server is not None:
            server.stop()
        monitor.close()
        daemon.rotator.exchanger.close()
        if config.alerts.sentry_dsn:
            sentry.flush()


def reload(daemon: Daemon, path: Path | None, monitor: Monitor) -> None:
    """SIGHUP: load the config file again and carry on with it. A config that does not load,
    or credentials Vault refuses, are logged and the running configuration stays."""
    if path is None:
        logger.warning("reload ignored: this daemon was not started from a config file")
        return
    try:
        config = config_module.load(path, os.environ)
        fresh = build_rotator(config, daemon.rotator)
    except (ConfigError, VaultError) as exc:
        logger.error("reload rejected, keeping the running configuration: %s", exc)
        return
    if _needs_restart(daemon.rotator.config, config):
        logger.warning(
            "reload: [metrics], [alerts] sinks and exchange.max_workers take effect on restart"
        )
    old = daemon.rotator
    daemon.reload(fresh)
    old.exchanger.close()


def _needs_restart(old: Config, new: Config) -> bool:
    return (
        old.metrics != new.metrics
        or old.alerts.webhook_urls != new.alerts.webhook_urls
        or old.alerts.alertmanager_url != new.alerts.alertmanager_url
        or old.alerts.sentry_dsn != new.alerts.sentry_dsn
        or old.exchange.max_workers != new.exchange.max_workers
    )
