"""Prometheus metrics (SPEC, "Metrics") and the HTTP server for `/metrics` and `/healthz`.

The registry is injected (tests pass a fresh `CollectorRegistry()`); labels are token names and
alert kinds, never secret values.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from rotator.errors import FailureKind

logger = logging.getLogger(__name__)


class RotatorMetrics:
    """Every metric rotator exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.exchanges = Counter(
            "rotator_exchanges",
            "Token exchanges at the IdP, by token and result.",
            ["token", "result"],
            registry=registry,
        )
        self.exchange_duration = Histogram(
            "rotator_exchange_duration_seconds",
            "Duration of one exchange at the IdP.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.expires = Gauge(
            "rotator_access_token_expires_timestamp_seconds",
            "When the access token consumers read expires (Unix time).",
            ["token"],
            registry=registry,
        )
        self.healthy = Gauge(
            "rotator_token_healthy",
            "1 while the token works and consumers hold a valid access token.",
            ["token"],
            registry=registry,
        )
        self.issuances = Gauge(
            "rotator_issuances_last_hour",
            "Access tokens issued for the token in the last hour.",
            ["token"],
            registry=registry,
        )
        self.vault_up = Gauge(
            "rotator_vault_up", "1 while Vault answers and accepts rotator.", registry=registry
        )
        self.vault_token_ttl = Gauge(
            "rotator_vault_token_ttl_seconds",
            "Remaining TTL of rotator's own Vault token (0: does not expire).",
            registry=registry,
        )
        self.alerts_firing = Gauge(
            "rotator_alerts_firing", "Alerts firing, by kind.", ["alert"], registry=registry
        )
        self.last_cycle = Gauge(
            "rotator_last_cycle_timestamp_seconds",
            "When the last check cycle completed (Unix time).",
            registry=registry,
        )
        self.tokens = Gauge("rotator_tokens", "Tokens under the source prefix.", registry=registry)
        self.max_issuances = Gauge(
            "rotator_max_issuances_per_hour",
            "The configured issuance cap per token (alerts.max_issuances_per_hour).",
            registry=registry,
        )

    def forget(self, token: str) -> None:
        """Remove every series of a token that is no longer managed."""
        for gauge in (self.expires, self.healthy, self.issuances):
            with contextlib.suppress(KeyError):
                gauge.remove(token)
        # Every result rotation reports: "success" and each failure kind.
        for result in ("success", *FailureKind):
            with contextlib.suppress(KeyError):
                self.exchanges.remove(token, result)


class MetricsServer:
    """Serves `/metrics` and `/healthz` on a background thread."""

    def __init__(
        self, listen: str, registry: CollectorRegistry, is_healthy: Callable[[], bool]
    ) -> None:
        host, _, port = listen.rpartition(":")
        registry_ = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == "/metrics":
                    self._answer(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = is_healthy()
                    self._answer(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
