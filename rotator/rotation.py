"""Rotating tokens: read Vault, ask the policy, exchange, write back. One token at a time or a
whole cycle; used alike by the daemon's per-token jobs and by `check`, `rotate` and `status`.

Bulkheads: every failure of one token is caught in `rotate_one` and becomes that token's
`Outcome`; a cycle always reports every token. A good access token is never overwritten by a bad
one: a new token is written only after `tokens.parse_token_response` accepted it, and with
check-and-set against the version that was read.

Issuing as little as possible (LeanIX asks clients not to request tokens while one is valid):
- a token rotator obtained but could not store, or that someone else overwrote, is *held* in
  memory and written (again) while it is fresh, instead of exchanging anew;
- at most `max_issuances_per_hour` issuances per token in any hour, counted from the issuance
  log kept in the output's custom_metadata (per minute; tokens.py), so restarts and other
  instances count too. The cap is hard: even `rotate` waits for the window.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from rotator import policy
from rotator.config import Config
from rotator.errors import (
    ApiTokenRejected,
    RateLimited,
    RotatorError,
    SourceError,
    VaultAuthError,
    VaultConflict,
    VaultError,
)
from rotator.exchange import TokenExchanger
from rotator.policy import Action, Decision, Failure, Reason
from rotator.redact import SECRETS
from rotator.sources import Source, parse_source
from rotator.tokens import AccessToken, Principal, parse_output
from rotator.vault import SecretVersion, VaultStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one token in one pass, and when to look at it next.

    `state`: fresh | refreshed | failing | capped | invalid_source | gone.
    `error_kind`: a `policy.BACKOFF_BASE` kind, or "vault_write" when a token was obtained but
    could not be stored.
    """

    name: str
    state: str
    output: AccessToken | None
    next_at: datetime
    reason: str = ""
    error: str | None = None
    error_kind: str | None = None
    failures: int = 0
    foreign_write: bool = False
    capped_until: datetime | None = None
    principal_change: tuple[Principal, Principal] | None = None
    api_token_expires_at: datetime | None = None
    version: int | None = None  # the output's KV version this outcome wrote or saw, if known
    issuances_last_hour: int | None = None  # when this pass counted them on its way

    @property
    def healthy(self) -> bool:
        """True when the token works and consumers hold a valid access token."""
        return self.state in ("fresh", "refreshed")


def _now() -> datetime:
    return datetime.now(UTC)


