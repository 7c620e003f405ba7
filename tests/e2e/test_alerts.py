"""`rotator run` as a subprocess, seen from on-call's side: the alerts that arrive at a webhook, a
real Alertmanager and a Sentry envelope sink, the `/metrics` page, Sentry Crons check-ins, and
that no secret reaches any of those channels (SPEC, "Alerts", "Metrics", "Things never allowed")."""

from __future__ import annotations

import json
import secrets
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import policy
from rotator.dev.devvault import free_port
from rotator.redact import fingerprint
from rotator.tokens import parse_time
from tests.e2e.conftest import Rig, remaining_seconds, sample
from tests.sinks import Alertmanager, EnvelopeSink, RecordingServer
from tests.waiting import alive, wait_for

PROMTOOL = Path("/usr/bin/promtool")
CHECK_SECONDS = 2
FORGED = "forged.jwt.value"
FIRING_KEYS = {"status", "alert", "token", "severity", "summary", "started_at", "host"}


# --- helpers ------------------------------------------------------------------------------------


def _tag() -> str:
    """A token-name prefix of this test's own: the Alertmanager is shared by the session."""
    return "t" + secrets.token_hex(3)


def _configure(
    rig: Rig,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
    *,
    alerts: dict[str, Any] | None = None,
    exchange: dict[str, Any] | None = None,
    check_seconds: float = CHECK_SECONDS,
) -> str:
    """Write the config with every alert sink and a metrics listener; returns the metrics URL."""
    listen = f"127.0.0.1:{free_port()}"
    rig.write_config(
        alerts={
            "webhook_urls": [webhook.url],
            "alertmanager_url": alertmanager.url,
            "sentry_dsn": envelope_sink.dsn,
            "repeat_interval_seconds": 3600,
            **(alerts or {}),
        },
        exchange=exchange or {},
        schedule={"check_interval_seconds": check_seconds, "discovery_interval_seconds": 2},
        metrics={"listen": listen},
    )
    return f"http://{listen}"


def _events(
    webhook: RecordingServer, kind: str, token: str, status: str | None = None
) -> list[dict[str, Any]]:
    return [
        body
        for body in webhook.bodies()
        if body.get("alert") == kind
        and body.get("token") == token
        and (status is None or body.get("status") == status)
    ]


def _am_alerts(alertmanager: Alertmanager, kind: str, token: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in alertmanager.alerts()
        if alert["labels"].get("alertname") == kind and alert["labels"].get("token") == token
    ]


def _sentry_events(sink: EnvelopeSink, kind: str, token: str) -> list[dict[str, Any]]:
    return [
        event
        for event in sink.events()
        if kind in event.get("fingerprint", []) and token in event.get("fingerprint", [])
    ]


def _get(url: str) -> tuple[int, str]:
    """(status, body); (0, "") while nothing listens yet (the daemon is still starting)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def _assert_spec_payload(body: dict[str, Any], status: str) -> None:
    expected = FIRING_KEYS | ({"ended_at"} if status == "resolved" else set())
    assert set(body) == expected, sorted(body)
    assert body["status"] == status
    assert body["host"] == socket.gethostname()
    assert body["started_at"].endswith("Z")
    parse_time(body["started_at"])
    if status == "resolved":
        assert body["ended_at"].endswith("Z")
        assert parse_time(body["ended_at"]) >= parse_time(body["started_at"])


def _settled(metrics: str, name: str) -> bool:
    """True once the daemon reported the token healthy: its write (announce, data, metadata)
    is complete, so a forgery cannot land in the middle of it."""
    status, page = _get(f"{metrics}/metrics")
    return status == 200 and sample(page, "rotator_token_healthy", token=name) == 1


def _forge(rig: Rig, name: str) -> None:
    """Overwrite the output like someone with write access to Vault would: plausible fields,
    rotator's custom_metadata left as it was."""
    rig.space.root.secrets.kv.v2.create_or_update_secret(
        f"{rig.space.output_prefix}/{name}",
        secret={
            "access_token": FORGED,
            "token_type": "bearer",
            "expires_in": 3599,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3599)),
            "source_version": 1,
        },
        mount_point="secret",
    )


