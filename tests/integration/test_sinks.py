"""Alert sinks and the metrics server against real servers on loopback: a recording webhook, a
real Alertmanager, the real sentry-sdk sending to a local envelope sink, and `/metrics` and
`/healthz` read over HTTP."""

from __future__ import annotations

import io
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sentry_sdk
from prometheus_client import CollectorRegistry

from rotator import metrics, notify, sentry
from rotator.alerting import AlertEvent, Kind, Severity
from rotator.dev.standin import LeanIXStandIn
from rotator.errors import ConfigError
from rotator.exchange import TokenExchanger
from rotator.metrics import MetricsServer, RotatorMetrics
from rotator.notify import ATTEMPTS, AlertmanagerSink, Notifier, SinkError, WebhookSink
from rotator.redact import SECRETS, RedactingFilter
from rotator.sources import parse_source
from tests.rawhttp import RawServer, drip
from tests.sinks import Alertmanager, EnvelopeSink, RecordingServer
from tests.waiting import wait_for

HOST = "test-host"
STARTED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
ENDED = datetime(2026, 5, 1, 12, 30, 0, tzinfo=UTC)


def firing(
    kind: Kind = Kind.EXCHANGE_FAILED,
    token: str | None = "acme",
    severity: Severity = Severity.WARNING,
    summary: str = "acme: the IdP answered 503 (3 attempts in a row)",
    started_at: datetime = STARTED,
) -> AlertEvent:
    return AlertEvent("firing", kind, token, severity, summary, started_at)


def resolved(event: AlertEvent, ended_at: datetime = ENDED) -> AlertEvent:
    return AlertEvent(
        "resolved",
        event.kind,
        event.token,
        event.severity,
        event.summary,
        event.started_at,
        ended_at=ended_at,
    )


