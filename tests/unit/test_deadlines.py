"""The watchdog's heap of deadlines: each expires at its own time, whatever order they came in
(tests/integration/test_deadlines.py cuts real connections with it)."""

from __future__ import annotations

import time

from rotator.deadlines import Watchdog
from tests.waiting import wait_for


def test_a_sooner_deadline_added_after_a_later_one_still_expires_on_time() -> None:
    watchdog = Watchdog()
    with watchdog.deadline(60) as later, watchdog.deadline(0.2) as sooner:
        started = time.monotonic()
        wait_for(lambda: sooner.expired, 5, "the sooner deadline")
        assert time.monotonic() - started < 2
        assert not later.expired


def test_a_later_deadline_added_after_a_sooner_one_does_not_hold_it_up() -> None:
    watchdog = Watchdog()
    with watchdog.deadline(0.2) as sooner, watchdog.deadline(60) as later:
        started = time.monotonic()
        wait_for(lambda: sooner.expired, 5, "the sooner deadline")
        assert time.monotonic() - started < 2
        assert not later.expired
