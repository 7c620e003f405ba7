"""`rotator run` as systemd runs it: sd_notify on a real AF_UNIX datagram socket, SIGHUP reloads."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.dev.devvault import free_port
from tests.e2e.conftest import Rig, sample, scrape
from tests.sinks import RecordingServer
from tests.waiting import stop_process, wait_for


class NotifySocket:
    """What systemd listens on: a datagram socket collecting every sd_notify message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def count(self, key: str, value: str = "1") -> int:
        return sum(1 for message in list(self.messages) if message.get(key) == value)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_sd_notify_ready_watchdog_status_and_stopping(
    rig: Rig, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    rig.write_config(schedule={"check_interval_seconds": 1})
    rig.add_token("acme/prod")
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
    process = rig.start("run", log=tmp_path / "run.log", env=env)
    try:
        wait_for(lambda: notify_socket.count("READY"), 20, "READY=1")
        ready = next(m for m in notify_socket.messages if m.get("READY") == "1")
        assert ready["STATUS"].startswith("1 tokens")
        # WATCHDOG_USEC=1 s: a ping every half second from the scheduler.
        wait_for(lambda: notify_socket.count("WATCHDOG") >= 4, 10, "watchdog pings")
        wait_for(
            lambda: any(
                m.get("STATUS", "").startswith("1 tokens, 0 failing; next refresh")
                for m in notify_socket.messages
            ),
            10,
            "a STATUS line after a check",
        )
    finally:
        code = stop_process(process)

    assert code == 0
    assert notify_socket.count("STOPPING") == 1


def test_sighup_with_a_changed_config_reloads_without_reissuing(
    rig: Rig, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    rig.add_token("acme/prod")
    log = tmp_path / "run.log"
    process = rig.start("run", log=log, env={"NOTIFY_SOCKET": str(notify_socket.path)})
    try:
        wait_for(lambda: rig.output("acme/prod"), 20, "the first output")
        issued = rig.issued("acme/prod")
        rig.write_config(schedule={"check_interval_seconds": 2, "discovery_interval_seconds": 2})

        process.send_signal(signal.SIGHUP)

        wait_for(lambda: "configuration reloaded" in log.read_text(), 20, "the reload")
        assert notify_socket.count("RELOADING") == 1
        assert notify_socket.count("READY") == 2
        # The new discovery interval is in force: a token added now is picked up.
        rig.add_token("team-b/new")
        wait_for(lambda: rig.output("team-b/new"), 20, "the token added after the reload")
        assert rig.issued("acme/prod") == issued
        assert process.poll() is None
    finally:
        assert stop_process(process) == 0


def test_sighup_with_a_broken_config_keeps_the_running_one(rig: Rig, tmp_path: Path) -> None:
    rig.write_config(schedule={"check_interval_seconds": 2, "discovery_interval_seconds": 2})
    rig.add_token("acme/prod")
    log = tmp_path / "run.log"
    process = rig.start("run", log=log)
    try:
        wait_for(lambda: rig.output("acme/prod"), 20, "the first output")
        rig.config_path.write_text("[exchange]\ntimeout_seconds = 'soon'\n")

        process.send_signal(signal.SIGHUP)

        wait_for(lambda: "reload rejected" in log.read_text(), 20, "the rejected reload")
        assert "exchange.timeout_seconds" in log.read_text()
        # Still running on the old configuration: discovery still finds new tokens.
        rig.add_token("team-b/new")
        wait_for(lambda: rig.output("team-b/new"), 20, "a token added after the bad reload")
    finally:
        assert stop_process(process) == 0


def test_sighup_applies_the_repeat_interval_the_cap_and_the_check_interval(
    rig: Rig, tmp_path: Path, webhook: RecordingServer, notify_socket: NotifySocket
) -> None:
    listen = f"127.0.0.1:{free_port()}"

    def configure(repeat: float, cap: int, check: float) -> None:
        rig.write_config(
            alerts={
                "webhook_urls": [webhook.url],
                "repeat_interval_seconds": repeat,
                "max_issuances_per_hour": cap,
            },
            schedule={"check_interval_seconds": check, "discovery_interval_seconds": 60},
            metrics={"listen": listen},
        )

    def rejections() -> int:
        return sum(
            1
            for body in webhook.bodies()
            if body.get("alert") == "api_token_rejected" and body.get("status") == "firing"
        )

    def cycles() -> float:
        return sample(scrape(listen), "rotator_last_cycle_timestamp_seconds") or 0.0

    configure(repeat=3600, cap=6, check=60)
    rig.add_token("legacy/revoked", revoked=True)
    env = {"NOTIFY_SOCKET": str(notify_socket.path)}
    process = rig.start("run", log=tmp_path / "run.log", env=env)
    try:
        wait_for(lambda: rejections() == 1, 20, "the first api_token_rejected")
        assert sample(scrape(listen), "rotator_max_issuances_per_hour") == 6
        first_check = wait_for(cycles, 20, "the first check")

        configure(repeat=1, cap=7, check=1)
        process.send_signal(signal.SIGHUP)

        wait_for(
            lambda: sample(scrape(listen), "rotator_max_issuances_per_hour") == 7,
            20,
            "the reloaded cap on /metrics",
        )
        # Checks every second now (before: one a minute), and each re-notifies the alert once
        # its reloaded repeat interval has passed (before: once an hour).
        later = wait_for(lambda: (c := cycles()) > first_check and c, 10, "a check after reload")
        wait_for(lambda: cycles() >= later + 2, 10, "two more checks, a second apart")
        wait_for(lambda: rejections() >= 3, 10, "repeats at the reloaded interval")
        assert notify_socket.count("RELOADING") == 1
    finally:
        assert stop_process(process) == 0
