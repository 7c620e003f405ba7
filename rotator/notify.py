"""Alert sinks for webhooks and Alertmanager, and the dispatcher that feeds every sink.

Each sink gets its own queue and worker thread, so a slow or failing sink never blocks rotation
or the other sinks. A delivery is tried `ATTEMPTS` times with a short backoff, each request with a
timeout for connecting and each read, and an overall deadline (`SINK_DEADLINE_SECONDS`, headers
included: `deadlines.py`), and then dropped with one log line. Of an answer only the status
matters: at most `MAX_ANSWER_BYTES` of its body are read (so that the connection can be reused),
the rest never. Text is redacted (`redact.SECRETS`) before it leaves.
Sentry is a sink too, but lives in `sentry.py`, the only module importing sentry_sdk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from rotator.alerting import AlertEvent
from rotator.deadlines import WATCHDOG, install
from rotator.errors import SinkError
from rotator.redact import SECRETS
from rotator.tokens import format_time

logger = logging.getLogger(__name__)

ATTEMPTS = 3
SINK_TIMEOUT_SECONDS = 5.0  # connecting, and each read
SINK_DEADLINE_SECONDS = 10.0  # one attempt, from connecting to the end of the answer's headers
MAX_ANSWER_BYTES = 64 * 1024
QUEUE_LIMIT = 1000


class Sink(Protocol):
    name: str
    # True for sinks that forget firing alerts unless re-posted (Alertmanager).
    wants_refresh: bool

    def send(self, event: AlertEvent) -> None:
        """Deliver one event or raise SinkError."""


def webhook_payload(event: AlertEvent, host: str) -> dict[str, Any]:
    """The JSON object SPEC defines for webhooks."""
    payload: dict[str, Any] = {
        "status": event.status,
        "alert": event.kind.value,
        "severity": event.severity.value,
        "summary": SECRETS.redact(event.summary),
        "started_at": format_time(event.started_at),
        "host": host,
    }
    if event.token is not None:
        payload["token"] = event.token
    if event.ended_at is not None:
        payload["ended_at"] = format_time(event.ended_at)
    return payload


def alertmanager_alert(event: AlertEvent, host: str) -> dict[str, Any]:
    """One alert of Alertmanager's API v2 `POST /api/v2/alerts` body."""
    labels = {"alertname": event.kind.value, "severity": event.severity.value, "host": host}
    if event.token is not None:
        labels["token"] = event.token
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": SECRETS.redact(event.summary)},
        "startsAt": _iso(event.started_at),
    }
    if event.ended_at is not None:
        alert["endsAt"] = _iso(event.ended_at)
    return alert


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _HttpSink:
    wants_refresh = False

    def __init__(self, url: str, session: requests.Session) -> None:
        """`session` gets deadline-aware adapters mounted (`deadlines.install`) unless it has
        them; it may be shared between sinks."""
        self.url = url
        install(session, max_retries=0)
        self._session = session
        # Webhook URLs often carry a secret in their path (Slack, Teams): name the host only.
        parts = urlsplit(url)
        self.name = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def _post(self, body: Any) -> None:
        too_slow = f"{self.name}: no answer within the deadline ({SINK_DEADLINE_SECONDS:g} s)"
        with WATCHDOG.deadline(SINK_DEADLINE_SECONDS) as deadline:
            try:
                response = self._session.post(
                    self.url,
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                    timeout=SINK_TIMEOUT_SECONDS,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.exceptions.RequestException as exc:
                if deadline.expired:
                    raise SinkError(too_slow) from None
                raise SinkError(f"{self.name}: {type(exc).__name__}") from None
            with response:
                if deadline.expired:  # cut mid-headers: the status line alone is no answer
                    raise SinkError(too_slow)
                _skim(response)
            if not 200 <= response.status_code < 300:
                raise SinkError(f"{self.name}: answered {response.status_code}")


def _skim(response: requests.Response) -> None:
    """Read and drop the body, up to MAX_ANSWER_BYTES and while the deadline lasts; a body read
    to its end lets the connection be reused, any other is closed with the response."""
    size = 0
    with contextlib.suppress(
        requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError
    ):
        while size <= MAX_ANSWER_BYTES and (chunk := response.raw.read1(8192)):
            size += len(chunk)


class WebhookSink(_HttpSink):
    """POSTs SPEC's JSON payload to one URL."""

    def __init__(self, url: str, host: str, session: requests.Session) -> None:
        super().__init__(url, session)
        self._host = host
        # The path is often the secret, and urllib3 logs it (without the host) at DEBUG.
        parts = urlsplit(url)
        SECRETS.register(parts.path, parts.query)

    def send(self, event: AlertEvent) -> None:
        self._post(webhook_payload(event, self._host))


class AlertmanagerSink(_HttpSink):
    """POSTs to Alertmanager's API v2. Firing alerts carry an `endsAt` a little past the next
    expected re-post (`Notifier.refresh`, every check), so the alerts of a daemon that died
    resolve by themselves."""

    wants_refresh = True

    def __init__(
        self, base_url: str, host: str, session: requests.Session, resend_every: timedelta
    ) -> None:
        super().__init__(base_url.rstrip("/") + "/api/v2/alerts", session)
        self._host = host
        self._lease = resend_every * 3

    def send(self, event: AlertEvent) -> None:
        alert = alertmanager_alert(event, self._host)
        if event.ended_at is None:
            alert["endsAt"] = _iso(datetime.now(UTC) + self._lease)
        self._post([alert])


@dataclass(frozen=True)
class _Refresh:
    event: AlertEvent
    still_firing: Callable[[AlertEvent], bool]


_Item = AlertEvent | _Refresh | None


class Notifier:
    """Fans events out to sinks, one worker thread and bounded queue per sink."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        sleep: Callable[[float], None] = time.sleep,
        on_result: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._sleep = sleep
        self._on_result = on_result
        self._workers: list[tuple[queue.Queue[_Item], threading.Thread]] = []
        self._refreshing: list[tuple[Sink, queue.Queue[_Item]]] = []
        for sink in sinks:
            inbox: queue.Queue[_Item] = queue.Queue(QUEUE_LIMIT)
            thread = threading.Thread(
                target=self._work, args=(sink, inbox), name=f"notify {sink.name}", daemon=True
            )
            thread.start()
            self._workers.append((inbox, thread))
            if getattr(sink, "wants_refresh", False):
                self._refreshing.append((sink, inbox))

    def publish(self, events: Sequence[AlertEvent]) -> None:
        """Queue events for every sink; never blocks (a full queue drops with a log line)."""
        for event in events:
            logger.log(
                logging.WARNING if event.status == "firing" else logging.INFO,
                "alert %s %s%s: %s",
                event.status,
                event.kind.value,
                f" for {event.token}" if event.token else "",
                SECRETS.redact(event.summary),
            )
            for inbox, _thread in self._workers:
                try:
                    inbox.put_nowait(event)
                except queue.Full:
                    logger.error("alert queue full; dropped %s", event.kind.value)

    def refresh(
        self, firing: Sequence[AlertEvent], still_firing: Callable[[AlertEvent], bool]
    ) -> None:
        """Re-post every firing alert to the sinks that forget them otherwise; no log lines.

        `still_firing` is asked again right before each re-post, so a re-post queued just before
        the alert resolved is dropped instead of reviving it after its resolution."""
        for sink, inbox in self._refreshing:
            for event in firing:
                try:
                    inbox.put_nowait(_Refresh(event, still_firing))
                except queue.Full:
                    logger.error("alert queue for %s full; refresh dropped", sink.name)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout` seconds), then stop the workers."""
        deadline = time.monotonic() + timeout
        for inbox, _thread in self._workers:
            inbox.put(None)
        for _inbox, thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, sink: Sink, inbox: queue.Queue[_Item]) -> None:
        while (item := inbox.get()) is not None:
            if isinstance(item, _Refresh):
                if item.still_firing(item.event):
                    self._deliver(sink, item.event)
            else:
                self._deliver(sink, item)

    def _deliver(self, sink: Sink, event: AlertEvent) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                sink.send(event)
            except SinkError as exc:
                if attempt == ATTEMPTS:
                    logger.error("alert %s not delivered to %s", event.kind.value, exc)
                    self._report(sink, ok=False)
                    return
                self._sleep(0.5 * 2 ** (attempt - 1))
            except Exception:  # a sink's bug must not kill its worker
                logger.exception("alert sink %s failed", sink.name)
                self._report(sink, ok=False)
                return
            else:
                self._report(sink, ok=True)
                return

    def _report(self, sink: Sink, *, ok: bool) -> None:
        if self._on_result is not None:
            self._on_result(sink.name, ok)
