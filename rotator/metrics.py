"""Prometheus metrics (SPEC, "Metrics") and the HTTP server for `/metrics` and `/healthz`.

The registry is injected (tests pass a fresh `CollectorRegistry()`); labels are token names and
alert kinds, never secret values. The server holds up against slow clients: see `MetricsServer`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from rotator.errors import ConfigError, FailureKind

REPLACEMENT_RESULTS = ("success", "failed")

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 5.0  # a request's head must arrive in full within this of connecting
IO_TIMEOUT_SECONDS = 5.0  # for writing the answer
MAX_HEAD_BYTES = 16 * 1024  # a scraper's request line and headers are a few hundred bytes
MAX_PENDING = 128  # connections waiting for their head; a new one beyond closes the oldest
WORKERS = 4  # threads answering complete requests
MAX_QUEUED = 32  # complete requests waiting for a worker; beyond, new ones are closed


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
        self.api_token_expires = Gauge(
            "rotator_api_token_expires_timestamp_seconds",
            "When the long-lived API token expires (Unix time), from the source or MTM.",
            ["token"],
            registry=registry,
        )
        self.replacements = Counter(
            "rotator_api_token_replacements",
            "Replacements of the API token at MTM, by token and result (success, failed).",
            ["token", "result"],
            registry=registry,
        )
        self.next_healthy = Gauge(
            "rotator_api_token_next_healthy",
            "1 while the staged api_token_next works at the IdP, 0 when it is rejected.",
            ["token"],
            registry=registry,
        )

    def forget(self, token: str) -> None:
        """Remove every series of a token that is no longer managed."""
        for gauge in (
            self.expires,
            self.healthy,
            self.issuances,
            self.api_token_expires,
            self.next_healthy,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(token)
        # Every result rotation reports: "success" and each failure kind.
        for result in ("success", *FailureKind):
            with contextlib.suppress(KeyError):
                self.exchanges.remove(token, result)
        for result in REPLACEMENT_RESULTS:
            with contextlib.suppress(KeyError):
                self.replacements.remove(token, result)


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the server already read; HTTP/1.0, so one per connection.

    `request` is `(socket, head)`: the head (request line and headers) arrives as `rfile`, the
    socket, with `IO_TIMEOUT_SECONDS`, takes the answer."""

    server: MetricsServer  # type: ignore[assignment]

    def setup(self) -> None:
        sock, head = self.request
        self.connection = sock
        self.rfile = io.BytesIO(head)
        self.wfile = sock.makefile("wb")  # flushed and closed by finish(); the server closes sock

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            ok = self.server.is_healthy()
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


@dataclass
class _Pending:
    """A connection whose request head has not arrived in full yet."""

    sock: socket.socket
    address: Any
    since: float
    head: bytearray = field(default_factory=bytearray)


class MetricsServer:
    """Serves `/metrics` and `/healthz` from a background thread.

    Slow or hostile clients cost no thread: one thread accepts connections and collects each
    request's head without blocking (at most `MAX_HEAD_BYTES`, within `REQUEST_TIMEOUT_SECONDS`
    of connecting, else the connection is closed), and only a complete request goes to one of
    `WORKERS` threads, which answers with `IO_TIMEOUT_SECONDS` on the socket. At most
    `MAX_PENDING` connections wait for their head; a new one beyond that closes the oldest.
    """

    def __init__(
        self, listen: str, registry: CollectorRegistry, is_healthy: Callable[[], bool]
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        self.registry = registry
        self.is_healthy = is_healthy
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, int(port)), family=family, backlog=128)
        except OSError as exc:
            raise ConfigError(
                f"metrics.listen: cannot listen on {listen} ({exc.strerror or exc})"
            ) from None
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._host = host
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stopping = False
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first
        self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="metrics")
        self._queued = threading.BoundedSemaphore(WORKERS + MAX_QUEUED)
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics", self._host, self.port)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and the socket; waits for the answers in
        progress (each bounded by IO_TIMEOUT_SECONDS). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._wake_writer.send(b"x")
        if self._thread.is_alive():
            self._thread.join()
        else:
            self._close_all()
        self._workers.shutdown(wait=True, cancel_futures=True)

    # --- the accepting thread ---------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._wake_reader, selectors.EVENT_READ)
        try:
            while not self._stopping:
                for key, _events in selector.select(self._next_timeout()):
                    if key.fileobj is self._listener:
                        self._accept(selector)
                    elif key.fileobj is not self._wake_reader:
                        self._receive(selector, self._pending[cast(socket.socket, key.fileobj)])
                self._expire(selector)
        finally:
            selector.close()
            self._close_all()

    def _next_timeout(self) -> float | None:
        if not self._pending:
            return None
        oldest = next(iter(self._pending.values()))
        return max(0.0, oldest.since + REQUEST_TIMEOUT_SECONDS - time.monotonic())

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: keep serving the others
                logger.warning("metrics: cannot accept a connection (%s)", exc.strerror)
                return
            sock.setblocking(False)
            if len(self._pending) >= MAX_PENDING:
                self._drop(selector, next(iter(self._pending.values())))
            self._pending[sock] = _Pending(sock, address, time.monotonic())
            selector.register(sock, selectors.EVENT_READ)

    def _receive(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(MAX_HEAD_BYTES + 1 - len(pending.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk or len(pending.head) + len(chunk) > MAX_HEAD_BYTES:
            self._drop(selector, pending)  # gone, or a head no scraper sends
            return
        pending.head += chunk
        if b"\r\n\r\n" not in pending.head and b"\n\n" not in pending.head:
            return
        selector.unregister(pending.sock)
        del self._pending[pending.sock]
        if not self._queued.acquire(blocking=False):
            pending.sock.close()  # every worker busy and the queue full: shed the load
            return
        self._workers.submit(self._answer, pending.sock, pending.address, bytes(pending.head))

    def _expire(self, selector: selectors.BaseSelector) -> None:
        limit = time.monotonic() - REQUEST_TIMEOUT_SECONDS
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.since > limit:
                return
            self._drop(selector, oldest)

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        selector.unregister(pending.sock)
        del self._pending[pending.sock]
        pending.sock.close()

    def _close_all(self) -> None:
        for pending in self._pending.values():
            pending.sock.close()
        self._pending.clear()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # --- the workers --------------------------------------------------------------------------

    def _answer(self, sock: socket.socket, address: Any, head: bytes) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(IO_TIMEOUT_SECONDS)
            _Handler((sock, head), address, self)  # type: ignore[arg-type]
        except OSError:
            pass  # the client went away or stopped reading
        except Exception:  # a bug must not kill the worker
            logger.exception("metrics: answering a request failed")
        finally:
            sock.close()
            self._queued.release()