def _collect_every_output_version(rig: Rig, name: str) -> None:
    """Add the access token of every output version Vault still keeps to `rig.secrets()`, so
    tokens replaced between two polls are scanned for as well."""
    kv = rig.space.root.secrets.kv.v2
    path = f"{rig.space.output_prefix}/{name}"
    versions = kv.read_secret_metadata(path, mount_point="secret")["data"]["versions"]
    for version in versions:
        data = kv.read_secret_version(
            path, version=int(version), mount_point="secret", raise_on_deleted_version=False
        )["data"]["data"]
        if data and isinstance(data.get("access_token"), str):
            rig.outputs_seen.append(data["access_token"])


def _add_padded_token_an_idp_echoes(rig: Rig, name: str) -> None:
    """A source whose api_token is padded with whitespace (rotator sends it stripped), at an IdP
    that echoes the token it received as its OAuth2 error code, which rotator quotes: the token
    reaches rotator's own messages, so only redaction keeps it out of every channel. Redaction
    must know the value as sent, not only as read from Vault."""
    api_token = "padded_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(24))
    rig.api_tokens[name] = api_token
    rig.idp.add_token(api_token)
    body = json.dumps({"error": api_token}).encode()
    rig.idp.set_fault("status", status=400, body=body, api_token=api_token)
    rig.space.write_source(name, {"api_token": f"  {api_token}\n", "token_url": rig.idp.token_url})


# --- scenarios ----------------------------------------------------------------------------------