class Results:
    """Notifier's on_result callback, recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[str, bool]] = []

    def __call__(self, name: str, ok: bool) -> None:
        with self._lock:
            self._seen.append((name, ok))

    def seen(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self._seen)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def deliver(sinks: list[Any], events: list[AlertEvent], **options: Any) -> None:
    """Publish through a real Notifier and wait until every sink worker is done."""
    options.setdefault("sleep", lambda seconds: None)
    notifier = Notifier(sinks, **options)
    notifier.publish(events)
    notifier.close(timeout=30)


# --- webhooks -------------------------------------------------------------------------------------


def test_a_firing_alert_reaches_the_webhook_as_specs_json(
    webhook: RecordingServer, session: requests.Session
) -> None:
    event = firing(Kind.API_TOKEN_REJECTED, "acme", Severity.CRITICAL, "acme: the IdP said 401")

    deliver([WebhookSink(webhook.url, HOST, session)], [event])

    assert webhook.bodies() == [
        {
            "status": "firing",
            "alert": "api_token_rejected",
            "token": "acme",
            "severity": "critical",
            "summary": "acme: the IdP said 401",
            "started_at": "2026-05-01T12:00:00Z",
            "host": HOST,
        }
    ]
    assert webhook.received[0].headers["Content-Type"] == "application/json"


def test_a_resolved_alert_reaches_the_webhook_with_ended_at(
    webhook: RecordingServer, session: requests.Session
) -> None:
    event = resolved(firing())

    deliver([WebhookSink(webhook.url, HOST, session)], [event])

    assert webhook.bodies() == [
        {
            "status": "resolved",
            "alert": "exchange_failed",
            "token": "acme",
            "severity": "warning",
            "summary": "acme: the IdP answered 503 (3 attempts in a row)",
            "started_at": "2026-05-01T12:00:00Z",
            "ended_at": "2026-05-01T12:30:00Z",
            "host": HOST,
        }
    ]


def test_a_global_alert_reaches_the_webhook_without_a_token(
    webhook: RecordingServer, session: requests.Session
) -> None:
    event = firing(Kind.VAULT_UNAVAILABLE, None, Severity.CRITICAL, "Vault is sealed")

    deliver([WebhookSink(webhook.url, HOST, session)], [event])

    (body,) = webhook.bodies()
    assert "token" not in body
    assert body["alert"] == "vault_unavailable"


def test_webhook_events_arrive_in_the_order_they_were_published(
    webhook: RecordingServer, session: requests.Session
) -> None:
    first = firing(token="one")
    events = [first, firing(token="two"), resolved(first)]

    deliver([WebhookSink(webhook.url, HOST, session)], events)

    assert [(b["status"], b["token"]) for b in webhook.bodies()] == [
        ("firing", "one"),
        ("firing", "two"),
        ("resolved", "one"),
    ]


def test_a_summary_holding_a_registered_secret_is_redacted_in_the_webhook(
    webhook: RecordingServer, session: requests.Session
) -> None:
    secret = f"webhook-summary-secret-{secrets.token_hex(8)}"
    SECRETS.register(secret)

    deliver([WebhookSink(webhook.url, HOST, session)], [firing(summary=f"got {secret}")])

    assert secret not in webhook.raw_text()
    assert webhook.bodies()[0]["summary"].startswith("got [REDACTED:")


def test_a_delivered_alert_is_reported_as_a_success(
    webhook: RecordingServer, session: requests.Session
) -> None:
    sink = WebhookSink(webhook.url, HOST, session)
    results = Results()

    deliver([sink], [firing()], on_result=results)

    assert results.seen() == [(sink.name, True)]


def test_a_failing_webhook_is_tried_attempts_times_then_dropped(
    webhook: RecordingServer, session: requests.Session
) -> None:
    webhook.status = 500
    sink = WebhookSink(webhook.url, HOST, session)
    results = Results()
    sleeps: list[float] = []

    deliver([sink], [firing()], sleep=sleeps.append, on_result=results)

    assert len(webhook.received) == ATTEMPTS
    assert results.seen() == [(sink.name, False)]
    assert len(sleeps) == ATTEMPTS - 1
    assert sleeps == sorted(sleeps), "backoff never shrinks"


def test_a_dropped_alert_does_not_stop_the_sinks_worker(
    webhook: RecordingServer, session: requests.Session
) -> None:
    webhook.status = 500
    sink = WebhookSink(webhook.url, HOST, session)
    results = Results()
    notifier = Notifier([sink], sleep=lambda seconds: None, on_result=results)
    try:
        notifier.publish([firing(token="dropped")])
        wait_for(results.seen, 10, "the first delivery to be given up")
        webhook.status = 200

        notifier.publish([firing(token="delivered")])
    finally:
        notifier.close(timeout=30)

    assert results.seen() == [(sink.name, False), (sink.name, True)]
    assert webhook.bodies()[-1]["token"] == "delivered"


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections (the kernel's backlog does) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield listener
    finally:
        listener.close()


def test_a_hanging_sink_does_not_delay_delivery_to_another_sink(
    webhook: RecordingServer, session: requests.Session, silent_listener: socket.socket
) -> None:
    port = silent_listener.getsockname()[1]
    stuck = WebhookSink(f"http://127.0.0.1:{port}/hook", HOST, session)
    fine = WebhookSink(webhook.url, HOST, session)
    results = Results()
    notifier = Notifier([stuck, fine], sleep=lambda seconds: None, on_result=results)
    try:
        started = time.monotonic()
        notifier.publish([firing()])

        # Well inside the stuck sink's own 5 s request timeout. (The server records the POST
        # before the sink has read the answer, so wait for the sink's own result.)
        wait_for(
            lambda: results.seen() == [(fine.name, True)],
            2.0,
            "the second sink's delivery, reported",
        )
        assert time.monotonic() - started < 2.0
        assert webhook.received
        assert results.seen() == [(fine.name, True)], "the stuck sink is still waiting"
    finally:
        silent_listener.close()  # resets the hanging connection; the retries are refused
        notifier.close(timeout=10)

    wait_for(lambda: (stuck.name, False) in results.seen(), 10, "the stuck sink to give up")


def test_a_webhook_urls_secret_path_never_appears_in_logs(
    webhook: RecordingServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rotator")
    path_secret = f"T0000/B0000/{secrets.token_hex(12)}"
    webhook.status = 503
    sink = WebhookSink(f"{webhook.url}/services/{path_secret}", HOST, session)

    deliver([sink], [firing()])

    assert len(webhook.received) == ATTEMPTS, "the secret path was really used"
    assert caplog.records, "something was logged"
    assert path_secret not in caplog.text
    assert "/services/" not in caplog.text
    undelivered = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert undelivered == [f"alert exchange_failed not delivered to {webhook.url}: answered 503"]


def test_a_webhook_urls_secret_path_is_redacted_from_urllib3s_debug_log(
    webhook: RecordingServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())  # as `rotator` installs it on its log handler
    path_secret = f"T0000/B0000/{secrets.token_hex(12)}"
    sink = WebhookSink(f"{webhook.url}/services/{path_secret}", HOST, session)

    deliver([sink], [firing()])

    requests_logged = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any('"POST [REDACTED:' in line for line in requests_logged), requests_logged
    assert path_secret not in caplog.text


def test_a_sink_names_itself_by_scheme_and_host_only(session: requests.Session) -> None:
    sink = WebhookSink("https://user:pass@hooks.example.com/services/T0/B0/XYZ", HOST, session)

    assert sink.name == "https://hooks.example.com"


def test_a_webhook_that_never_finishes_its_headers_fails_within_the_deadline(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "SINK_DEADLINE_SECONDS", 0.5)
    server = RawServer(drip(b"HTTP/1.1 200 OK\r\n", b"X", every=0.05))
    started = time.monotonic()
    try:
        with pytest.raises(SinkError, match="no answer within the deadline"):
            WebhookSink(server.url, HOST, session).send(firing())
    finally:
        server.close()

    assert time.monotonic() - started < 0.5 + 1.0  # slack for a loaded machine


def test_a_webhook_answer_is_read_no_further_than_a_bound(session: requests.Session) -> None:
    """A 200 whose body never ends: the status is all a delivery needs."""

    def endless(connection: socket.socket, stopped: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while not stopped.is_set():
            connection.sendall(b"x" * 65536)

    server = RawServer(endless)
    started = time.monotonic()
    try:
        WebhookSink(server.url, HOST, session).send(firing())  # delivered: it answered 200
    finally:
        server.close()

    assert time.monotonic() - started < notify.SINK_DEADLINE_SECONDS


# --- Alertmanager ---------------------------------------------------------------------------------


def unique_token() -> str:
    return f"am-{uuid.uuid4().hex[:12]}"


def alerts_for(alertmanager: Alertmanager, token: str) -> list[dict[str, Any]]:
    return [a for a in alertmanager.alerts() if a["labels"].get("token") == token]


def test_a_firing_alert_is_active_in_alertmanager_with_specs_labels(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    token = unique_token()
    sink = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))
    event = firing(
        Kind.API_TOKEN_REJECTED,
        token,
        Severity.CRITICAL,
        f"{token}: the IdP said 401",
        started_at=datetime.now(UTC) - timedelta(minutes=1),
    )

    sink.send(event)

    (alert,) = wait_for(lambda: alerts_for(alertmanager, token), 10, "the alert")
    assert alert["labels"] == {
        "alertname": "api_token_rejected",
        "token": token,
        "severity": "critical",
        "host": HOST,
    }
    assert alert["annotations"] == {"summary": f"{token}: the IdP said 401"}


def test_a_firing_alert_in_alertmanager_lasts_beyond_the_next_re_send(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    token = unique_token()
    sink = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))

    sink.send(firing(token=token, started_at=datetime.now(UTC)))

    (alert,) = wait_for(lambda: alerts_for(alertmanager, token), 10, "the alert")
    ends_at = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
    assert ends_at > datetime.now(UTC) + timedelta(minutes=2)


def test_a_global_alert_reaches_alertmanager_without_a_token_label(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    marker = unique_token()
    sink = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))

    sink.send(firing(Kind.VAULT_UNAVAILABLE, None, Severity.CRITICAL, f"Vault down {marker}"))

    def mine() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if marker in a["annotations"].get("summary", "")]

    (alert,) = wait_for(mine, 10, "the global alert")
    assert "token" not in alert["labels"]
    assert alert["labels"]["alertname"] == "vault_unavailable"


def test_a_resolved_alert_leaves_alertmanagers_active_alerts(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    token = unique_token()
    sink = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))
    event = firing(token=token, started_at=datetime.now(UTC) - timedelta(minutes=1))
    sink.send(event)
    wait_for(lambda: alerts_for(alertmanager, token), 10, "the alert to fire")

    sink.send(resolved(event, ended_at=datetime.now(UTC)))

    wait_for(lambda: not alerts_for(alertmanager, token), 10, "the alert to resolve")


def test_the_alertmanager_sink_delivers_through_the_notifier(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    token = unique_token()
    sink = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))
    results = Results()

    deliver([sink], [firing(token=token, started_at=datetime.now(UTC))], on_result=results)

    assert results.seen() == [(sink.name, True)]
    assert len(alerts_for(alertmanager, token)) == 1


def test_refresh_re_posts_firing_alerts_to_alertmanager_only(
    alertmanager: Alertmanager, webhook: RecordingServer, session: requests.Session
) -> None:
    token = unique_token()
    manager = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))
    hook = WebhookSink(webhook.url, HOST, session)
    results = Results()
    notifier = Notifier([manager, hook], sleep=lambda seconds: None, on_result=results)
    try:
        notifier.refresh(
            [firing(token=token, started_at=datetime.now(UTC))], still_firing=lambda _e: True
        )
    finally:
        notifier.close(timeout=30)

    assert results.seen() == [(manager.name, True)]
    assert webhook.received == []
    assert len(alerts_for(alertmanager, token)) == 1


def test_a_refresh_of_an_alert_resolved_meanwhile_is_not_sent(
    alertmanager: Alertmanager, session: requests.Session
) -> None:
    token = unique_token()
    manager = AlertmanagerSink(alertmanager.url, HOST, session, timedelta(minutes=1))
    results = Results()
    notifier = Notifier([manager], sleep=lambda seconds: None, on_result=results)
    try:
        notifier.refresh(
            [firing(token=token, started_at=datetime.now(UTC))], still_firing=lambda _e: False
        )
    finally:
        notifier.close(timeout=30)

    assert results.seen() == []
    assert alerts_for(alertmanager, token) == []


# --- Sentry ---------------------------------------------------------------------------------------


@pytest.fixture
def sentry_sink(envelope_sink: EnvelopeSink) -> Iterator[EnvelopeSink]:
    """The real sentry-sdk initialised for the envelope sink; closed again afterwards."""
    sentry_sdk.get_isolation_scope().clear_breadcrumbs()
    sentry.init(envelope_sink.dsn, host=HOST)
    try:
        yield envelope_sink
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear_breadcrumbs()


def sentry_events(sink: EnvelopeSink, count: int) -> list[dict[str, Any]]:
    sentry.flush()
    return wait_for(lambda: len(sink.events()) >= count and sink.events(), 10, "sentry events")


@pytest.mark.parametrize(
    ("severity", "level"), [(Severity.CRITICAL, "error"), (Severity.WARNING, "warning")]
)
def test_a_firing_alert_becomes_one_sentry_event_fingerprinted_by_kind_and_token(
    sentry_sink: EnvelopeSink, severity: Severity, level: str
) -> None:
    sink = sentry.SentrySink(HOST)

    sink.send(firing(Kind.ISSUANCE_RATE, "acme", severity, "acme: issuance cap reached"))

    (event,) = sentry_events(sentry_sink, 1)
    assert event["fingerprint"] == ["rotator-alert", "issuance_rate", "acme"]
    assert event["level"] == level
    assert event["message"] == "acme: issuance cap reached"
    assert event["tags"] == {
        "alert": "issuance_rate",
        "token": "acme",
        "host": HOST,
        "severity": severity.value,
    }
    assert event["server_name"] == HOST


def test_a_global_alert_is_fingerprinted_with_a_dash_for_the_token(
    sentry_sink: EnvelopeSink,
) -> None:
    sentry.SentrySink(HOST).send(firing(Kind.VAULT_UNAVAILABLE, None, Severity.CRITICAL))

    (event,) = sentry_events(sentry_sink, 1)
    assert event["fingerprint"] == ["rotator-alert", "vault_unavailable", "-"]


def test_a_resolved_alert_sends_no_sentry_event(sentry_sink: EnvelopeSink) -> None:
    sink = sentry.SentrySink(HOST)

    sink.send(resolved(firing(Kind.EXCHANGE_FAILED, "acme")))
    sink.send(firing(Kind.FOREIGN_WRITE, "marker"))  # so that the sink is known to receive

    (event,) = sentry_events(sentry_sink, 1)
    assert event["tags"]["alert"] == "foreign_write"
    assert len(sentry_sink.events()) == 1


def test_a_cycle_reports_in_progress_then_ok_to_sentry_crons(sentry_sink: EnvelopeSink) -> None:
    crons = sentry.CronMonitor(interval_seconds=300, max_runtime_seconds=300)

    check_in_id = crons.start()
    crons.finish(check_in_id, ok=True, duration=1.5)
    sentry.flush()

    check_ins = wait_for(
        lambda: len(sentry_sink.check_ins()) >= 2 and sentry_sink.check_ins(), 10, "two check-ins"
    )
    assert [c["status"] for c in check_ins] == ["in_progress", "ok"]
    assert check_in_id is not None
    assert {c["check_in_id"] for c in check_ins} == {check_in_id}
    assert {c["monitor_slug"] for c in check_ins} == {sentry.MONITOR_SLUG}
    for check_in in check_ins:
        assert check_in["monitor_config"]["schedule"] == {
            "type": "interval",
            "value": 5,
            "unit": "minute",
        }


def test_a_failed_cycle_reports_error_to_sentry_crons(sentry_sink: EnvelopeSink) -> None:
    crons = sentry.CronMonitor(interval_seconds=60, max_runtime_seconds=60)

    check_in_id = crons.start()
    crons.finish(check_in_id, ok=False, duration=0.5)
    sentry.flush()

    check_ins = wait_for(
        lambda: len(sentry_sink.check_ins()) >= 2 and sentry_sink.check_ins(), 10, "two check-ins"
    )
    assert [c["status"] for c in check_ins] == ["in_progress", "error"]
    assert check_ins[1]["check_in_id"] == check_in_id
    assert check_ins[1]["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 1,
        "unit": "minute",
    }


def test_a_sub_minute_interval_is_scheduled_as_one_minute(sentry_sink: EnvelopeSink) -> None:
    sentry.CronMonitor(interval_seconds=20, max_runtime_seconds=20).start()
    sentry.flush()

    (check_in,) = wait_for(sentry_sink.check_ins, 10, "a check-in")
    assert check_in["monitor_config"]["schedule"]["value"] == 1


def test_secrets_never_reach_sentry_in_breadcrumbs_or_events(
    sentry_sink: EnvelopeSink, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"sentry-bound-secret-{secrets.token_hex(8)}"
    SECRETS.register(secret)
    logger = logging.getLogger("tests.integration.sentry_leak")
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.info("holding %s for acme", secret)  # becomes a breadcrumb

    sentry.SentrySink(HOST).send(firing(summary=f"acme: exchange failed with {secret}"))

    (event,) = sentry_events(sentry_sink, 1)
    crumbs = [crumb.get("message", "") for crumb in event["breadcrumbs"]["values"]]
    assert any(c.startswith("holding [REDACTED:") for c in crumbs), crumbs
    raw = sentry_sink.raw_text()
    assert secret not in raw
    assert "[REDACTED:" in raw


def test_an_exception_message_holding_a_secret_is_redacted_before_sentry(
    sentry_sink: EnvelopeSink,
) -> None:
    secret = f"sentry-exception-secret-{secrets.token_hex(8)}"
    SECRETS.register(secret)

    try:
        raise RuntimeError(f"refused {secret}")
    except RuntimeError as exc:
        sentry_sdk.capture_exception(exc)

    (event,) = sentry_events(sentry_sink, 1)
    assert event["exception"]["values"][0]["value"].startswith("refused [REDACTED:")
    assert secret not in sentry_sink.raw_text()


def test_requests_rotator_makes_carry_no_sentry_trace_headers(
    sentry_sink: EnvelopeSink, webhook: RecordingServer, standin: LeanIXStandIn
) -> None:
    """sentry-sdk's stdlib integration would add `sentry-trace` and `baggage` to every request:
    an IdP or a webhook learns nothing of rotator's Sentry (its org, release, trace ids)."""
    session = requests.Session()
    api_token = "api-" + secrets.token_urlsafe(24)
    standin.add_token(api_token)
    exchanger = TokenExchanger(("127.0.0.1",), ("127.0.0.1",), timeout=5)
    try:
        WebhookSink(webhook.url, HOST, session).send(firing())
        exchanger.exchange(
            parse_source(
                "acme",
                {"api_token": api_token, "token_url": standin.token_url},
                1,
                ("127.0.0.1",),
                ("127.0.0.1",),
            )
        )
    finally:
        exchanger.close()
        session.close()

    (received,) = webhook.received
    request = standin.last_request
    assert request is not None and request.header_names
    for names in ({name.lower() for name in received.headers}, set(request.header_names)):
        assert "sentry-trace" not in names
        assert "baggage" not in names


