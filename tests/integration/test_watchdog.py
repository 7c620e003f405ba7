"""Dead man's switches: a wedged scheduler stops the systemd watchdog pings and goes stale on
`/healthz`, and both come back when it recovers. Real OpenBao, real datagram socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.daemon import Daemon
from rotator.exchange import TokenExchanger
from rotator.rotation import Rotator
from rotator.systemd import SystemdNotifier
from tests.conftest import VaultSpace


class Pings:
    """Counts WATCHDOG=1 datagrams on a real AF_UNIX socket, with their arrival times."""

    def __init__(self, path: Path) -> None:
        self.times: list[float] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1024)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.times.append(time.monotonic())

    def since(self, moment: float) -> int:
        return sum(1 for t in list(self.times) if t >= moment)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def pings(tmp_path: Path) -> Iterator[Pings]:
    receiver = Pings(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_wedged_scheduler_stops_the_watchdog_pings(
    vault_space: VaultSpace, pings: Pings, tmp_path: Path
) -> None:
    config = vault_space.config(schedule={"check_interval_seconds": 1})
    rotator = Rotator(config, vault_space.store(), TokenExchanger(("127.0.0.1",), (), 1.0))
    systemd = SystemdNotifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    )
    daemon = Daemon(rotator, systemd=systemd)
    daemon.start()
    try:
        _wait(lambda: pings.since(0) >= 3, 5, "pings from a healthy scheduler")
        _wait(daemon.is_healthy, 5, "a first check")

        # Wedge the scheduler the way a deadlock would: hold the lock its loop needs.
        with daemon._scheduler._jobstores_lock:
            time.sleep(0.3)  # let pings already submitted land
            wedged_at = time.monotonic()
            time.sleep(1.0)  # five watchdog periods
            assert pings.since(wedged_at) == 0

        recovered_at = time.monotonic()
        _wait(lambda: pings.since(recovered_at) >= 2, 5, "pings after recovery")
    finally:
        daemon.stop()
        rotator.exchanger.close()


def test_healthz_turns_unhealthy_when_checks_stop(vault_space: VaultSpace) -> None:
    config = vault_space.config(schedule={"check_interval_seconds": 1})
    rotator = Rotator(config, vault_space.store(), TokenExchanger(("127.0.0.1",), (), 1.0))
    daemon = Daemon(rotator)
    assert not daemon.is_healthy()  # not started
    daemon.start()
    try:
        _wait(daemon.is_healthy, 5, "a first check")
    finally:
        daemon.stop()
        rotator.exchanger.close()

    assert not daemon.is_healthy()