def test_a_revoked_api_token_alerts_once_everywhere_backs_off_and_resolves_when_restored(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
) -> None:
    rig.idp.lifetime_seconds = 10
    max_backoff = 5
    tag = _tag()
    healthy, revoked = f"{tag}/healthy", f"{tag}/revoked"
    rig.add_token(healthy)
    revoked_api_token = rig.add_token(revoked, revoked=True)
    _configure(
        rig, webhook, alertmanager, envelope_sink, exchange={"max_backoff_seconds": max_backoff}
    )
    kind = "api_token_rejected"

    with rig.running(tmp_path / "run.log") as process:
        wait_for(alive(process, lambda: rig.output(healthy)), 15, "the healthy token's output")
        wait_for(
            alive(process, lambda: rig.idp.requests_for(revoked_api_token)),
            15,
            "the first exchange of the revoked token",
        )
        first_attempt = time.monotonic()
        wait_for(alive(process, lambda: _events(webhook, kind, revoked)), 10, "the webhook")
        wait_for(
            alive(process, lambda: _am_alerts(alertmanager, kind, revoked)),
            10,
            "the alert at Alertmanager",
        )
        wait_for(
            alive(process, lambda: _sentry_events(envelope_sink, kind, revoked)),
            10,
            "the Sentry event",
        )

        # Watch the retries for a while, checking the healthy token on the way.
        window = 12.0
        while time.monotonic() - first_attempt < window:
            assert process.poll() is None, "the daemon died"
            fields = rig.output(healthy)
            assert fields is not None and remaining_seconds(fields) > 0, "healthy token expired"
            time.sleep(0.25)
        attempts = rig.idp.requests_for(revoked_api_token)
        # A rejected token backs off from BACKOFF_BASE["rejected"] (60 s) doubling, capped at
        # max_backoff (5 s), with equal jitter: every wait lies in [cap / 2, cap], so at least
        # 2.5 s apart. Over the window (plus 1 s for polling slack) that allows 1 + 13 // 2.5 = 6
        # attempts; without backoff, the 1 s rescheduling floor would allow about twice that.
        ceiling = min(max_backoff, policy.BACKOFF_BASE["rejected"])
        bound = 1 + int((window + 1) // (ceiling / 2))
        assert bound == 6
        assert 2 <= attempts <= bound, attempts

        am_alert = _am_alerts(alertmanager, kind, revoked)[0]
        assert am_alert["labels"]["severity"] == "critical"
        assert am_alert["labels"]["alertname"] == kind

        rig.idp.restore(revoked_api_token)
        wait_for(
            alive(process, lambda: _events(webhook, kind, revoked, "resolved")),
            15,
            "the resolved webhook after the API token was restored",
        )
        wait_for(
            alive(process, lambda: not _am_alerts(alertmanager, kind, revoked)),
            10,
            "the alert to leave Alertmanager's active alerts",
        )
        assert rig.output(revoked) is not None
        fields = rig.output(healthy)
        assert fields is not None and remaining_seconds(fields) > 0

    firing = _events(webhook, kind, revoked, "firing")
    resolved = _events(webhook, kind, revoked, "resolved")
    assert len(firing) == 1, firing
    assert len(resolved) == 1, resolved
    _assert_spec_payload(firing[0], "firing")
    _assert_spec_payload(resolved[0], "resolved")
    assert firing[0]["severity"] == "critical"
    assert resolved[0]["started_at"] == firing[0]["started_at"]
    # The healthy token never shared the revoked one's trouble.
    for other in ("api_token_rejected", "exchange_failed"):
        assert not _events(webhook, other, healthy), other

    events = _sentry_events(envelope_sink, kind, revoked)
    assert len(events) == 1, [event.get("fingerprint") for event in events]
    assert events[0]["level"] == "error"
    assert events[0]["tags"]["alert"] == kind
    assert events[0]["tags"]["token"] == revoked


def test_the_issuance_cap_stops_exchanges_alerts_and_shows_in_metrics(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
) -> None:
    lifetime = 4  # a refresh about every 3.2 s
    rig.idp.lifetime_seconds = lifetime
    name = f"{_tag()}/busy"
    api_token = rig.add_token(name)
    metrics = _configure(
        rig, webhook, alertmanager, envelope_sink, alerts={"max_issuances_per_hour": 3}
    )

    with rig.running(tmp_path / "run.log") as process:
        wait_for(alive(process, lambda: rig.issued(name) >= 3), 25, "three issuances")
        firing = wait_for(
            alive(process, lambda: _events(webhook, "issuance_rate", name, "firing")),
            15,
            "the issuance_rate alert",
        )
        # Two more refresh periods (and a few checks) without a fourth request to the IdP.
        quiet_until = time.monotonic() + 2 * lifetime
        while time.monotonic() < quiet_until:
            assert process.poll() is None, "the daemon died"
            assert rig.issued(name) == 3
            time.sleep(0.25)
        assert rig.idp.requests_for(api_token) == 3
        page = wait_for(
            alive(
                process,
                lambda: (
                    (text := _get(f"{metrics}/metrics")[1])
                    and sample(text, "rotator_issuances_last_hour", token=name) == 3
                    and text
                ),
            ),
            10,
            "rotator_issuances_last_hour 3",
        )

    assert sample(page, "rotator_exchanges_total", token=name, result="success") == 3
    assert sample(page, "rotator_alerts_firing", alert="issuance_rate") == 1
    _assert_spec_payload(firing[0], "firing")
    assert firing[0]["severity"] == "warning"
    assert len(_events(webhook, "issuance_rate", name, "firing")) == 1
    assert rig.issued(name) == 3


@pytest.mark.parametrize("check_by", ["listing", "reads"])
def test_a_forged_output_alerts_and_is_restored_with_the_held_token_not_a_new_issuance(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
    check_by: str,
) -> None:
    """`listing`: the check lists every output's metadata at once (OpenBao); `reads`: rotator's
    token may not list them, as on HashiCorp Vault, and the check reads one output at a time."""
    rig.idp.lifetime_seconds = 60  # the first token stays fresh throughout
    name = f"{_tag()}/forged"
    rig.add_token(name)
    metrics = _configure(rig, webhook, alertmanager, envelope_sink)
    kind = "foreign_write"
    env = None
    if check_by == "reads":
        rig.space.root.sys.create_or_update_policy(
            "rotator-without-listing",
            'path "secret/data/*" { capabilities = ["create", "read", "update"] }\n'
            'path "secret/metadata/*" { capabilities = ["create", "read", "update", "list"] }',
        )
        created = rig.space.root.auth.token.create(policies=["rotator-without-listing"], ttl="10m")
        env = {"VAULT_TOKEN": created["auth"]["client_token"]}
    log = tmp_path / "run.log"

    with rig.running(log, env=env) as process:
        wait_for(alive(process, lambda: _settled(metrics, name)), 15, "the first output")
        original = rig.output(name)
        assert original is not None and rig.issued(name) == 1
        _forge(rig, name)
        firing = wait_for(
            alive(process, lambda: _events(webhook, kind, name, "firing")),
            15,
            "the foreign_write alert",
        )
        restored = wait_for(
            alive(
                process,
                lambda: (
                    (fields := rig.output(name)) and fields["access_token"] != FORGED and fields
                ),
            ),
            15,
            "the output to be restored",
        )
        resolved = wait_for(
            alive(process, lambda: _events(webhook, kind, name, "resolved")),
            15,
            "the foreign_write alert to resolve",
        )
        wait_for(alive(process, lambda: _sentry_events(envelope_sink, kind, name)), 10, "Sentry")
        current = rig.output(name)

    # rotation.py: a token someone else overwrote is held and written back while it is fresh,
    # instead of exchanging anew (LeanIX asks clients to reuse a valid token).
    held = fingerprint(original["access_token"])
    assert fingerprint(restored["access_token"]) == held
    assert current is not None and fingerprint(current["access_token"]) == held
    assert rig.issued(name) == 1
    _assert_spec_payload(firing[0], "firing")
    _assert_spec_payload(resolved[0], "resolved")
    assert firing[0]["severity"] == "critical"
    assert len(_events(webhook, kind, name, "firing")) == 1
    assert len(_sentry_events(envelope_sink, kind, name)) == 1
    fell_back = "reading secrets one by one" in log.read_text()
    assert fell_back is (check_by == "reads")


def test_metrics_and_healthz_serve_every_spec_series_in_a_format_promtool_accepts(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
) -> None:
    if not PROMTOOL.exists():
        raise AssertionError(f"{PROMTOOL} is missing: `make tools` installs it (prometheus)")
    rig.idp.lifetime_seconds = 10
    name = f"{_tag()}/metered"
    rig.add_token(name)
    metrics = _configure(rig, webhook, alertmanager, envelope_sink)

    with rig.running(tmp_path / "run.log") as process:
        fields = wait_for(alive(process, lambda: rig.output(name)), 15, "the first output")

        def scraped() -> str | None:
            status, text = _get(f"{metrics}/metrics")
            ready = (
                status == 200
                and sample(text, "rotator_token_healthy", token=name) is not None
                # set by the checks: the first may have run before the first issuance
                and sample(text, "rotator_issuances_last_hour", token=name) == 1
            )
            return text if ready else None

        page = wait_for(alive(process, scraped), 15, "a page counting the first issuance")
        health = _get(f"{metrics}/healthz")

    assert health == (200, "ok\n")
    assert sample(page, "rotator_exchanges_total", token=name, result="success") == 1
    assert (sample(page, "rotator_exchange_duration_seconds_count") or 0) >= 1
    assert sample(page, "rotator_exchange_duration_seconds_bucket", le="+Inf") is not None
    expires = sample(page, "rotator_access_token_expires_timestamp_seconds", token=name)
    # The output rounds to the second; the metric keeps the JWT's `exp` or issued_at + expires_in.
    assert expires is not None and abs(expires - parse_time(fields["expires_at"]).timestamp()) < 1
    assert sample(page, "rotator_token_healthy", token=name) == 1
    assert sample(page, "rotator_issuances_last_hour", token=name) == 1
    assert sample(page, "rotator_vault_up") == 1
    assert sample(page, "rotator_vault_token_ttl_seconds") == 0  # the dev root token
    for kind in ("api_token_rejected", "foreign_write", "issuance_rate", "vault_unavailable"):
        assert sample(page, "rotator_alerts_firing", alert=kind) == 0, kind
    last_cycle = sample(page, "rotator_last_cycle_timestamp_seconds")
    assert last_cycle is not None and abs(time.time() - last_cycle) < 60

    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=page,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_check_reports_to_sentry_crons_in_progress_then_ok(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
) -> None:
    rig.add_token(f"{_tag()}/cron")
    _configure(rig, webhook, alertmanager, envelope_sink, check_seconds=1)

    def finished() -> list[dict[str, Any]]:
        return [c for c in envelope_sink.check_ins() if c.get("status") == "ok"]

    with rig.running(tmp_path / "run.log") as process:
        wait_for(alive(process, lambda: len(finished()) >= 2), 15, "two finished check-ins")

    check_ins = envelope_sink.check_ins()
    started = {c["check_in_id"]: c for c in check_ins if c["status"] == "in_progress"}
    assert len(started) >= 2
    for done in finished():
        assert done["check_in_id"] in started, "an ok without its in_progress"
        assert done["duration"] >= 0
    for check_in in check_ins:
        assert check_in["monitor_slug"] == "rotator-cycle"
        assert check_in["monitor_config"]["schedule"] == {
            "type": "interval",
            "value": 1,
            "unit": "minute",
        }
        assert check_in["status"] in ("in_progress", "ok"), check_in["status"]


def test_no_secret_reaches_a_webhook_sentry_alertmanager_metrics_or_the_log(
    rig: Rig,
    tmp_path: Path,
    webhook: RecordingServer,
    alertmanager: Alertmanager,
    envelope_sink: EnvelopeSink,
) -> None:
    rig.idp.lifetime_seconds = 10
    tag = _tag()
    fine, revoked, forged = f"{tag}/fine", f"{tag}/revoked", f"{tag}/forged"
    padded, replaced = f"{tag}/padded", f"{tag}/replaced"
    rig.add_token(fine)
    # A technical user's API token due for replacement: its old and new API tokens are scanned
    # for in every channel too.
    user = rig.add_managed_token(replaced, expires_in=timedelta(days=13))
    rig.add_token(revoked, revoked=True)
    rig.add_token(forged)
    _add_padded_token_an_idp_echoes(rig, padded)
    metrics = _configure(rig, webhook, alertmanager, envelope_sink)
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(
            alive(process, lambda: _settled(metrics, fine) and _settled(metrics, forged)),
            15,
            "the first outputs",
        )
        _forge(rig, forged)
        rig.outputs_seen.append(FORGED)
        for kind, name, status in (
            ("api_token_rejected", revoked, "firing"),
            ("foreign_write", forged, "firing"),
            ("foreign_write", forged, "resolved"),
        ):
            wait_for(
                alive(process, lambda k=kind, n=name, s=status: _events(webhook, k, n, s)),
                20,
                f"{status} {kind} for {name}",
            )
        for kind, name in (("api_token_rejected", revoked), ("foreign_write", forged)):
            wait_for(
                alive(process, lambda k=kind, n=name: _sentry_events(envelope_sink, k, n)),
                10,
                f"the Sentry event for {kind}",
            )
        wait_for(
            alive(process, lambda: _am_alerts(alertmanager, "api_token_rejected", revoked)),
            10,
            "the alert at Alertmanager",
        )
        wait_for(alive(process, lambda: rig.idp.replacements(user) == 1), 20, "a replacement")
        wait_for(
            alive(
                process,
                lambda: rig.output(replaced) and rig.output(replaced)["source_version"] == 2,
            ),
            20,
            "the new API token in use",
        )
        page = _get(f"{metrics}/metrics")[1]
        alerts_text = json.dumps(alertmanager.alerts(active=False))
        for name in (fine, forged):
            rig.output(name)
            _collect_every_output_version(rig, name)

    channels = {
        "webhook": webhook.raw_text(),
        "sentry": envelope_sink.raw_text(),
        "alertmanager": alerts_text,
        "metrics": page,
        "log": log.read_text(),
    }
    # Not vacuous: every channel carries what the run was about.
    assert "api_token_rejected" in channels["webhook"] and "foreign_write" in channels["webhook"]
    assert "api_token_rejected" in channels["sentry"] and "foreign_write" in channels["sentry"]
    assert revoked in channels["alertmanager"]
    assert f'token="{fine}"' in channels["metrics"]
    assert "stored access token" in channels["log"] and "received SIGTERM" in channels["log"]
    assert f"token {padded}: exchange failed" in channels["log"]
    values = [*rig.secrets(), rig.space.vault.root_token]
    assert rig.idp.current_api_token(user) in values  # the replaced one's new API token
    assert len(values) >= 5 + 1 + 2 + 1  # five API tokens, the new one, two outputs, the root

    leaks = [
        f"{channel} carries secret {fingerprint(value)}"
        for value in values
        for channel, text in channels.items()
        if value in text
    ]
    assert not leaks
