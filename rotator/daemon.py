"""The long-running service: APScheduler 3.x jobs around a `Rotator`.

Jobs:
- one date-triggered job per token (id `token:<name>`) on the `exchange` executor, whose pool
  has `rotation.worker_threads` threads, of which at most `max_workers` are at the IdP at once
  (`Rotator.exchange_slots`). Each run refreshes the
  token if due and re-adds itself for the time the policy names, so every token is acted on at its
  own time rather than at the next sweep;
- `discover` every `discovery_interval_seconds`: new tokens get a job at once, removed ones lose it;
- `check` every `check_interval_seconds` (and right after start): probes Vault, reads the other
  instances' announcements in the registry and announces this one (`peers.py`), lists every
  output's metadata and every source's version (one request each where OpenBao's detailed
  listing is there, else a metadata read per output), pulls a token's job forward when its
  output changed under it, disappeared or expired, reschedules it by another instance's new
  version, re-adds any job that went missing, and feeds the monitor (alerts, metrics). What it
  listed tells the token jobs what they need not read again (`memory.Listing`). Each check is
  one Sentry Crons check-in when Sentry is configured;
- `lookup` every `api_tokens.lookup_interval_seconds` (and soon after start): reads the technical
  user of every source that names one at MTM (`replacement.ApiTokens.look_up`): its API token's
  expiry, and whether it still exists.

With an `ApiTokens` keeper, each token job runs the API-token lifecycle after the rotation
(`ApiTokens.pass_over`): a due replacement, a promotion of api_token_next, an interrupted
replacement rolled forward.

`Daemon.start()` returns once the first discovery succeeded; `Daemon.stop()` drains in-flight
work. `run_forever` owns the signal handlers: SIGTERM and SIGINT stop the daemon and return 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from rotator import peers, policy
from rotator.errors import ConfigError, FailureKind, VaultAuthError, VaultError
from rotator.memory import Listing
from rotator.monitor import Monitor
from rotator.outcome import ApiTokenOutcome, Outcome, Reason, State
from rotator.plan import Look, moved_look, plan_check
from rotator.policy import VaultTokenAction
from rotator.records import OutputMetadata
from rotator.replacement import ApiTokens
from rotator.rotation import Rotator, worker_threads
from rotator.systemd import SystemdNotifier

logger = logging.getLogger(__name__)

# A job is never re-added to run sooner than this: APScheduler counts a job as running until its
# function has returned, and a date job re-added "now" would be skipped as a second instance.
MIN_RESCHEDULE_SECONDS = 1.0
LOOKUP_DELAY_SECONDS = 10.0  # the first lookup, after the first token jobs read the sources


class CheckIns(Protocol):
    """Sentry Crons, or anything else that wants to hear about each check cycle."""

    def start(self) -> str | None: ...

    def finish(self, check_in_id: str | None, ok: bool, duration: float) -> None: ...


class Daemon:
    """The scheduler and its jobs. Thread-safe; `start` once, `stop` once."""

    def __init__(
        self,
        rotator: Rotator,
        monitor: Monitor | None = None,
        check_ins: CheckIns | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        systemd: SystemdNotifier | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        api_tokens: ApiTokens | None = None,
    ) -> None:
        """`clock` schedules jobs; `monotonic` times the checks that `is_healthy` judges.
        `api_tokens` keeps the long-lived API tokens (None: rotation only)."""
        self.rotator = rotator
        self.api_tokens = api_tokens
        self.monitor = monitor or Monitor(rotator.config)
        self.systemd = systemd or SystemdNotifier({})
        self._check_ins = check_ins
        self._token_failures = 0
        self._clock = clock
        self._monotonic = monotonic
        config = rotator.config
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(2),
                "exchange": ThreadPoolExecutor(worker_threads(config)),
            },
            job_defaults={"coalesce": True, "misfire_grace_time": None},
        )
        self._names: set[str] = set()
        self._seen_versions: dict[str, int] = {}
        self._in_flight: set[str] = set()  # tokens whose job runs now (and so is not scheduled)
        self._lock = threading.Lock()
        self._gate = threading.RLock()  # see _on_scheduler
        self._stopping = False
        self._vault_was_down = False
        self._last_check: float | None = None  # monotonic time the last check finished
        self._lifecycle_at: dict[str, datetime] = {}  # when a token's API-token lifecycle acts
        self._registered = False  # the registry took this instance's announcement
        self.last_outcomes: dict[str, Outcome] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Discover tokens and start the scheduler. Raises VaultError if the first discovery
        fails (the caller exits 3), so a daemon never runs blind."""
        names = self.rotator.discover()
        self._meet_peers(starting=True)
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
            next_run_time=self._clock() + timedelta(seconds=MIN_RESCHEDULE_SECONDS),
        )
        self._scheduler.add_job(
            self._maintain_vault_token,
            "date",
            run_date=self._clock() + timedelta(seconds=MIN_RESCHEDULE_SECONDS),
            id="vault-token",
        )
        if self.api_tokens is not None:
            self._scheduler.add_job(
                self._look_up,
                "interval",
                seconds=self.rotator.config.api_tokens.lookup_interval_seconds,
                id="lookup",
                max_instances=1,
                # After the first token jobs have read every source.
                next_run_time=self._clock() + timedelta(seconds=LOOKUP_DELAY_SECONDS),
            )
        if self.systemd.watchdog_seconds:
            # Pinged from a scheduler job, so a wedged scheduler stops the pings and systemd
            # restarts the service.
            self._scheduler.add_job(
                self.systemd.watchdog,
                "interval",
                seconds=max(0.5, self.systemd.watchdog_seconds / 2),
                id="watchdog",
                max_instances=1,
                next_run_time=self._clock(),
            )
        self._apply_discovery(names)
        logger.info(
            "rotator started: %d tokens under %s", len(names), self.rotator.store.source_prefix
        )
        self.systemd.ready(f"{len(names)} tokens; first check pending")

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, return only after in-flight jobs finished."""
        logger.info("stopping; waiting for in-flight work" if wait else "stopping")
        self.systemd.stopping()
        with self._gate:
            self._stopping = True
        self._scheduler.shutdown(wait=wait)
        if self._registered:
            try:
                self.rotator.store.withdraw_instance(self.rotator.instance_id)
            except VaultError as exc:  # it lapses anyway, one lease from the last check
                logger.info("leaving the instance registry failed: %s", exc)

    def reload(
        self, rotator: Rotator, check_ins: CheckIns | None, api_tokens: ApiTokens | None
    ) -> None:
        """Carry on with a rotator (check-ins, API-token keeper) built from a new config
        (SIGHUP): tokens keep their jobs and their Vault state, so nothing valid is re-issued;
        the periodic jobs take the new intervals."""
        self.systemd.reloading(time.monotonic_ns() // 1000)
        rotator.team = self.rotator.team
        self.rotator = rotator
        self._check_ins = check_ins
        self.api_tokens = api_tokens
        if api_tokens is not None:
            self._on_scheduler(
                lambda: self._scheduler.reschedule_job(
                    "lookup",
                    trigger="interval",
                    seconds=rotator.config.api_tokens.lookup_interval_seconds,
                )
            )
        schedule = rotator.config.schedule
        self._scheduler.reschedule_job(
            "discover", trigger="interval", seconds=schedule.discovery_interval_seconds
        )
        self._scheduler.reschedule_job(
            "check", trigger="interval", seconds=schedule.check_interval_seconds
        )
        self._discover()
        self.systemd.ready("configuration reloaded")
        logger.info("configuration reloaded")

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def is_healthy(self) -> bool:
        """The scheduler runs and its last check finished recently (what `/healthz` answers)."""
        if not self.running:
            return False
        interval = self.rotator.config.schedule.check_interval_seconds
        last = self._last_check
        return last is not None and self._monotonic() - last < 3 * interval + 30

    @property
    def names(self) -> set[str]:
        with self._lock:
            return set(self._names)

    # --- jobs ---------------------------------------------------------------------------------

    def _tick(self, name: str) -> None:
        with self._lock:
            self._in_flight.add(name)
        lifecycle: ApiTokenOutcome | None = None
        try:
            if self.api_tokens is not None:
                outcome, lifecycle = self.api_tokens.pass_over(name)
            else:
                outcome = self.rotator.rotate_one(name)
            with self._lock:
                if name not in self._names:
                    return
                self.last_outcomes[name] = outcome
                # The next check knows our own write by its version (memory) and leaves it
                # alone; a foreign write landing right after ours is a version it does not
                # know, and is looked at.
            if outcome.state is State.GONE:
                self._drop(name)
                return
            if outcome.reason is Reason.VAULT_AUTH:
                # Vault refused our token (revoked, expired): log in again now, not at the next
                # routine look; that job keeps its own backoff, so this cannot loop fast.
                self._wake_token_job()
            next_at = outcome.next_at
            lifecycle_at = lifecycle.next_at if lifecycle is not None else None
            with self._lock:
                if lifecycle_at is not None:
                    self._lifecycle_at[name] = lifecycle_at
                    next_at = min(next_at, lifecycle_at)
                else:
                    self._lifecycle_at.pop(name, None)
            if outcome.foreign_write and outcome.state is State.REFRESHED:
                # Restored: one more (read-free) look soon settles foreign_write.
                interval = self.rotator.config.schedule.check_interval_seconds
                next_at = min(next_at, self._clock() + timedelta(seconds=interval))
            self._schedule(name, next_at)
        finally:
            with self._lock:
                self._in_flight.discard(name)
        self.monitor.record(outcome)
        if lifecycle is not None:
            self.monitor.record_api_token(lifecycle)

    def _look_up(self) -> None:
        """Every managed technical user at MTM, one listing per workspace: API-token expiries
        into the sources, `technical_user_missing` and `unmanaged_technical_user`."""
        keeper = self.api_tokens
        if keeper is None:
            return
        inventory = keeper.survey(sorted(self.names))
        try:
            keeper.record_expiries(inventory)
        except VaultError as exc:
            logger.warning("recording API-token expiries failed: %s", exc)
        self.monitor.inventory(inventory)

    def _discover(self) -> None:
        try:
            names = self.rotator.discover()
        except VaultError as exc:
            logger.warning("discovery failed: %s", exc)
            if isinstance(exc, VaultAuthError):
                self._wake_token_job()  # refused (revoked, expired): log in again now
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
        started = self._monotonic()
        check_in = self._check_ins.start() if self._check_ins is not None else None
        ok = self._verify()
        self._last_check = self._monotonic()
        if self._check_ins is not None:
            self._check_ins.finish(check_in, ok, self._last_check - started)

    def _verify(self) -> bool:
        """Probe Vault, then each output; True when Vault answered throughout."""
        store = self.rotator.store
        try:
            ttl = store.auth.token_info().ttl
        except VaultError as exc:
            logger.warning("check: %s", exc)
            self.monitor.vault_health(False, None)
            self._vault_was_down = True
            self.rotator.memory.forget_listings()  # no exchange on what Vault may not take
            if isinstance(exc, VaultAuthError):
                self._wake_token_job()  # refused (revoked, expired): log in again now
            return False
        self.monitor.vault_health(True, ttl)
        self._meet_peers(starting=False)
        now = self._clock()
        if self._vault_was_down:
            # Vault is back: the backoff its outage caused is over, so every failing token is
            # looked at now rather than when its (up to max_backoff_seconds) backoff ends.
            self._vault_was_down = False
            for name in self.rotator.clear_transient_failures():
                logger.info("token %s: Vault is back; looking at it now", name)
                self._schedule(name, now)
        names = sorted(self.names)
        try:
            # One listing for every output and one for every source where Vault offers it
            # (OpenBao), else a metadata read per output and no source versions.
            listed = store.list_output_metadata()
            sources = store.list_source_versions()
        except VaultError as exc:
            logger.warning("check: %s", exc)
            return False
        memory = self.rotator.memory
        for name in names:
            try:
                metadata = (
                    listed.get(name) if listed is not None else store.read_output_metadata(name)
                )
            except VaultError as exc:
                logger.warning("check: %s", exc)
                return False
            source_version = sources.get(name) if sources is not None else None
            read = memory.source(name)
            source_moved = (
                read is not None and source_version is not None and read.version != source_version
            )
            memory.note_listing(name, Listing(source_version, metadata))
            try:
                self._check_token(name, metadata, now, source_moved)
            except Exception:  # the bulkhead: one token's bad metadata stops no other's check
                logger.exception("check: token %s: unexpected error", name)
        self.monitor.cycle_done(len(names))
        self.monitor.repeat()
        self.systemd.status(self._status_line(names))
        return True

    def _check_token(
        self, name: str, metadata: OutputMetadata | None, now: datetime, source_moved: bool
    ) -> None:
        """One output on one check: pull its job forward if need be, feed the monitor."""
        version = metadata.current_version if metadata else 0
        with self._lock:
            seen = self._seen_versions.get(name)
            self._seen_versions[name] = version
            running = name in self._in_flight
        memory = self.rotator.memory
        vouched = False
        if metadata is not None and metadata.vouched_source_version is not None:
            vouched = metadata.vouched(memory.key(name, metadata.vouched_source_version))
        look = plan_check(
            running=running,
            has_job=running or self._has_job(_job_id(name)),
            seen_version=seen,
            version=version,
            expires_at=metadata.expires_at if metadata else None,
            now=now,
            known_version=memory.output_version(name),
            vouched=vouched,
            source_moved=source_moved,
        )
        if look is Look.MOVED:
            assert metadata is not None and metadata.expires_at is not None  # vouched for
            self._moved(name, metadata, metadata.expires_at)
        elif look is Look.ADD_JOB:
            logger.debug("token %s: no scheduled job; adding one", name)
            self._schedule(name, now)
        elif look is Look.CHANGED and source_moved:
            logger.info("token %s: the source changed; looking at it now", name)
            self._look_soon(name, now)
        elif look is Look.CHANGED:
            logger.info("token %s: output is now version %d; looking at it now", name, version)
            self._look_soon(name, now)
        elif look is Look.STALE:
            self._look_soon(name, now)
        self.monitor.check_token(name, metadata)

    def _moved(self, name: str, metadata: OutputMetadata, expires_at: datetime) -> None:
        """Another instance stored `name`'s new version: look at it when that one is due (by
        the times its metadata records), or sooner if the API-token lifecycle wants."""
        issued_at = metadata.issued_at or expires_at
        rules = self.rotator.rules
        when = moved_look(name, issued_at, expires_at, self.rotator.team.deference_for(name), rules)
        with self._lock:
            lifecycle_at = self._lifecycle_at.get(name)
        logger.debug("token %s: version %d stored elsewhere", name, metadata.current_version)
        self._schedule(name, min(when, lifecycle_at) if lifecycle_at is not None else when)

    def _meet_peers(self, *, starting: bool) -> None:
        """Learn who else is live and announce this instance in the registry, naming the
        instances it knows of (`peers.py`). While a live one does not know of this instance
        yet, this one refreshes nothing (`Team.met`). If the registry cannot be used (Vault, an
        older policy), every refresh claims, as if others were live."""
        rotator = self.rotator
        store, team, now = rotator.store, rotator.team, self._clock()
        interval = rotator.config.schedule.check_interval_seconds
        try:
            if starting:
                # Before the listing: of two instances starting at once, the later to announce
                # then finds the earlier one.
                store.announce_instance(team.me, peers.announcement(now, interval))
                self._registered = True
            found = peers.live_peers(store.list_instances(), team.me, now)
            known = [peer.instance for peer in found]
            store.announce_instance(team.me, peers.announcement(now, interval, known))
            self._registered = True
        except VaultError as exc:
            if team.others is not None or starting:
                logger.warning("instance registry: %s; claiming every refresh", exc)
            rotator.team = replace(team, others=None)
            return
        met = team.met(found, now, peers.deference(interval))
        rotator.team = met
        if met.others != team.others:
            logger.info(
                "instance registry: %s",
                f"{len(met.others or ())} other instances live" if met.others else "alone",
            )
        if met.wait_until is not None and met.wait_until != team.wait_until:
            logger.info(
                "%d other instances do not know of this one yet; refreshing nothing before %s",
                len(peers.unaware(found, team.me)),
                met.wait_until.isoformat(timespec="seconds"),
            )
        elif met.wait_until is None and team.wait_until is not None and team.wait_until > now:
            logger.info(
                "every other instance knows of this one as of %s; refreshing as planned",
                now.isoformat(timespec="milliseconds"),
            )
            with self._lock:
                held = [
                    name
                    for name, outcome in self.last_outcomes.items()
                    if outcome.reason is Reason.NEWCOMER and name not in self._in_flight
                ]
            for name in held:
                self._look_soon(name, now)

    def _status_line(self, names: list[str]) -> str:
        with self._lock:
            outcomes = [self.last_outcomes[n] for n in names if n in self.last_outcomes]
        failing = sum(1 for outcome in outcomes if not outcome.healthy)
        upcoming = [o.next_at for o in outcomes if o.healthy]
        next_refresh = f"; next refresh {min(upcoming):%H:%M:%S} UTC" if upcoming else ""
        return f"{len(names)} tokens, {failing} failing{next_refresh}"

    def _wake_token_job(self) -> None:
        if self._token_failures == 0:
            self._on_scheduler(
                lambda: self._scheduler.modify_job("vault-token", next_run_time=self._clock())
            )

    def _maintain_vault_token(self) -> None:
        """Renew rotator's own Vault token at about two thirds of its TTL, log in again when it
        cannot be renewed (or was revoked), re-read a rewritten token file; back off on failure,
        never a fast loop."""
        auth = self.rotator.store.auth
        delay = 60.0
        try:
            if auth.token_file_changed():
                logger.info("vault token file changed; reading it again")
                auth.login()
            try:
                info = auth.token_info()
            except VaultAuthError:
                logger.warning("Vault refuses rotator's token; logging in again")
                auth.login()
                info = auth.token_info()
            action = policy.vault_token_action(info.ttl, info.creation_ttl, info.renewable)
            if action is VaultTokenAction.RENEW:
                ttl = auth.renew_token()
                logger.info("renewed rotator's Vault token; %ds left", ttl)
                if policy.renewal_fell_short(ttl, info.creation_ttl):
                    action = VaultTokenAction.LOGIN
            if action is VaultTokenAction.LOGIN:
                logger.info("logging in to Vault again (token not renewable or at its max TTL)")
                auth.login()
                info = auth.token_info()
            self._token_failures = 0
            delay = policy.vault_token_check_delay(info.creation_ttl)
        except (VaultError, ConfigError) as exc:
            self._token_failures += 1
            delay = policy.backoff_delay(FailureKind.TRANSIENT, self._token_failures, 60.0, 0.5)
            logger.warning(
                "maintaining rotator's Vault token failed (%s); retry in %.0fs", exc, delay
            )
        finally:
            self._on_scheduler(
                lambda: self._scheduler.add_job(
                    self._maintain_vault_token,
                    "date",
                    run_date=self._clock() + timedelta(seconds=delay),
                    id="vault-token",
                    replace_existing=True,
                )
            )

    # --- plumbing -----------------------------------------------------------------------------

    def _schedule(self, name: str, when: datetime) -> None:
        earliest = self._clock() + timedelta(seconds=MIN_RESCHEDULE_SECONDS)
        with self._lock:
            if name not in self._names:
                return
        self._on_scheduler(
            lambda: self._scheduler.add_job(
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
        )

    def _look_soon(self, name: str, when: datetime) -> None:
        """Have `name` looked at by `when` (or the rescheduling floor), but never push its job
        later: a check every second would otherwise keep a due job a second away forever."""
        found: list[Any] = []
        self._on_scheduler(lambda: found.append(self._scheduler.get_job(_job_id(name))))
        upcoming = found[0].next_run_time if found and found[0] is not None else None
        earliest = self._clock() + timedelta(seconds=MIN_RESCHEDULE_SECONDS)
        if upcoming is not None and upcoming <= max(when, earliest):
            return
        self._schedule(name, when)

    def _on_scheduler(self, action: Callable[[], object]) -> None:
        """Run `action` on the scheduler unless stopping has begun.

        APScheduler's shutdown(wait=True) holds its job store lock while it waits for running
        jobs, so a job that touched the scheduler then would deadlock the shutdown. Jobs go
        through here; `stop` closes the gate before shutting down.
        """
        with self._gate:
            if self._stopping:
                return
            with contextlib.suppress(JobLookupError):  # the job ran and went meanwhile
                action()

    def _has_job(self, job_id: str) -> bool:
        found: list[object] = []
        self._on_scheduler(lambda: found.append(self._scheduler.get_job(job_id)))
        return bool(found and found[0] is not None)

    def _drop(self, name: str) -> None:
        with self._lock:
            self._names.discard(name)
            self._seen_versions.pop(name, None)
            self._lifecycle_at.pop(name, None)
            self.last_outcomes.pop(name, None)
        self._on_scheduler(lambda: self._scheduler.remove_job(_job_id(name)))
        self.rotator.forget(name)
        self.monitor.token_removed(name)


def _job_id(name: str) -> str:
    return f"token:{name}"


def run_forever(
    daemon: Daemon,
    stop: threading.Event | None = None,
    on_idle: Callable[[], None] | None = None,
    idle_seconds: float = 1.0,
    on_reload: Callable[[], None] | None = None,
) -> int:
    """Start `daemon`, block until SIGTERM, SIGINT or `stop`, drain, return 0.

    The only place that installs signal handlers. SIGHUP calls `on_reload` on the main thread
    (never inside the handler). `on_idle` is called every `idle_seconds` on the main thread while
    the daemon runs (the demo draws its table there).
    """
    stop = stop or threading.Event()
    reload_requested = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        if signum == signal.SIGHUP:
            reload_requested.set()
        else:
            stop.set()

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        daemon.start()
        while not stop.wait(idle_seconds if on_idle is not None else 0.2):
            if reload_requested.is_set():
                reload_requested.clear()
                if on_reload is not None:
                    on_reload()
            if on_idle is not None:
                on_idle()
    finally:
        if daemon.running:
            daemon.stop(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped")
    return 0
