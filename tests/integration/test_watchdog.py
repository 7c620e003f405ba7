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
from rotator.records import OutputMetadata
from rotator.rotation import Rotator
from rotator.systemd import SystemdNotifier
from rotator.vault import VaultStore
from tests.conftest import VaultSpace
from tests.waiting import wait_for


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


class CountingNotifier(SystemdNotifier):
    """The real notifier, counting the watchdog pings it sent."""

    sent = 0

    def watchdog(self) -> None:
        super().watchdog()
        self.sent += 1


class GatedStore(VaultStore):
    """A real store whose check listing waits at a gate: a check that hangs, as on a Vault that
    stopped answering mid-request. `waiting` is set while a check is held there."""

    gate: threading.Event
    waiting: threading.Event

    def list_output_metadata(self, page_size: int = 1000) -> dict[str, OutputMetadata] | None:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        return super().list_output_metadata(page_size)


def test_a_wedged_scheduler_stops_the_watchdog_pings(
    vault_space: VaultSpace, pings: Pings, tmp_path: Path
) -> None:
    config = vault_space.config(schedule={"check_interval_seconds": 1})
    rotator = Rotator(config, vault_space.store(), TokenExchanger(("127.0.0.1",), (), 1.0))
    systemd = CountingNotifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    )
    daemon = Daemon(rotator, systemd=systemd)
    daemon.start()
    try:
        wait_for(lambda: pings.since(0) >= 3, 5, "pings from a healthy scheduler")
        wait_for(daemon.is_healthy, 5, "a first check")

        # Wedge the scheduler the way a deadlock would: hold the lock its loop needs. A ping
        # job submitted just before still runs; wait until the executor has none left.
        executor = daemon._scheduler._lookup_executor("default")
        with daemon._scheduler._jobstores_lock:
            wait_for(lambda: "watchdog" not in executor._instances, 5, "no ping job in flight")
            sent = systemd.sent
            time.sleep(1.0)  # the observation: five watchdog periods without a ping
            assert systemd.sent == sent

        recovered_at = time.monotonic()
        wait_for(lambda: pings.since(recovered_at) >= 2, 5, "pings after recovery")
    finally:
        daemon.stop()
        rotator.exchanger.close()


def test_healthz_turns_unhealthy_when_checks_stop_and_healthy_when_they_resume(
    vault_space: VaultSpace,
) -> None:
    config = vault_space.config(schedule={"check_interval_seconds": 1})
    plain = vault_space.store()
    store = GatedStore(
        plain._client, plain.mount, plain.source_prefix, plain.output_prefix, plain.auth
    )
    store.gate, store.waiting = threading.Event(), threading.Event()
    store.gate.set()
    clock = [1000.0]  # the daemon's monotonic clock, moved by hand
    rotator = Rotator(config, store, TokenExchanger(("127.0.0.1",), (), 1.0))
    daemon = Daemon(rotator, monotonic=lambda: clock[0])
    assert not daemon.is_healthy()  # not started
    daemon.start()
    try:
        wait_for(daemon.is_healthy, 5, "a first check")

        store.gate.clear()
        wait_for(store.waiting.is_set, 5, "a check hanging at the gate")
        clock[0] += 3 * 1 + 30  # three check intervals plus the grace, and no check finished
        assert daemon.running and not daemon.is_healthy()

        store.gate.set()
        wait_for(daemon.is_healthy, 5, "a check finishing again")
    finally:
        store.gate.set()
        daemon.stop()
        rotator.exchanger.close()

    assert not daemon.is_healthy()  # stopped
