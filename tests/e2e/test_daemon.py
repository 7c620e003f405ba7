"""`rotator run` as a subprocess: short-lived tokens kept fresh, discovery, shutdown, restart."""

from __future__ import annotations

import time
from pathlib import Path

from rotator.dev.devvault import free_port
from tests.e2e.conftest import Rig, looked_at, remaining_seconds
from tests.waiting import stop_process, wait_for

LIFETIME = 10  # seconds; refresh_fraction 0.8 refreshes about every 8 s
RUN_SECONDS = 30


def test_run_keeps_every_output_valid_refreshes_once_per_period_and_stops_on_sigterm(
    rig: Rig, tmp_path: Path
) -> None:
    rig.idp.lifetime_seconds = LIFETIME
    rig.write_config(schedule={"check_interval_seconds": 2, "discovery_interval_seconds": 2})
    names = ["acme/prod", "acme/sandbox", "team-b/reporting"]
    for name in names:
        rig.add_token(name)
    log = tmp_path / "run.log"
    process = rig.start("run", log=log)
    try:
        wait_for(lambda: all(rig.output(n) for n in names), 15, "first outputs")
        started = time.monotonic()
        added = False
        polls = 0
        while time.monotonic() - started < RUN_SECONDS:
            for name in names:
                fields = rig.output(name)
                assert fields is not None, f"{name}: output vanished"
                assert remaining_seconds(fields) > 0, f"{name}: consumer read an expired token"
            polls += 1
            if not added and time.monotonic() - started > RUN_SECONDS / 3:
                rig.add_token("late/arrival")
                added = True
            time.sleep(0.25)
        assert process.poll() is None, "the daemon died"
        wait_for(lambda: rig.output("late/arrival"), 10, "the token added mid-run")
    finally:
        code = stop_process(process)

    assert code == 0
    assert polls > 50
    # ~38 s of running at one refresh per ~7.5-8 s: about 5-6 issuances per token, never a storm.
    for name in names:
        assert 4 <= rig.issued(name) <= 7, (name, rig.issued(name))
    text = log.read_text()
    assert "received SIGTERM" in text and "stopped" in text
    for secret in rig.secrets():
        assert secret not in text, "a token value reached the daemon's log"


def test_a_restarted_daemon_issues_nothing_while_tokens_are_valid(rig: Rig, tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    rig.write_config(metrics={"listen": listen})
    names = ["acme/prod", "acme/sandbox"]
    for name in names:
        rig.add_token(name)
    assert rig.rotator("check").returncode == 0
    requests_before = rig.idp.requests_total
    log = tmp_path / "restart.log"

    process = rig.start("run", "--log-level", "DEBUG", log=log)
    try:
        wait_for(lambda: looked_at(listen, names), 20, "each token's first look after the restart")
    finally:
        assert stop_process(process) == 0

    assert rig.idp.requests_total == requests_before