class Rotator:
    """Rotates the tokens under one Vault source prefix. Thread-safe per token name."""

    def __init__(
        self,
        config: Config,
        store: VaultStore,
        exchanger: TokenExchanger,
        clock: Callable[[], datetime] = _now,
        jitter: Callable[[], float] = random.random,
        on_exchange: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """`on_exchange(name, result, seconds)` is called after every request to the IdP;
        `result` is "success" or a failure kind."""
        self.config = config
        self.store = store
        self.exchanger = exchanger
        self.on_exchange = on_exchange
        self._clock = clock
        self._jitter = jitter
        # Names this process in per-token claims; unique per process, stable for its life.
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._failures: dict[str, Failure] = {}
        self._held: dict[str, AccessToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- one token ----------------------------------------------------------------------------

    def rotate_one(self, name: str, *, force: bool = False) -> Outcome:
        """Refresh `name` if it is due (always, with `force`); never raises for token problems.

        Vault being unavailable is reported as a failing outcome too; the caller decides whether
        that is worth more than a log line.
        """
        with self._lock_for(name):
            try:
                return self._rotate(name, force)
            except VaultError as exc:
                logger.warning("token %s: %s", name, exc)
                failure = self._record_failure(name, "transient", self._clock())
                return Outcome(
                    name,
                    "failing",
                    None,
                    failure.retry_at,
                    "vault_auth" if isinstance(exc, VaultAuthError) else "vault",
                    str(exc),
                    "transient",
                    failures=failure.count,
                )
            except Exception as exc:  # the bulkhead: one token's bug stops no other
                logger.exception("token %s: unexpected error", name)
                failure = self._record_failure(name, "transient", self._clock())
                return Outcome(
                    name,
                    "failing",
                    None,
                    failure.retry_at,
                    "bug",
                    f"unexpected {type(exc).__name__}; see the log",
                    "transient",
                    failures=failure.count,
                )

    def _rotate(self, name: str, force: bool) -> Outcome:
        now = self._clock()
        source_secret = self.store.read_source(name)
        if source_secret is None:
            self.forget(name)
            return Outcome(name, "gone", None, now + timedelta(days=1), "source deleted")
        SECRETS.register(source_secret.data.get("api_token"))
        output_secret = self.store.read_output(name)
        output, readable = _read_output(name, output_secret)
        foreign = output_secret is not None and not output_secret.written_by_rotator
        if foreign:
            logger.warning("token %s: the output secret was changed by someone else", name)
            output = None  # never trust, nor schedule by, a token rotator did not write
        elif output is not None:
            SECRETS.register(output.access_token)

        try:
            source = self._parse(name, source_secret)
        except SourceError as exc:
            logger.error("%s", exc)
            failure = self._record_failure(
                name, "invalid_source", now, source_version=source_secret.version
            )
            return Outcome(
                name,
                "invalid_source",
                output,
                failure.retry_at,
                "source",
                str(exc),
                "invalid_source",
                failures=failure.count,
                foreign_write=foreign,
            )

        decision = self._decide(name, now, output, readable, source.version)
        if decision.action is Action.WAIT and not force:
            logger.debug(
                "token %s: %s; next look at %s",
                name,
                decision.reason.value,
                decision.at.isoformat(timespec="seconds"),
            )
            pending = self._failures.get(name)
            if decision.reason is Reason.BACKOFF and pending is not None:
                detail = f"{pending.count} failed attempts; next at {decision.at:%H:%M:%S}"
                return Outcome(
                    name,
                    "failing",
                    output,
                    decision.at,
                    "backoff",
                    detail,
                    pending.kind,
                    failures=pending.count,
                    foreign_write=foreign,
                    api_token_expires_at=source.api_token_expires_at,
                )
            return Outcome(
                name,
                "fresh" if output else "failing",
                output,
                decision.at,
                decision.reason.value,
                api_token_expires_at=source.api_token_expires_at,
            )

        reason = "forced" if force else ("foreign_write" if foreign else decision.reason.value)
        outcome = self._refresh(source, output_secret, output, reason, force)
        return replace(
            outcome, foreign_write=foreign, api_token_expires_at=source.api_token_expires_at
        )

    def _refresh(
        self,
        source: Source,
        current: SecretVersion | None,
        previous: AccessToken | None,
        reason: str,
        force: bool,
    ) -> Outcome:
        """Store a new token for `source`: a held one if still fresh, else a new exchange made
        under this instance's claim, so that several instances issue one token between them."""
        name = source.name
        now = self._clock()
        held = self._usable_held(name, source, now) if not force else None
        if held is not None:
            return self._store(source, held, current, previous, reason)

        # The issuance log comes with the output read; only an output without one (absent, or
        # written before rotator kept it) costs a read of the version history.
        history = current.issuances if current is not None else None
        if history is None:
            history = self.store.output_issuances(name)
        recent = policy.issuances_in_window(history, now)
        allowed_at = policy.issuance_allowed_at(
            history, now, self.config.alerts.max_issuances_per_hour
        )
        if allowed_at is not None:
            logger.warning(
                "token %s: %d issuances in the last hour; next allowed at %s",
                name,
                self.config.alerts.max_issuances_per_hour,
                allowed_at.isoformat(timespec="seconds"),
            )
            return Outcome(
                name,
                "capped",
                previous,
                allowed_at,
                reason,
                "issuance cap reached",
                capped_until=allowed_at,
                issuances_last_hour=recent,
            )

        lease = self._claim_lease()
        claim = self.store.claim(name, self.instance_id, now, lease)
        if claim is None:
            logger.info("token %s: another rotator is refreshing it", name)
            return Outcome(
                name, "fresh" if previous else "failing", previous, now + lease, "claimed elsewhere"
            )
        read_version = current.version if current else 0
        output_version = read_version
        try:
            latest = current
            if claim.output_may_have_changed(read_version):
                # Another instance may have stored a token between our read and our claim (its
                # claim ends only after its write): look again. Skipped when the claim's last
                # release recorded the very version we read, or when there was no claim before.
                latest = self.store.read_output(name)
                output_version = latest.version if latest else 0
                if output_version != read_version:
                    token, _ = _read_output(name, latest)
                    if token is not None and latest is not None and latest.written_by_rotator:
                        decision = self._decide(name, now, token, True, source.version)
                        if decision.action is Action.WAIT and not force:
                            return Outcome(name, "fresh", token, decision.at, "refreshed elsewhere")
            started = time.monotonic()
            try:
                token = self.exchanger.exchange(source)
            except RotatorError as exc:
                self._exchanged(name, _failure_kind(exc), started)
                return self._exchange_failed(source, exc, previous, reason)
            self._exchanged(name, "success", started)
            SECRETS.register(token.access_token)
            self._held[name] = token
            outcome = self._store(source, token, latest, previous, reason)
            if outcome.version is not None:
                output_version = outcome.version
            if outcome.state == "refreshed":
                outcome = replace(outcome, issuances_last_hour=recent + 1)  # the one just written
            return outcome
        finally:
            self.store.release(name, self.instance_id, claim, output_version)

    def _store(
        self,
        source: Source,
        token: AccessToken,
        current: SecretVersion | None,
        previous: AccessToken | None,
        reason: str,
    ) -> Outcome:
        """Write `token` over `current` (check-and-set) and report the outcome."""
        name = source.name
        try:
            version = self.store.write_output(
                name, token, current, keep_versions=self._keep_versions()
            )
        except VaultConflict:
            return self._lost_race(name, source, reason)
        except VaultError as exc:
            failure = self._record_failure(name, "transient", self._clock())
            logger.error("token %s: obtained a token but could not store it: %s", name, exc)
            return Outcome(
                name,
                "failing",
                previous,
                failure.retry_at,
                reason,
                str(exc),
                "vault_write",
                failures=failure.count,
            )
        self._failures.pop(name, None)
        # Stay held after the write: if someone overwrites or deletes the output while the token
        # is fresh, it is written back instead of exchanged anew (`_usable_held` drops it once due).
        self._held[name] = token
        logger.info(
            "token %s: stored access token %s (%s), valid until %s, version %d",
            name,
            token.fingerprint,
            reason,
            token.expires_at.isoformat(timespec="seconds"),
            version,
        )
        change = None
        if (
            previous is not None
            and _principal_known(previous.principal)
            and previous.principal != token.principal
        ):
            change = (previous.principal, token.principal)
        decision = self._decide(name, self._clock(), token, True, source.version)
        return Outcome(
            name, "refreshed", token, decision.at, reason, principal_change=change, version=version
        )

    def _exchange_failed(
        self,
        source: Source,
        exc: RotatorError,
        previous: AccessToken | None,
        reason: str,
    ) -> Outcome:
        kind = _failure_kind(exc)
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        name = source.name
        failure = self._record_failure(name, kind, self._clock(), retry_after, source.version)
        logger.warning(
            "token %s: exchange failed (%s), attempt %d, next try at %s",
            name,
            exc,
            failure.count,
            failure.retry_at.isoformat(timespec="seconds"),
        )
        return Outcome(
            name,
            "failing",
            previous,
            failure.retry_at,
            reason,
            str(exc),
            kind,
            failures=failure.count,
        )

    def _lost_race(self, name: str, source: Source, reason: str) -> Outcome:
        """Someone wrote between our read and our write. Keep theirs if it is rotator's own
        (another instance) and valid; otherwise look again soon."""
        current = self.store.read_output(name)
        token, _ = _read_output(name, current)
        now = self._clock()
        if current is not None and current.written_by_rotator and token and token.expires_at > now:
            logger.info("token %s: another rotator stored a fresh token first; keeping it", name)
            decision = self._decide(name, now, token, True, source.version)
            return Outcome(name, "fresh", token, decision.at, "conflict", version=current.version)
        failure = self._record_failure(name, "transient", now)
        return Outcome(
            name,
            "failing",
            None,
            failure.retry_at,
            reason,
            "output changed during the write",
            "transient",
            failures=failure.count,
        )

    # --- many tokens --------------------------------------------------------------------------

    def discover(self) -> list[str]:
        """Every source secret's name under the prefix. Raises VaultError."""
        return self.store.list_sources()

    def run_cycle(
        self, names: Iterable[str] | None = None, *, force: bool = False
    ) -> list[Outcome]:
        """Rotate `names` (default: everything discovered), at most `max_workers` at once.
        Returns one outcome per token, in name order. Raises VaultError only from discovery."""
        todo = sorted(set(self.discover() if names is None else names))
        workers = max(1, min(self.config.exchange.max_workers, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
            return list(pool.map(lambda n: self.rotate_one(n, force=force), todo))

    def inspect(self, name: str) -> Outcome:
        """A read-only look at one token: no exchange, no write."""
        now = self._clock()
        source_secret = self.store.read_source(name)
        if source_secret is None:
            return Outcome(name, "gone", None, now, "source deleted")
        output_secret = self.store.read_output(name)
        output, readable = _read_output(name, output_secret)
        foreign = output_secret is not None and not output_secret.written_by_rotator
        try:
            source = self._parse(name, source_secret)
        except SourceError as exc:
            return Outcome(
                name, "invalid_source", output, now, "source", str(exc), "invalid_source"
            )
        decision = self._decide(name, now, output, readable, source.version)
        if foreign:
            return Outcome(
                name,
                "failing",
                output,
                now,
                "foreign_write",
                "the output secret was changed by someone else",
                foreign_write=True,
            )
        state = "failing" if output is None or output.expires_at <= now else "fresh"
        return Outcome(
            name,
            state,
            output,
            decision.at,
            decision.reason.value,
            api_token_expires_at=source.api_token_expires_at,
        )

    def issuances_last_hour(self, name: str) -> int:
        """Access tokens issued in the last hour (`VaultStore.output_issuances`)."""
        return policy.issuances_in_window(self.store.output_issuances(name), self._clock())

    def adopt(self, previous: Rotator) -> None:
        """Take over a replaced rotator's memory (failures and backoff, held tokens), so a
        reload neither forgets a backoff nor re-issues a token it already holds."""
        with previous._guard:
            failures, held = dict(previous._failures), dict(previous._held)
        with self._guard:
            self._failures.update(failures)
            self._held.update(held)

    def clear_transient_failures(self) -> list[str]:
        """Forget the backoff of every token failing transiently (Vault or IdP outages); returns
        their names. For when the outage is known to be over."""
        with self._guard:
            names = [n for n, f in self._failures.items() if f.kind == "transient"]
            for name in names:
                del self._failures[name]
        return sorted(names)

    def forget(self, name: str) -> None:
        """Drop in-memory state for a token whose source is gone."""
        with self._guard:
            self._failures.pop(name, None)
            self._held.pop(name, None)

    # --- helpers ------------------------------------------------------------------------------

    def _usable_held(self, name: str, source: Source, now: datetime) -> AccessToken | None:
        """A token obtained earlier but not (or no longer) in Vault, if it is still fresh."""
        held = self._held.get(name)
        if held is None:
            return None
        decision = self._decide(name, now, held, True, source.version)
        if decision.reason is Reason.FRESH:
            logger.info("token %s: writing back held access token %s", name, held.fingerprint)
            return held
        self._held.pop(name, None)
        return None

    def _exchanged(self, name: str, result: str, started: float) -> None:
        if self.on_exchange is not None:
            self.on_exchange(name, result, time.monotonic() - started)

    def _claim_lease(self) -> timedelta:
        # Long enough for an exchange (connect + read + body deadline) and the writes after it.
        return timedelta(seconds=3 * self.config.exchange.timeout_seconds + 15)

    def _keep_versions(self) -> int:
        # Enough history to count a full hour of issuances, plus a few for inspection.
        return max(10, self.config.alerts.max_issuances_per_hour + 2)

    def _parse(self, name: str, secret: SecretVersion) -> Source:
        exchange = self.config.exchange
        return parse_source(
            name, secret.data, secret.version, exchange.allowed_hosts, exchange.insecure_http_hosts
        )

    def _decide(
        self,
        name: str,
        now: datetime,
        output: AccessToken | None,
        readable: bool,
        source_version: int | None,
    ) -> Decision:
        # The jitter is drawn from the issuance, so every look at the same token (and every
        # instance) agrees on its refresh time.
        jitter = policy.phase(f"{name}@{output.issued_at.isoformat()}") if output else 0.0
        return policy.decide(
            now,
            name,
            output,
            readable,
            source_version,
            self._failures.get(name),
            self.config.exchange.refresh_fraction,
            jitter,
        )

    def _record_failure(
        self,
        name: str,
        kind: str,
        now: datetime,
        retry_after: float | None = None,
        source_version: int | None = None,
    ) -> Failure:
        failure = policy.next_failure(
            self._failures.get(name),
            kind,
            now,
            self.config.exchange.max_backoff_seconds,
            self._jitter(),
            retry_after,
            source_version,
        )
        self._failures[name] = failure
        return failure

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


def _read_output(name: str, secret: SecretVersion | None) -> tuple[AccessToken | None, bool]:
    """The output's token, and False when an output exists but is unreadable."""
    if secret is None:
        return None, True
    try:
        return parse_output(secret.data), True
    except ValueError as exc:
        logger.warning("token %s: output secret is malformed (%s); it will be replaced", name, exc)
        return None, False


def _principal_known(principal: Principal) -> bool:
    return principal.workspace_id is not None or principal.role is not None


def _failure_kind(exc: RotatorError) -> str:
    if isinstance(exc, ApiTokenRejected):
        return "rejected"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if exc.retryable:
        return "transient"
    return "refused"  # HostNotAllowed, RedirectRefused, RequestRefused: slow retries
