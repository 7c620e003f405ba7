"""The long-running service: APScheduler 3.x jobs around a `Rotator`.

Jobs:
- one date-triggered job per token (id = token name) on the `exchange` executor, whose pool size
  is `max_workers`: that pool is what bounds exchanges in flight. Each run refreshes the token if
  due and re-adds itself for the time the policy names, so every token is acted on at its own
  time rather than at the next sweep;
- `discover` every `discovery_interval_seconds`: new tokens get a job at once, removed ones lose it;
- `check` every `check_interval_seconds`: reads each output secret and pulls a token's job forward
  when its output changed under it, disappeared or expired, and re-adds any job that went missing.

`Daemon.start()` returns once the first discovery succeeded; `Daemon.stop()` drains in-flight
work. `run_forever` owns the signal handlers: SIGTERM and SIGINT stop the daemon and return 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from rotator.errors import VaultError
from rotator.rotation import Outcome, Rotator
from rotator.tokens import parse_output

logger = logging.getLogger(__name__)

# A job is never re-added to run sooner than this: APScheduler counts a job as running until its
# function has returned, and a date job re-added "now" would be skipped as a second instance.
MIN_RESCHEDULE_SECONDS = 1.0


class Daemon:
    """The scheduler and its jobs. Thread-safe; `start` once, `stop` once."""

    def __init__(
        self,
        rotator: Rotator,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.rotator = rotator
        self._clock = clock
        self._on_outcome = on_outcome
        config = rotator.config
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(2),
                "exchange": ThreadPoolExecutor(config.exchange.max_workers),
            },
            job_defaults={"coalesce": True, "misfire_grace_time": None},
        )
        self._names: set[str] = set()
        self._seen_versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self.last_outcomes: dict[str, Outcome] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Discover tokens and start the scheduler. Raises VaultError if the first discovery
        fails (the caller exits 3), so a daemon never runs blind."""
        names = self.rotator.discover()
        schedule = self.rotator.config.schedule
        self._scheduler.start()
        self._scheduler.add_job(
            self._discover,
            "interval",
            seconds=schedule.discovery_interval_seconds,
            id="discover",
            max_instances=1,
        )
        self._scheduler.add_job(
            self._check,
            "interval",
            seconds=schedule.check_interval_seconds,
            id="check",
            max_instances=1,
        )
        self._apply_discovery(names)
        logger.info(
            "rotator started: %d tokens under %s", len(names), self.rotator.store.source_prefix
        )

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, return only after in-flight jobs finished."""
        logger.info("stopping; waiting for in-flight work" if wait else "stopping")
        self._scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def names(self) -> set[str]:
        with self._lock:
            return set(self._names)

    # --- jobs ---------------------------------------------------------------------------------

    def _tick(self, name: str) -> None:
        outcome = self.rotator.rotate_one(name)
        with self._lock:
            if name not in self._names:
                return
            self.last_outcomes[name] = outcome
            if outcome.state == "refreshed" and outcome.output is not None:
                self._seen_versions.pop(name, None)
        if outcome.state == "gone":
            self._drop(name)
            return
        self._schedule(name, outcome.next_at)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _discover(self) -> None:
        try:
            names = self.rotator.discover()
        except VaultError as exc:
            logger.warning("discovery failed: %s", exc)
            return
        self._apply_discovery(names)

    def _apply_discovery(self, names: list[str]) -> None:
        with self._lock:
            added = set(names) - self._names
            removed = self._names - set(names)
            self._names = set(names)
        for name in sorted(added):
            logger.info("token %s: discovered", name)
            self._schedule(name, self._clock())
        for name in sorted(removed):
            logger.info("token %s: source removed; no longer rotated", name)
            self._drop(name)

    def _check(self) -> None:
        """Verify each output secret; pull a token forward when Vault's state is not ours."""
        now = self._clock()
        for name in sorted(self.names):
            try:
                secret = self.rotator.store.read_output(name)
            except VaultError as exc:
                logger.warning("check: %s", exc)
                return
            version = secret.version if secret else 0
            with self._lock:
                previous = self._seen_versions.get(name)
                self._seen_versions[name] = version
            job = self._scheduler.get_job(_job_id(name))
            if job is None:
                logger.warning("token %s: had no scheduled job; re-adding", name)
                self._schedule(name, now)
                continue
            if previous is not None and previous != version:
                logger.info(
                    "token %s: output changed to version %d; re-checking now", name, version
                )
                self._schedule(name, now)
            elif not _is_valid(secret, now):
                self._schedule(name, now)

    # --- plumbing -----------------------------------------------------------------------------

    def _schedule(self, name: str, when: datetime) -> None:
        earliest = self._clock() + timedelta(seconds=MIN_RESCHEDULE_SECONDS)
        with self._lock:
            if name not in self._names:
                return
        self._scheduler.add_job(
            self._tick,
            "date",
            run_date=max(when, earliest),
            args=[name],
            id=_job_id(name),
            name=f"rotate {name}",
            executor="exchange",
            replace_existing=True,
            max_instances=2,
        )

    def _drop(self, name: str) -> None:
        with self._lock:
            self._names.discard(name)
            self._seen_versions.pop(name, None)
            self.last_outcomes.pop(name, None)
        job = self._scheduler.get_job(_job_id(name))
        if job is not None:
            job.remove()
        self.rotator.forget(name)


def _job_id(name: str) -> str:
    return f"token:{name}"


def _is_valid(secret: Any, now: datetime) -> bool:
    if secret is None:
        return False
    try:
        return parse_output(secret.data).expires_at > now
    except ValueError:
        return False


def run_forever(
    daemon: Daemon,
    stop: threading.Event | None = None,
    on_idle: Callable[[], None] | None = None,
    idle_seconds: float = 1.0,
) -> int:
    """Start `daemon`, block until SIGTERM, SIGINT or `stop`, drain, return 0.

    The only place that installs signal handlers. `on_idle` is called every `idle_seconds` on the
    main thread while the daemon runs (the demo draws its table there).
    """
    stop = stop or threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        while not stop.wait(idle_seconds):
            if on_idle is not None:
                on_idle()
    finally:
        if daemon.running:
            daemon.stop(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped")
    return 0