def test_sentry_sdks_own_debug_log_is_redacted(
    envelope_sink: EnvelopeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SENTRY_DEBUG, sentry-sdk logs through a stderr handler of its own (URLs included)."""
    monkeypatch.setenv("SENTRY_DEBUG", "1")
    secret_url = f"https://hooks.example.com/services/{secrets.token_hex(12)}"
    SECRETS.register(secret_url)
    own_log = logging.getLogger("sentry_sdk.errors")
    streams = [io.StringIO() for _ in own_log.handlers]
    assert streams, "sentry-sdk installs a handler of its own when imported"
    previous = [
        handler.setStream(stream)  # type: ignore[attr-defined]
        for handler, stream in zip(own_log.handlers, streams, strict=True)
    ]
    sentry.init(envelope_sink.dsn, host=HOST)
    try:
        own_log.debug("delivering to %s", secret_url)  # as the SDK's debug lines name URLs
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        for handler, stream in zip(own_log.handlers, previous, strict=True):
            handler.setStream(stream)  # type: ignore[attr-defined]

    printed = "".join(stream.getvalue() for stream in streams)
    assert "delivering to [REDACTED:" in printed
    assert secret_url not in printed


# --- /metrics and /healthz ------------------------------------------------------------------------


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics_url(registry: CollectorRegistry, health: Health) -> Iterator[str]:
    server = MetricsServer("127.0.0.1:0", registry, health).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


SPEC_METRICS = (
    "rotator_exchanges_total",
    "rotator_exchange_duration_seconds",
    "rotator_access_token_expires_timestamp_seconds",
    "rotator_token_healthy",
    "rotator_issuances_last_hour",
    "rotator_vault_up",
    "rotator_alerts_firing",
)


def test_metrics_serves_every_spec_metric_in_prometheus_text(
    registry: CollectorRegistry, metrics_url: str
) -> None:
    metrics = RotatorMetrics(registry)
    metrics.exchanges.labels("acme", "success").inc()
    metrics.exchange_duration.observe(0.3)
    metrics.expires.labels("acme").set(1_777_640_400)
    metrics.healthy.labels("acme").set(1)
    metrics.issuances.labels("acme").set(2)
    metrics.vault_up.set(1)
    metrics.alerts_firing.labels("exchange_failed").set(0)

    response = requests.get(f"{metrics_url}/metrics", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {line.split(" ")[0] for line in response.text.splitlines() if line[:1] != "#"}
    for name in SPEC_METRICS:
        assert any(sample.startswith(name) for sample in samples), name
    assert 'rotator_exchanges_total{result="success",token="acme"} 1.0' in response.text
    assert 'rotator_token_healthy{token="acme"} 1.0' in response.text
    assert "rotator_exchange_duration_seconds_bucket" in response.text


def test_metrics_ignores_a_query_string(registry: CollectorRegistry, metrics_url: str) -> None:
    RotatorMetrics(registry).vault_up.set(1)

    response = requests.get(f"{metrics_url}/metrics?name[]=rotator_vault_up", timeout=5)

    assert response.status_code == 200
    assert "rotator_vault_up 1.0" in response.text


def test_healthz_answers_200_while_healthy(metrics_url: str) -> None:
    response = requests.get(f"{metrics_url}/healthz", timeout=5)

    assert response.status_code == 200


def test_healthz_answers_503_when_unhealthy(metrics_url: str, health: Health) -> None:
    health.ok = False

    response = requests.get(f"{metrics_url}/healthz", timeout=5)

    assert response.status_code == 503


def test_healthz_follows_the_health_callable_on_every_request(
    metrics_url: str, health: Health
) -> None:
    statuses = []
    for ok in (True, False, True):
        health.ok = ok
        statuses.append(requests.get(f"{metrics_url}/healthz", timeout=5).status_code)

    assert statuses == [200, 503, 200]


def test_an_unknown_path_is_404(metrics_url: str) -> None:
    response = requests.get(f"{metrics_url}/nope", timeout=5)

    assert response.status_code == 404


def test_a_stopped_metrics_server_releases_its_port(
    registry: CollectorRegistry, health: Health
) -> None:
    server = MetricsServer("127.0.0.1:0", registry, health).start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    assert requests.get(url, timeout=5).status_code == 200

    server.stop()

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5)


def test_a_taken_port_is_a_configuration_error_naming_metrics_listen(
    registry: CollectorRegistry, health: Health
) -> None:
    first = MetricsServer("127.0.0.1:0", registry, health).start()
    try:
        with pytest.raises(ConfigError, match=r"^metrics\.listen: cannot listen on 127\.0\.0\.1:"):
            MetricsServer(f"127.0.0.1:{first.port}", registry, health)
    finally:
        first.stop()


# --- /metrics under slow clients ------------------------------------------------------------------


def _half_sent(port: int, count: int) -> list[socket.socket]:
    """`count` connections that each sent half a request line and then nothing."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"GET /metr")
        clients.append(client)
    return clients


def _closed_by_server(client: socket.socket) -> bool:
    try:
        return client.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_slow_clients_hold_no_threads_and_metrics_still_answers(
    registry: CollectorRegistry, health: Health
) -> None:
    RotatorMetrics(registry).vault_up.set(1)
    server = MetricsServer("127.0.0.1:0", registry, health).start()
    before = threading.active_count()
    clients = _half_sent(server.port, 200)
    try:
        # Every slow client has been accepted (a complete request after them is answered).
        started = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        answered_in = time.monotonic() - started

        threads = threading.active_count() - before
        assert threads <= metrics.WORKERS, f"{threads} threads more for 200 slow clients"
        assert response.status_code == 200
        assert "rotator_vault_up 1.0" in response.text
        assert answered_in < 1.0
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_a_half_sent_request_is_closed_after_the_timeout(
    registry: CollectorRegistry, health: Health, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT_SECONDS", 0.5)
    server = MetricsServer("127.0.0.1:0", registry, health).start()
    clients = _half_sent(server.port, 5)
    started = time.monotonic()
    try:
        wait_for(lambda: all(_closed_by_server(c) for c in clients), 10, "the server to close")
    finally:
        for client in clients:
            client.close()
        server.stop()

    assert time.monotonic() - started < 0.5 + 1.0  # the timeout, plus slack for a loaded machine
