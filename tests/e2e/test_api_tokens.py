"""The long-lived API token's lifecycle end to end (SPEC, "API-token lifecycle"): `rotator run`,
`replace-api-token` and `plan` as subprocesses against OpenBao and the stand-in's MTM. Each
drill ends the way SPEC promises: the source holds an API token the stand-in accepts, the
output holds a valid access token, and no token reaches a log line, an alert or /metrics."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.dev.devvault import free_port
from rotator.lifecycle import INTENT_KEY, REPLACED_KEY
from rotator.redact import fingerprint
from rotator.tokens import parse_time
from tests.e2e.conftest import Rig, remaining_seconds, sample, scrape
from tests.sinks import RecordingServer
from tests.waiting import alive, stop_process, wait_for

NAME = "acme/integration"
SOON = timedelta(days=13)  # inside the default 14-day margin: due for replacement
LATER = timedelta(days=300)


def _configure(rig: Rig, webhook: RecordingServer | None = None, **sections: Any) -> str:
    """Short intervals, a cap that never bites, a metrics listener; returns its HOST:PORT."""
    listen = f"127.0.0.1:{free_port()}"
    alerts: dict[str, Any] = {"max_issuances_per_hour": 1000}
    if webhook is not None:
        alerts["webhook_urls"] = [webhook.url]
    config: dict[str, dict[str, Any]] = {
        "schedule": {"check_interval_seconds": 1, "discovery_interval_seconds": 2},
        "exchange": {"timeout_seconds": 2, "max_backoff_seconds": 5},
        "alerts": alerts,
        "metrics": {"listen": listen},
        "api_tokens": {"lookup_interval_seconds": 2},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    rig.write_config(**config)
    return listen


def _settled(rig: Rig, name: str) -> bool:
    """The end state every drill must reach: the source's API token works at the stand-in, no
    replacement record is left, and the output holds a valid access token of that version."""
    version, data, metadata = rig.source(name)
    output = rig.output(name)
    return (
        rig.idp.accepts(data["api_token"])
        and INTENT_KEY not in metadata
        and output is not None
        and output["source_version"] == version
        and remaining_seconds(output) > 0
    )


def _events(webhook: RecordingServer, kind: str, status: str = "firing") -> list[dict[str, Any]]:
    return [b for b in webhook.bodies() if b.get("alert") == kind and b.get("status") == status]


def _no_secret_anywhere(rig: Rig, *texts: str) -> None:
    """No API token (old or new) nor access token in any of `texts`; fails naming fingerprints."""
    leaked = {fingerprint(s) for s in rig.secrets() for text in texts if s in text}
    assert not leaked, f"secrets leaked (fingerprints): {sorted(leaked)}"


# --- scheduled and requested replacements ---------------------------------------------------------


def test_the_daemon_replaces_an_api_token_before_it_expires(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    listen = _configure(rig, webhook)
    user = rig.add_managed_token(NAME, expires_in=SOON)
    old = rig.api_tokens[NAME]
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(alive(process, lambda: rig.idp.replacements(user) == 1), 30, "a replacement")
        wait_for(alive(process, lambda: _settled(rig, NAME)), 30, "the new token in use")
        page = wait_for(
            lambda: (
                (text := scrape(listen))
                and sample(text, "rotator_api_token_replacements_total", token=NAME)
                and text
            ),
            10,
            "the replacement on /metrics",
        )

    version, data, metadata = rig.source(NAME)
    assert version == 2 and not rig.idp.accepts(old)
    assert REPLACED_KEY in metadata
    assert data["technical_user_id"] == user and data["token_url"] == rig.idp.token_url
    new_expiry = rig.idp.technical_user(user).expiry
    assert data["api_token_expires_at"] == new_expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sample(page, "rotator_api_token_replacements_total", token=NAME, result="success") == 1
    expires = sample(page, "rotator_api_token_expires_timestamp_seconds", token=NAME)
    assert expires is not None and abs(expires - new_expiry.timestamp()) < 1
    assert rig.idp.replacements(user) == 1  # once, not again
    assert not _events(webhook, "api_token_replace_failed")
    _no_secret_anywhere(rig, log.read_text(), json.dumps(webhook.bodies()), page)


def test_replace_api_token_dry_run_changes_nothing_and_the_real_one_replaces_once(
    rig: Rig,
) -> None:
    _configure(rig)
    user = rig.add_managed_token(NAME, expires_in=LATER)

    dry = rig.rotator("replace-api-token", NAME, "--dry-run")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert [line.split()[-1] for line in dry.stdout.splitlines()[1:]].count("ok") >= 1
    assert "FAILED" not in dry.stdout
    assert rig.idp.replacements(user) == 0 and rig.source(NAME)[0] == 1

    done = rig.rotator("replace-api-token", NAME)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "API token replaced" in done.stdout
    assert rig.idp.replacements(user) == 1 and _settled(rig, NAME)

    again = rig.rotator("replace-api-token", NAME)

    # At most one replacement an hour: the second request waits, and says so with exit 1.
    assert again.returncode == 1
    assert rig.idp.replacements(user) == 1
    assert "at most one replacement per hour" in again.stdout
    # `plan` shows the next scheduled one: 14 days before the new token's expiry.
    plan = json.loads(rig.rotator("plan", "--json").stdout)
    (token,) = plan["tokens"]
    actions = {a["action"]: a for a in token["actions"]}
    planned = actions["replace the API token"]
    assert planned["why"] == "api_tokens.replace_before_expiry_days"
    assert parse_time(planned["at"]) > datetime.now(UTC) + timedelta(days=300)
    _no_secret_anywhere(rig, dry.stdout, dry.stderr, done.stdout, done.stderr, again.stdout)


def test_a_dry_run_names_every_step_that_would_fail(rig: Rig) -> None:
    _configure(rig)
    rig.add_managed_token("acme/admin", expires_in=LATER, role="MEMBER")
    rig.add_managed_token(NAME, expires_in=LATER, admin_source="acme/admin")

    dry = rig.rotator("replace-api-token", NAME, "--dry-run")

    assert dry.returncode == 1
    failed = [line for line in dry.stdout.splitlines() if " FAILED " in f" {line} "]
    assert any("admin role may replace" in line and "MEMBER" in line for line in failed), failed
    assert any("technical user at MTM" in line for line in failed), failed  # 403 for a MEMBER


def test_a_token_rotator_cannot_replace_is_refused_by_name(rig: Rig) -> None:
    _configure(rig)
    rig.add_token("plain/token")

    result = rig.rotator("replace-api-token", "plain/token")

    assert result.returncode == 1
    assert "not a LeanIX technical user's token" in result.stdout


# --- failures: nothing lost -----------------------------------------------------------------------


def test_replace_token_failing_alerts_and_the_old_token_keeps_working(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    _configure(rig, webhook)
    user = rig.add_managed_token(NAME, expires_in=SOON)
    old = rig.api_tokens[NAME]
    rig.idp.set_mtm_fault("status", status=500, path="*/replaceToken")
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(
            alive(process, lambda: _events(webhook, "api_token_replace_failed")),
            30,
            "api_token_replace_failed",
        )
        wait_for(alive(process, lambda: _settled(rig, NAME)), 20, "a valid output meanwhile")

    (event,) = _events(webhook, "api_token_replace_failed")
    assert event["severity"] == "critical" and event["token"] == NAME
    _, data, metadata = rig.source(NAME)
    assert rig.idp.accepts(old) and data["api_token"] == old
    assert INTENT_KEY not in metadata  # proven never to have happened, and cleared
    assert rig.idp.replacements(user) == 0
    _no_secret_anywhere(rig, log.read_text(), json.dumps(webhook.bodies()))


def test_a_sealed_vault_after_replace_token_stores_the_new_token_once_it_is_back(
    rig: Rig, tmp_path: Path
) -> None:
    vault = rig.space.vault
    assert vault.unseal_key, "the dev server's unseal key was not captured"
    _configure(rig, exchange={"timeout_seconds": 5})
    user = rig.add_managed_token(NAME, expires_in=SOON)
    assert rig.rotator("rotate", NAME).returncode == 0  # a valid output before the replacement
    # replaceToken answers after 3 s; Vault is sealed meanwhile, so the new token cannot be
    # stored when it arrives.
    rig.idp.set_mtm_fault("hang", seconds=3, path="*/replaceToken", count=1)
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(
            alive(process, lambda: INTENT_KEY in rig.source(NAME)[2]), 20, "the intent recorded"
        )
        vault.cli("operator", "seal")
        try:
            wait_for(alive(process, lambda: rig.idp.replacements(user) == 1), 20, "the replace")
            # The old token is dead, the new one only in the daemon's memory: hold it sealed a
            # little longer than one retry.
            time.sleep(6)  # the observation: several failed writes while Vault is sealed
            assert process.poll() is None
        finally:
            vault.cli("operator", "unseal", vault.unseal_key)
        wait_for(alive(process, lambda: _settled(rig, NAME)), 30, "the new token stored and used")

    assert rig.idp.replacements(user) == 1
    _no_secret_anywhere(rig, log.read_text())


# --- SIGKILL at each step, then a restart rolls forward ------------------------------------------


@pytest.mark.parametrize(
    "point",
    ["after the intent", "after replaceToken", "after the source write"],
)
def test_killed_at_a_step_of_a_replacement_a_restart_ends_with_a_working_token(
    rig: Rig, tmp_path: Path, point: str
) -> None:
    # A 3 s timeout: a killed instance's claim lapses after 3 x 3 + 15 = 24 s.
    _configure(rig, exchange={"timeout_seconds": 3})
    user = rig.add_managed_token(NAME, expires_in=SOON)
    assert rig.rotator("rotate", NAME).returncode == 0  # a valid output: only the lifecycle acts
    if point == "after the intent":
        # replaceToken never happens: the request hangs, then closes having done nothing.
        rig.idp.set_mtm_fault("hang", seconds=8, then="close", path="*/replaceToken", count=1)
    elif point == "after replaceToken":
        # replaceToken happens, but only once the daemon is dead: its answer is lost.
        rig.idp.set_mtm_fault("hang", seconds=2, path="*/replaceToken", count=1)
    else:
        # The new token is stored; proving it at the token endpoint hangs: killed mid-exchange.
        rig.idp.set_fault("hang", seconds=30)

    process = rig.start("run", log=tmp_path / "killed.log")
    try:
        if point == "after the source write":
            wait_for(alive(process, lambda: rig.source(NAME)[0] == 2), 30, "the source write")
        else:
            wait_for(alive(process, lambda: INTENT_KEY in rig.source(NAME)[2]), 30, "the intent")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    rig.idp.clear_faults()
    if point == "after replaceToken":
        wait_for(lambda: rig.idp.replacements(user) == 1, 10, "the replacement the kill left")
        assert not rig.idp.accepts(rig.source(NAME)[1]["api_token"])  # the old token is dead
    log = tmp_path / "restarted.log"

    with rig.running(log) as process:
        # The killed instance's claim lapses first (24 s): only then may another take over.
        wait_for(alive(process, lambda: _settled(rig, NAME)), 60, "a working token after restart")

    expected = {"after the intent": 0, "after replaceToken": 2, "after the source write": 1}
    assert rig.idp.replacements(user) == expected[point]
    _no_secret_anywhere(rig, log.read_text(), (tmp_path / "killed.log").read_text())


# --- several instances, promotion, lookups --------------------------------------------------------


def test_two_instances_replace_a_due_token_once(rig: Rig, tmp_path: Path) -> None:
    user = rig.add_managed_token(NAME, expires_in=SOON)
    configs = [tmp_path / "a.toml", tmp_path / "b.toml"]
    for config in configs:  # one metrics listener each
        _configure(rig)
        config.write_text(rig.config_path.read_text())
    assert rig.rotator("rotate", NAME).returncode == 0
    processes = [rig.start("run", log=tmp_path / f"{c.stem}.log", config=c) for c in configs]
    try:
        wait_for(lambda: rig.idp.replacements(user) >= 1, 30, "a replacement")
        wait_for(lambda: _settled(rig, NAME), 30, "the new token in use")
        # Both instances looked at the token after the replacement (every check interval).
        wait_for(lambda: all(p.poll() is None for p in processes), 5, "both alive")
        time.sleep(3)  # the observation: three more check intervals, no second replacement
    finally:
        codes = [stop_process(p) for p in processes]
    assert codes == [0, 0]
    assert rig.idp.replacements(user) == 1


def test_a_rejected_api_token_is_replaced_by_a_working_api_token_next(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    _configure(rig, webhook)
    staged = "api-next-" + fingerprint(NAME) * 2
    rig.idp.add_token(staged, workspace_name="acme")
    rig.add_managed_token(NAME, expires_in=LATER, api_token_next=staged)
    rig.api_tokens[f"{NAME}#next"] = staged
    rig.idp.revoke(rig.api_tokens[NAME])
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(alive(process, lambda: _events(webhook, "api_token_promoted")), 30, "promotion")
        wait_for(alive(process, lambda: _settled(rig, NAME)), 20, "the promoted token in use")

    _, data, _ = rig.source(NAME)
    assert data["api_token"] == staged and "api_token_next" not in data
    (event,) = _events(webhook, "api_token_promoted")
    assert event["severity"] == "warning"
    _no_secret_anywhere(rig, log.read_text(), json.dumps(webhook.bodies()))


def test_a_lookup_keeps_the_expiry_current_and_alerts_when_the_technical_user_is_gone(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    listen = _configure(rig, webhook)
    rig.add_managed_token("acme/admin", expires_in=LATER)
    user = rig.add_managed_token(NAME, expires_in=LATER, role="MEMBER", admin_source="acme/admin")
    extended = rig.idp.technical_user(user).expiry + timedelta(days=30)
    rig.idp.set_expiry(user, extended)
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(
            alive(
                process,
                lambda: (
                    rig.source(NAME)[1]["api_token_expires_at"]
                    == extended.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
            ),
            30,
            "MTM's expiry in the source",
        )
        expires = wait_for(
            lambda: sample(
                scrape(listen), "rotator_api_token_expires_timestamp_seconds", token=NAME
            ),
            10,
            "the expiry on /metrics",
        )
        assert abs(expires - extended.timestamp()) < 1

        rig.idp.delete_technical_user(user)

        wait_for(
            alive(process, lambda: _events(webhook, "technical_user_missing")),
            20,
            "technical_user_missing",
        )

    (event,) = _events(webhook, "technical_user_missing")
    assert event["severity"] == "critical" and event["token"] == NAME
    _no_secret_anywhere(rig, log.read_text(), json.dumps(webhook.bodies()))
