"""The daemon's lifecycle against real OpenBao and the stand-in: stopping drains in-flight work
and never deadlocks on a job that reschedules itself as it finishes."""

from __future__ import annotations

import threading

from rotator.daemon import Daemon
from rotator.dev.standin import LeanIXStandIn
from rotator.exchange import TokenExchanger
from rotator.rotation import Rotator
from tests.conftest import VaultSpace
from tests.waiting import wait_for


def test_stop_waits_for_an_exchange_in_flight_and_returns(
    vault_space: VaultSpace, standin: LeanIXStandIn
) -> None:
    standin.add_token("api-token-for-lifecycle-test")
    vault_space.write_source(
        "slow", {"api_token": "api-token-for-lifecycle-test", "token_url": standin.token_url}
    )
    standin.set_fault("hang", seconds=1.5)  # the exchange is still running when stop() comes
    config = vault_space.config()
    rotator = Rotator(
        config, vault_space.store(), TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5)
    )
    daemon = Daemon(rotator)
    daemon.start()
    wait_for(lambda: standin.requests_total, 10, "the exchange to start")
    assert standin.requests_total == 1

    stopper = threading.Thread(target=daemon.stop)
    stopper.start()
    stopper.join(timeout=15)

    try:
        assert not stopper.is_alive(), "stop() deadlocked with the job rescheduling itself"
        # Drained, not abandoned: the token obtained during shutdown was stored.
        assert vault_space.read_output("slow") is not None
    finally:
        rotator.exchanger.close()
