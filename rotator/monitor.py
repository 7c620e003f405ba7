"""What the daemon tells on-call and Prometheus: the glue between rotation outcomes, the pure
alert decisions of `alerting.py`, the alert sinks and the metrics.

The daemon calls `record` after every token job, `check_token` for every token on each check,
`vault_health` once per check and `repeat` now and then; everything else follows from those.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotator import alerting, policy
from rotator.alerting import (
    AlertBook,
    AlertEvent,
    Kind,
    Observation,
    Severity,
    expiry_observations,
    token_observations,
)
from rotator.config import Config
from rotator.inventory import Inventory, Standing
from rotator.lifecycle import Verdict
from rotator.metrics import RotatorMetrics
from rotator.notify import Notifier
from rotator.outcome import ApiTokenOutcome, Outcome, Replacement, State
from rotator.records import OutputMetadata

logger = logging.getLogger(__name__)

VAULT_DOWN_AFTER = 2  # failed health checks in a row before vault_unavailable fires


@dataclass
class _Known:
    """The last known facts about one token, kept across outcomes that say nothing new."""

    expires_at: datetime | None = None
    lifetime: timedelta | None = None
    api_token_expires_at: datetime | None = None
    promoted_at: datetime | None = None  # api_token_next took the api_token's place then


class Monitor:
    """Alert lifecycle plus metrics for one daemon. Thread-safe."""

    def __init__(
        self,
        config: Config,
        metrics: RotatorMetrics | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.notifier = notifier
        self.book = AlertBook(timedelta(seconds=config.alerts.repeat_interval_seconds))
        self._clock = clock
        self._known: dict[str, _Known] = {}
        # The technical users unmanaged_technical_user fires for, by the admin that listed them.
        self._unmanaged: dict[str, str] = {}
        self._vault_failures = 0
        self._lock = threading.Lock()
        if metrics is not None:
            metrics.max_issuances.set(config.alerts.max_issuances_per_hour)

    # --- inputs -------------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """After one token job: update what is known, the metrics and the alerts."""
        now = self._clock()
        with self._lock:
            known = self._known.setdefault(outcome.name, _Known())
            if outcome.output is not None:
                known.expires_at = outcome.output.expires_at
                known.lifetime = outcome.output.lifetime
            if outcome.api_token_expires_at is not None or outcome.state is not State.FAILING:
                known.api_token_expires_at = outcome.api_token_expires_at
            promotion_over = alerting.promotion_over(known.promoted_at, outcome.healthy, now)
            if promotion_over:
                known.promoted_at = None
            api_token_expires_at = known.api_token_expires_at
        if self.metrics is not None:
            self.metrics.healthy.labels(outcome.name).set(1 if outcome.healthy else 0)
            if outcome.output is not None:
                self.metrics.expires.labels(outcome.name).set(outcome.output.expires_at.timestamp())
            if api_token_expires_at is not None:
                self.metrics.api_token_expires.labels(outcome.name).set(
                    api_token_expires_at.timestamp()
                )
        observations = token_observations(outcome, now) + self._expiry(outcome.name, now)
        if promotion_over:
            observations.append(Observation(Kind.API_TOKEN_PROMOTED, outcome.name, False))
        self._apply(observations, now)

    def record_api_token(self, outcome: ApiTokenOutcome) -> None:
        """After one pass of a token's API-token lifecycle: replacements, promotions, the staged
        api_token_next."""
        now = self._clock()
        if outcome.result is Replacement.PROMOTED:
            with self._lock:
                self._known.setdefault(outcome.name, _Known()).promoted_at = now
        if self.metrics is not None:
            if outcome.result is Replacement.REPLACED:
                self.metrics.replacements.labels(outcome.name, "success").inc()
            elif outcome.result is Replacement.FAILED:
                self.metrics.replacements.labels(outcome.name, "failed").inc()
            if outcome.next_token in (Verdict.WORKS, Verdict.REJECTED):
                self.metrics.next_healthy.labels(outcome.name).set(
                    1 if outcome.next_token is Verdict.WORKS else 0
                )
        self._apply(alerting.api_token_observations(outcome), now)

    def inventory(self, inventory: Inventory) -> None:
        """After a survey of the technical users at MTM: their API tokens' expiries, the
        sources whose user is gone, the users no source holds."""
        now = self._clock()
        for entry in inventory.of(Standing.MANAGED):
            if entry.source is None or entry.expires_at is None:
                continue
            with self._lock:
                self._known.setdefault(
                    entry.source, _Known()
                ).api_token_expires_at = entry.expires_at
            if self.metrics is not None:
                self.metrics.api_token_expires.labels(entry.source).set(
                    entry.expires_at.timestamp()
                )
        with self._lock:
            before = dict(self._unmanaged)
        observations = alerting.inventory_observations(inventory, before)
        with self._lock:
            for entry in inventory.of(Standing.UNMANAGED):
                self._unmanaged[entry.key] = entry.admin
            for seen in observations:
                if seen.kind is Kind.UNMANAGED_TECHNICAL_USER and not seen.active:
                    self._unmanaged.pop(str(seen.token), None)
        self._apply(observations, now)

    def record_exchange(self, name: str, result: str, seconds: float) -> None:
        """After one request to the IdP (the Rotator's `on_exchange` hook)."""
        if self.metrics is not None:
            self.metrics.exchanges.labels(name, result).inc()
            self.metrics.exchange_duration.observe(seconds)

    def check_token(self, name: str, metadata: OutputMetadata | None) -> None:
        """On each check: the output's metadata as Vault holds it now."""
        now = self._clock()
        with self._lock:
            known = self._known.setdefault(name, _Known())
            if metadata is not None and metadata.expires_at is not None:
                known.expires_at = metadata.expires_at
        if self.metrics is not None:
            history = metadata.issuances(now) if metadata is not None else ()
            self.metrics.issuances.labels(name).set(policy.issuances_in_window(history, now))
        self._apply(self._expiry(name, now), now)

    def vault_health(self, up: bool, token_ttl: float | None) -> None:
        now = self._clock()
        self._vault_failures = 0 if up else self._vault_failures + 1
        if self.metrics is not None:
            self.metrics.vault_up.set(1 if up else 0)
            if token_ttl is not None:
                self.metrics.vault_token_ttl.set(token_ttl)
        seen = Observation(
            Kind.VAULT_UNAVAILABLE,
            None,
            self._vault_failures >= VAULT_DOWN_AFTER,
            Severity.CRITICAL,
            "Vault is sealed, down, or refuses rotator's credentials",
        )
        self._apply([seen], now)

    def cycle_done(self, tokens: int) -> None:
        if self.metrics is not None:
            self.metrics.last_cycle.set(self._clock().timestamp())
            self.metrics.tokens.set(tokens)

    def token_removed(self, name: str) -> None:
        now = self._clock()
        with self._lock:
            self._known.pop(name, None)
        if self.metrics is not None:
            self.metrics.forget(name)
        self._publish(self.book.resolve_token(name, now))

    def repeat(self) -> None:
        """Re-notify alerts still firing whose repeat interval has passed, and re-post every
        firing alert to sinks that forget them otherwise (Alertmanager)."""
        self._publish(self.book.due_repeats(self._clock()))
        if self.notifier is not None:
            self.notifier.refresh(
                self.book.firing_events(), lambda event: self.book.is_firing(*event.key)
            )

    def reconfigure(self, config: Config) -> None:
        """Carry on with a reloaded config: its refresh fraction, repeat interval and cap."""
        self.config = config
        self.book.repeat_interval = timedelta(seconds=config.alerts.repeat_interval_seconds)
        if self.metrics is not None:
            self.metrics.max_issuances.set(config.alerts.max_issuances_per_hour)

    def replace_notifier(self, notifier: Notifier | None) -> None:
        """Deliver through `notifier` from now on; the old one delivers what it has queued."""
        old, self.notifier = self.notifier, notifier
        if old is not None:
            old.close()

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _expiry(self, name: str, now: datetime) -> list[Observation]:
        with self._lock:
            known = self._known.get(name) or _Known()
        return expiry_observations(
            name,
            known.expires_at,
            known.lifetime,
            self.config.exchange.refresh_fraction,
            known.api_token_expires_at,
            now,
        )

    def _apply(self, observations: list[Observation], now: datetime) -> None:
        self._publish(self.book.apply(observations, now))

    def _publish(self, events: list[AlertEvent]) -> None:
        if self.metrics is not None:
            counts: dict[str, int] = dict.fromkeys((kind.value for kind in Kind), 0)
            for kind, _token in self.book.firing():
                counts[kind.value] += 1
            for kind_name, count in counts.items():
                self.metrics.alerts_firing.labels(kind_name).set(count)
        if events and self.notifier is not None:
            self.notifier.publish(events)
        elif events:
            for event in events:
                logger.warning("alert %s %s %s", event.status, event.kind.value, event.token or "")
