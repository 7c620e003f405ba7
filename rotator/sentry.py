"""The Sentry adapter: the only module that imports sentry_sdk.

- `SentrySink` sends one event per firing alert, fingerprinted by (kind, token) so Sentry groups
  every repeat of one alert into one issue, tagged with kind, token and host.
- `CronMonitor` reports each cycle to Sentry Crons (`in_progress`, then `ok` or `error`) with a
  `monitor_config` matching the real interval, so a dead or hung daemon shows up as missed.
- Every event and breadcrumb passes `redact.SECRETS` on its way out (`before_send`,
  `before_breadcrumb`); default integrations that would capture local variables or request
  bodies are off.
- No request rotator makes carries Sentry's `sentry-trace` or `baggage` headers (the IdP, Vault
  and webhooks learn nothing of rotator's Sentry), and the SDK's own log (`sentry_sdk.errors`,
  printed with SENTRY_DEBUG, URLs included) passes the redactor too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.crons.consts import MonitorStatus
from sentry_sdk.integrations.logging import LoggingIntegration

from rotator import __version__
from rotator.alerting import AlertEvent, Severity
from rotator.redact import SECRETS, RedactingFilter

logger = logging.getLogger(__name__)

MONITOR_SLUG = "rotator-cycle"


def _scrub(event: Any, _hint: Any) -> Any:
    return SECRETS.redact_data(event)


def init(dsn: str, host: str, transport: Any = None) -> None:
    """Start the SDK. `transport` is for tests; production uses the SDK's HTTP transport."""
    options: dict[str, Any] = {
        "dsn": dsn,
        "release": f"rotator@{__version__}",
        "server_name": host,
        "before_send": _scrub,
        "before_breadcrumb": _scrub,
        # PII stays off (the default); `send_default_pii` is not passed: recent sentry-sdk 2.x
        # releases deprecate it (a DeprecationWarning at init) for `data_collection`.
        "include_local_variables": False,
        "max_request_body_size": "never",
        # The stdlib integration would add `sentry-trace`/`baggage` to every outgoing request.
        "trace_propagation_targets": [],
        "shutdown_timeout": 5,
        # Log records become breadcrumbs only; alerts are sent explicitly, once, by SentrySink.
        "integrations": [LoggingIntegration(level=logging.INFO, event_level=None)],
    }
    if transport is not None:
        options["transport"] = transport
    _redact_own_log()
    sentry_sdk.init(**options)


def _redact_own_log() -> None:
    """sentry-sdk prints its own log (SENTRY_DEBUG) through a stderr handler of its own, which
    rotator's redacting log handler never sees; a filter on the logger itself redacts each
    record before any handler, its own or rotator's, gets it."""
    own = logging.getLogger("sentry_sdk.errors")
    if not any(isinstance(existing, RedactingFilter) for existing in own.filters):
        own.addFilter(RedactingFilter(SECRETS))


def flush(timeout: float = 5.0) -> None:
    sentry_sdk.flush(timeout=timeout)


class SentrySink:
    """Alert sink: firing alerts become Sentry events; resolutions become breadcrumbs."""

    name = "sentry"
    wants_refresh = False

    def __init__(self, host: str) -> None:
        self._host = host

    def send(self, event: AlertEvent) -> None:
        if event.status != "firing":
            sentry_sdk.add_breadcrumb(
                category="alert", message=f"resolved {event.kind.value} {event.token or ''}"
            )
            return
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = ["rotator-alert", event.kind.value, event.token or "-"]
            scope.set_tag("alert", event.kind.value)
            scope.set_tag("token", event.token or "-")
            scope.set_tag("host", self._host)
            scope.set_tag("severity", event.severity.value)
            sentry_sdk.capture_message(
                SECRETS.redact(event.summary),
                level="error" if event.severity is Severity.CRITICAL else "warning",
            )


class CronMonitor:
    """Sentry Crons check-ins for the daemon's periodic cycle."""

    def __init__(self, interval_seconds: float, max_runtime_seconds: float) -> None:
        minutes = max(1, math.ceil(interval_seconds / 60))
        self._config: Any = {
            "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
            "checkin_margin": max(1, minutes),
            "max_runtime": max(1, math.ceil(max_runtime_seconds / 60)),
        }

    def start(self) -> str | None:
        """Report a cycle starting; returns the check-in id for `finish`."""
        return capture_checkin(
            monitor_slug=MONITOR_SLUG,
            status=MonitorStatus.IN_PROGRESS,
            monitor_config=self._config,
        )

    def finish(self, check_in_id: str | None, ok: bool, duration: float) -> None:
        capture_checkin(
            monitor_slug=MONITOR_SLUG,
            check_in_id=check_in_id,
            status=MonitorStatus.OK if ok else MonitorStatus.ERROR,
            duration=duration,
            monitor_config=self._config,
        )
