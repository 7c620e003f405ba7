"""Rotating tokens: read Vault, ask the policy, exchange, write back. One token at a time or a
whole cycle; used alike by the daemon's per-token jobs and by `check`, `rotate` and `status`.

Bulkheads: every failure of one token is caught in `rotate_one` and becomes that token's
`Outcome`; a cycle always reports every token. A good access token is never overwritten by a bad
one: a new token is written only after `tokens.parse_token_response` accepted it, and with
check-and-set against the version that was read.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotator import policy
from rotator.config import Config
from rotator.errors import (
    ApiTokenRejected,
    RateLimited,
    RotatorError,
    SourceError,
    VaultConflict,
    VaultError,
)
from rotator.exchange import TokenExchanger
from rotator.policy import Action, Decision, Failure, Reason
from rotator.sources import Source, parse_source
from rotator.tokens import AccessToken, parse_output
from rotator.vault import SecretVersion, VaultStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one token in one pass, and when to look at it next."""

    name: str
    state: str  # "fresh" | "refreshed" | "failing" | "invalid_source" | "gone"
    output: AccessToken | None
    next_at: datetime
    reason: str = ""
    error: str | None = None
    error_kind: str | None = None

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
    ) -> None:
        self.config = config
        self.store = store
        self.exchanger = exchanger
        self._clock = clock
        self._jitter = jitter
        self._failures: dict[str, Failure] = {}
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
                now = self._clock()
                failure = self._record_failure(name, "transient", now)
                return Outcome(name, "failing", None, failure.retry_at, "vault", str(exc), "vault")

    def _rotate(self, name: str, force: bool) -> Outcome:
        now = self._clock()
        source_secret = self.store.read_source(name)
        if source_secret is None:
            self._failures.pop(name, None)
            return Outcome(name, "gone", None, now + timedelta(days=1), "source deleted")
        output_secret = self.store.read_output(name)
        output, readable = _read_output(name, output_secret)

        try:
            source = self._parse(name, source_secret)
        except SourceError as exc:
            logger.error("%s", exc)
            failure = self._record_failure(name, "invalid_source", now)
            return Outcome(
                name,
                "invalid_source",
                output,
                failure.retry_at,
                "source",
                str(exc),
                "invalid_source",
            )

        decision = self._decide(name, now, output, readable, source.version)
        if decision.action is Action.WAIT and not force:
            return Outcome(
                name, "fresh" if output else "failing", output, decision.at, decision.reason
            )

        reason = "forced" if force else decision.reason.value
        return self._refresh(source, output_secret.version if output_secret else 0, output, reason)

    def _refresh(
        self, source: Source, cas: int, previous: AccessToken | None, reason: str
    ) -> Outcome:
        name = source.name
        try:
            token = self.exchanger.exchange(source)
        except RotatorError as exc:
            now = self._clock()
            kind = _failure_kind(exc)
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            failure = self._record_failure(name, kind, now, retry_after)
            logger.warning(
                "token %s: exchange failed (%s), attempt %d, next try at %s",
                name,
                exc,
                failure.count,
                failure.retry_at.isoformat(timespec="seconds"),
            )
            return Outcome(name, "failing", previous, failure.retry_at, reason, str(exc), kind)

        try:
            version = self.store.write_output(name, token, cas=cas)
        except VaultConflict:
            # Someone else wrote meanwhile (another instance, or a foreign writer): keep theirs if
            # it is a valid token, otherwise report and let the next pass decide.
            current, _ = _read_output(name, self.store.read_output(name))
            now = self._clock()
            if current is not None and current.expires_at > now:
                logger.info("token %s: another writer stored a fresh token first; keeping it", name)
                decision = self._decide(name, now, current, True, source.version)
                return Outcome(name, "fresh", current, decision.at, "conflict")
            raise
        self._failures.pop(name, None)
        logger.info(
            "token %s: issued access token %s (%s), valid until %s, stored as version %d",
            name,
            token.fingerprint,
            reason,
            token.expires_at.isoformat(timespec="seconds"),
            version,
        )
        decision = self._decide(name, self._clock(), token, True, source.version)
        return Outcome(name, "refreshed", token, decision.at, reason)

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
        output, readable = _read_output(name, self.store.read_output(name))
        try:
            source = self._parse(name, source_secret)
        except SourceError as exc:
            return Outcome(
                name, "invalid_source", output, now, "source", str(exc), "invalid_source"
            )
        decision = self._decide(name, now, output, readable, source.version)
        state = "failing" if output is None or output.expires_at <= now else "fresh"
        return Outcome(name, state, output, decision.at, decision.reason.value)

    def issuances_last_hour(self, name: str) -> int:
        """Output versions written in the last hour (from Vault's version history)."""
        since = self._clock() - timedelta(hours=1)
        return sum(1 for created in self.store.output_history(name) if created > since)

    def forget(self, name: str) -> None:
        """Drop in-memory state for a token whose source is gone."""
        with self._guard:
            self._failures.pop(name, None)
            self._locks.pop(name, None)

    # --- helpers ------------------------------------------------------------------------------

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
        self, name: str, kind: str, now: datetime, retry_after: float | None = None
    ) -> Failure:
        failure = policy.next_failure(
            self._failures.get(name),
            kind,
            now,
            self.config.exchange.max_backoff_seconds,
            self._jitter(),
            retry_after,
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


def _failure_kind(exc: RotatorError) -> str:
    if isinstance(exc, ApiTokenRejected):
        return "rejected"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if exc.retryable:
        return "transient"
    return "rejected"  # HostNotAllowed, RedirectRefused, RequestRefused: slow retries


__all__ = ["Outcome", "Reason", "Rotator"]
