"""Assembling the daemon from a config, rebuilding it on SIGHUP, and taking it apart in order.

`wiring.build_rotator` wires the Vault and IdP adapters. A `Service` adds the monitor (alerts
and metrics), the alert sinks, Sentry and the `/metrics` server; `run` runs until a signal, then
shuts down in this order: drain the scheduler, stop the HTTP server, deliver queued alerts,
flush Sentry.

Config in one place: everything built from the config is built by a function here, and a reload
(`Service.reload`) builds it again from the new file, except what only a restart can change
(`restart_needed`: the metrics listener, the exchange pool, Sentry's DSN), which the reload names
in a warning.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

import requests
from prometheus_client import CollectorRegistry

from rotator import config as config_module
from rotator import sentry
from rotator.config import Config
from rotator.daemon import Daemon, run_forever
from rotator.errors import ConfigError, VaultError
from rotator.metrics import MetricsServer, RotatorMetrics
from rotator.monitor import Monitor
from rotator.notify import AlertmanagerSink, Notifier, Sink, WebhookSink
from rotator.redact import SECRETS
from rotator.rotation import Rotator
from rotator.systemd import SystemdNotifier
from rotator.wiring import build_api_tokens, build_rotator

logger = logging.getLogger(__name__)


def build_notifier(config: Config, host: str, with_sentry: bool) -> Notifier | None:
    """Every configured alert sink behind one notifier (None: no sink configured)."""
    alerts = config.alerts
    session = requests.Session()
    sinks: list[Sink] = []
    for url in alerts.webhook_urls:
        SECRETS.register(url)  # webhook URLs often embed a secret
        sinks.append(WebhookSink(url, host, session))
    if alerts.alertmanager_url:
        sinks.append(AlertmanagerSink(alerts.alertmanager_url, host, session, resend_every(config)))
    if with_sentry:
        sinks.append(sentry.SentrySink(host))
    return Notifier(sinks) if sinks else None


def resend_every(config: Config) -> timedelta:
    """How often firing alerts are re-posted to Alertmanager: every check, at least a minute."""
    return timedelta(seconds=max(config.schedule.check_interval_seconds, 60))


def build_check_ins(config: Config, with_sentry: bool) -> sentry.CronMonitor | None:
    """Sentry Crons check-ins for the check cycle, at the configured interval."""
    if not with_sentry:
        return None
    interval = config.schedule.check_interval_seconds
    return sentry.CronMonitor(interval, max_runtime_seconds=interval)


def restart_needed(running: Config, new: Config) -> list[str]:
    """The keys whose change a reload cannot apply, with the config the process started with."""
    changed = []
    if running.metrics.listen != new.metrics.listen:
        changed.append("metrics.listen")
    if running.exchange.max_workers != new.exchange.max_workers:
        changed.append("exchange.max_workers")
    if running.alerts.sentry_dsn != new.alerts.sentry_dsn:
        changed.append("alerts.sentry_dsn")
    return changed


def _sinks_changed(old: Config, new: Config) -> bool:
    return (
        old.alerts.webhook_urls != new.alerts.webhook_urls
        or old.alerts.alertmanager_url != new.alerts.alertmanager_url
        or resend_every(old) != resend_every(new)
    )


class Service:
    """The daemon and everything around it, built from one config."""

    def __init__(self, config: Config, rotator: Rotator | None = None) -> None:
        self.started_with = config  # what restart_needed compares against
        self.config = config
        self.host = socket.gethostname()
        self.sentry = bool(config.alerts.sentry_dsn)
        if self.sentry:
            sentry.init(config.alerts.sentry_dsn, self.host)
        rotator = rotator or build_rotator(config)
        self.registry = CollectorRegistry()
        self.monitor = Monitor(
            config, RotatorMetrics(self.registry), build_notifier(config, self.host, self.sentry)
        )
        rotator.on_exchange = self.monitor.record_exchange
        self.daemon = Daemon(
            rotator,
            self.monitor,
            build_check_ins(config, self.sentry),
            systemd=SystemdNotifier(),
            api_tokens=build_api_tokens(rotator),
        )

    def run(
        self,
        stop: threading.Event | None = None,
        on_idle: Callable[[Daemon], None] | None = None,
        idle_seconds: float = 1.0,
    ) -> int:
        """Run the daemon until SIGTERM/SIGINT (or `stop`); returns the exit code."""
        server = None
        if self.config.metrics.listen:
            server = MetricsServer(
                self.config.metrics.listen, self.registry, self.daemon.is_healthy
            ).start()
        try:
            idle = (lambda: on_idle(self.daemon)) if on_idle is not None else None
            return run_forever(
                self.daemon, stop, on_idle=idle, idle_seconds=idle_seconds, on_reload=self.reload
            )
        finally:
            if server is not None:
                server.stop()
            self.monitor.close()
            self.daemon.rotator.exchanger.close()
            if self.daemon.api_tokens is not None:
                self.daemon.api_tokens.mtm.close()
            if self.sentry:
                sentry.flush()

    def reload(self) -> None:
        """SIGHUP: load the config file again and rebuild what is built from it. A config that
        does not load, or credentials Vault refuses, are logged and the running one stays."""
        path = self.config.path
        if path is None:
            logger.warning("reload ignored: this daemon was not started from a config file")
            return
        try:
            config = config_module.load(path, os.environ)
            fresh = build_rotator(config, self.daemon.rotator)
        except (ConfigError, VaultError) as exc:
            logger.error("reload rejected, keeping the running configuration: %s", exc)
            return
        pending = restart_needed(self.started_with, config)
        if pending:
            logger.warning("reload: %s changed; that takes effect on restart", ", ".join(pending))
        if _sinks_changed(self.config, config):
            self.monitor.replace_notifier(build_notifier(config, self.host, self.sentry))
        self.monitor.reconfigure(config)
        old, old_keeper, self.config = self.daemon.rotator, self.daemon.api_tokens, config
        self.daemon.reload(fresh, build_check_ins(config, self.sentry), build_api_tokens(fresh))
        old.exchanger.close()
        if old_keeper is not None:
            old_keeper.mtm.close()


def run_service(
    config: Config,
    rotator: Rotator | None = None,
    stop: threading.Event | None = None,
    on_idle: Callable[[Daemon], None] | None = None,
    idle_seconds: float = 1.0,
) -> int:
    """Build a `Service` for `config` and run it; returns the exit code."""
    return Service(config, rotator).run(stop, on_idle, idle_seconds)
