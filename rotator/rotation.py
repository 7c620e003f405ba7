"""Rotating tokens: the executor of `plan.plan_token`. One token at a time or a whole cycle;
used alike by the daemon's per-token jobs and by `check`, `rotate` and `status`.

A pass over a token reads its source and output, asks the plan what to do, does it (read the
issuance history, claim, read again, exchange, write), and asks again with what it observed,
until the plan says report. Every decision lives in `plan.py`; this module only performs the
steps and turns the final plan into an `Outcome`.

Bulkheads: every failure of one token is caught in `rotate_one` and becomes that token's
`Outcome`; a cycle always reports every token. A good access token is never overwritten by a bad
one: a new token is written only after `tokens.parse_token_response` accepted it, and with
check-and-set against the version that was read.

Issuing as little as possible (LeanIX asks clients not to request tokens while one is valid):
a held token is written back rather than exchanged anew, and at most `max_issuances_per_hour`
issuances per token happen in any hour, counted from the issuance log in the output's
custom_metadata (`records.py`), so restarts and other instances count too.
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
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rotator import policy, records
from rotator.config import Config
from rotator.errors import (
    ApiTokenRejected,
    IdPUnavailable,
    RateLimited,
    RotatorError,
    SourceError,
    VaultAuthError,
    VaultConflict,
    VaultError,
)
from rotator.exchange import TokenExchanger
from rotator.lifecycle import Proof, Verdict
from rotator.memory import TokenMemory
from rotator.outcome import Failure, FailureKind, Outcome, Planned, Reason, State
from rotator.peers import Team, key_safe, live_peers
from rotator.plan import (
    OutputView,
    Plan,
    Rules,
    Step,
    TokenFacts,
    next_look,
    plan_after_conflict,
    plan_status,
    plan_token,
)
from rotator.records import Claim
from rotator.redact import SECRETS
from rotator.sources import Source, check_name, is_valid_name, parse_source
from rotator.tokens import AccessToken, Principal
from rotator.vault import VaultStore

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


# Threads per exchange slot: while `max_workers` tokens are at the IdP, as many more read and
# write Vault, so the exchanges never wait for Vault round trips and the slots stay busy.
THREADS_PER_SLOT = 2


def worker_threads(config: Config) -> int:
    """How many tokens are worked on at once (`max_workers` of them at the IdP)."""
    return THREADS_PER_SLOT * config.exchange.max_workers


def new_instance_id() -> str:
    """Names this process in per-token claims; unique per process, stable for its life."""
    return f"{key_safe(socket.gethostname())}.{os.getpid()}.{secrets.token_hex(4)}"


class Rotator:
    """Rotates the tokens under one Vault source prefix. Thread-safe per token name."""

    def __init__(
        self,
        config: Config,
        store: VaultStore,
        exchanger: TokenExchanger,
        memory: TokenMemory | None = None,
        clock: Callable[[], datetime] = _now,
        jitter: Callable[[], float] = random.random,
        on_exchange: Callable[[str, str, float], None] | None = None,
        instance_id: str | None = None,
        exchange_slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        """`memory` and `exchange_slots` are handed over from the rotator this one replaces (a
        reload). `on_exchange(name, result, seconds)` is called after every request to the
        IdP; `result` is "success" or a `FailureKind`. `exchange_slots` bounds exchanges in
        flight to `max_workers`, however many threads work on tokens (`worker_threads`)."""
        self.config = config
        self.rules = Rules.from_config(config)
        self.store = store
        self.exchanger = exchanger
        self.memory = memory if memory is not None else TokenMemory()
        self.on_exchange = on_exchange
        self.instance_id = instance_id or new_instance_id()
        self.team = Team(self.instance_id)  # until the registry says more: claim everything
        self.exchange_slots = exchange_slots or threading.BoundedSemaphore(
            config.exchange.max_workers
        )
        # A slot is waited for at most this long, so that a claimed exchange still ends within
        # the claim's lease: the wait, then the exchange's own deadline (2 x timeout).
        self._slot_wait = (
            self.rules.claim_lease.total_seconds() - 2 * (config.exchange.timeout_seconds) - 5
        )
        self._clock = clock
        self._jitter = jitter

    # --- one token ----------------------------------------------------------------------------

    def rotate_one(self, name: str, *, force: bool = False) -> Outcome:
        """Refresh `name` if it is due (always, with `force`); never raises for token problems.

        Vault being unavailable is reported as a failing outcome too; the caller decides whether
        that is worth more than a log line.
        """
        with self.memory.lock(name):
            try:
                try:
                    return self._rotate(name, force, again=False)
                except _StaleSource:
                    logger.info("token %s: the source changed since it was listed; again", name)
                    return self._rotate(name, force, again=True)
            except VaultError as exc:
                logger.warning("token %s: %s", name, exc)
                self.memory.forget_listings(name)
                reason = Reason.VAULT_AUTH if isinstance(exc, VaultAuthError) else Reason.VAULT
                return self._failed(name, exc.kind, reason, str(exc))
            except Exception as exc:  # the bulkhead: one token's bug stops no other
                logger.exception("token %s: unexpected error", name)
                detail = f"unexpected {type(exc).__name__}; see the log"
                return self._failed(name, FailureKind.TRANSIENT, Reason.BUG, detail)

    def _rotate(self, name: str, force: bool, again: bool) -> Outcome:
        facts = self._observe(name, force, again)
        claim: Claim | None = None
        outcome: Outcome | None = None
        try:
            while outcome is None:
                plan = plan_token(facts, self.rules)
                if plan.step is Step.READ_HISTORY:
                    facts = replace(facts, history=self.store.output_issuances(name, facts.now))
                elif plan.step is Step.CLAIM:
                    claim = self._claim(name, facts.now)
                    if claim is None:
                        logger.info("token %s: another rotator is refreshing it", name)
                    facts = replace(facts, claim=claim, claimed_elsewhere=claim is None)
                elif plan.step is Step.REREAD:
                    facts = replace(facts, latest=self.read_output(name))
                elif plan.step is Step.WRITE_HELD:
                    assert plan.token is not None  # a held token is what the plan writes
                    logger.info(
                        "token %s: writing back held access token %s", name, plan.token.fingerprint
                    )
                    outcome = self._write(facts, plan, plan.token)
                elif plan.step is Step.EXCHANGE:
                    outcome = self._exchange(facts, plan)
                else:
                    outcome = self._report(facts, plan)
        finally:
            if claim is not None:
                left = outcome.version if outcome and outcome.version is not None else None
                self._release(name, claim, left or facts.written_over.version)
        return outcome

    def _observe(self, name: str, force: bool, again: bool) -> TokenFacts:
        """The source and the output secret, and what memory holds of the token. What the last
        listing (`memory.Listing`) says has not moved since this process saw it is not read
        again. `again`: the pass starts over because the source moved (`_StaleSource`); the
        source memory holds now was just read."""
        now = self._clock()
        try:
            check_name(name)  # `..` would address another secret once the path is normalised
        except SourceError as exc:
            return TokenFacts(name, now, exc)
        secret = self.memory.current_source(name)
        cached = secret is not None and not again
        if secret is None:
            secret = self.store.read_source(name)
            if secret is None:
                return TokenFacts(name, now, None)
            self._note_source(name, secret)
        known, current = self.memory.current_output(name)
        output = self.view(name, current) if known else self.read_output(name)
        team = self.team
        return TokenFacts(
            name,
            now,
            self.parse(name, secret),
            output,
            source_version=secret.version,
            held=self.memory.held(name, now),
            failure=self.memory.failure(name),
            force=force,
            history=output.issuances(now),
            own_issuances=self.memory.issuances(name),
            claims=team.claims,
            defer=team.deference_for(name),
            wait_until=team.wait_until,
            source_cached=cached,
        )

    def read_output(self, name: str) -> OutputView:
        """Read `name`'s output secret (and remember it), and say what it means."""
        secret = self.store.read_output(name)
        self.memory.note_output(name, secret)
        view = self.view(name, secret)
        if view.foreign:
            logger.warning("token %s: the output secret was changed by someone else", name)
        elif view.token is not None:
            SECRETS.register_until(view.token.access_token, view.token.expires_at)
        if not view.readable:
            logger.warning(
                "token %s: output secret is malformed (%s); it will be replaced", name, view.problem
            )
        return view

    def view(self, name: str, secret: records.SecretVersion | None) -> OutputView:
        """`secret` (`name`'s output) as `OutputView.of` reads it, with the MAC key of the
        source version it names: from memory, else read from that version of the source."""
        if secret is None or records.MAC_FIELD not in secret.data:
            return OutputView.of(secret)
        source_version = secret.source_version
        key = None
        if source_version is not None:
            key = self.memory.key(name, source_version)
            if key is None:
                older = self.store.read_source_version(name, source_version)
                if older is not None:
                    self.memory.note_key(name, older)
                    key = self.memory.key(name, source_version)
        return OutputView.of(secret, key)

    def _exchange(self, facts: TokenFacts, plan: Plan) -> Outcome:
        """Exchange the API token (under this instance's claim) and write the result."""
        assert isinstance(facts.source, Source)  # the plan exchanges only a parsed source
        source, name = facts.source, facts.name
        started = time.monotonic()
        try:
            token = self._exchange_in_a_slot(source)
        except RotatorError as exc:
            self._exchanged(name, exc.kind, started)
            if isinstance(exc, ApiTokenRejected):
                if facts.source_cached and self._source_moved(name, source.version):
                    raise _StaleSource from None
                self._prove(name, source.api_token, Verdict.REJECTED)
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            failure = self._record(name, exc.kind, retry_after, source.version)
            logger.warning(
                "token %s: exchange failed (%s), attempt %d, next try at %s",
                name,
                exc,
                failure.count,
                failure.retry_at.isoformat(timespec="seconds"),
            )
            return self._outcome(
                facts,
                Outcome(
                    name,
                    State.FAILING,
                    facts.output.trusted,
                    failure.retry_at,
                    plan.reason,
                    str(exc),
                    exc.kind,
                    failures=failure.count,
                ),
            )
        self._exchanged(name, "success", started)
        self._prove(name, source.api_token, Verdict.WORKS)
        SECRETS.register_until(token.access_token, token.expires_at)
        self.memory.issued(name, token.issued_at)
        self.memory.hold(name, token)
        outcome = self._write(facts, plan, token)
        if outcome.state is State.REFRESHED and plan.issuances is not None:
            outcome = replace(outcome, issuances_last_hour=plan.issuances + 1)  # this one too
        return outcome

    def _exchange_in_a_slot(self, source: Source) -> AccessToken:
        """The exchange, in one of the `max_workers` slots."""
        if not self.exchange_slots.acquire(timeout=self._slot_wait):
            raise IdPUnavailable(
                f"no exchange slot for {source.name!r} within {self._slot_wait:g} s: "
                "every one is held by a slow exchange"
            )
        try:
            return self.exchanger.exchange(source)
        finally:
            self.exchange_slots.release()

    def _source_moved(self, name: str, listed_version: int) -> bool:
        """Whether the source has a newer version than the one listed (and so exchanged); the
        newer one is remembered for the pass that starts over."""
        latest = self.store.read_source(name)
        if latest is None or latest.version == listed_version:
            return False
        self._note_source(name, latest)
        return True

    def _note_source(self, name: str, secret: records.SecretVersion) -> None:
        """Remember a source just read; its API tokens become secrets the logs never show."""
        self.memory.note_source(name, secret)
        for key in ("api_token", "api_token_next"):
            raw = secret.data.get(key)
            SECRETS.register(raw, raw.strip() if isinstance(raw, str) else None)

    def _write(self, facts: TokenFacts, plan: Plan, token: AccessToken) -> Outcome:
        """Store `token` over the output as last read, by the write protocol of `records.py`:
        data with check-and-set, then the metadata record."""
        name = facts.name
        assert isinstance(facts.source, Source)  # the plan writes only for a parsed source
        try:
            written = write_output(
                self.store,
                name,
                token,
                facts.written_over.secret,
                records.output_key(facts.source.api_token),
                self._keep_versions(),
            )
        except VaultConflict:
            latest = self.read_output(name)
            if latest.trusted is not None:
                logger.info("token %s: another rotator stored a token first", name)
            return self._report(facts, plan_after_conflict(facts, latest, plan.reason, self.rules))
        except VaultError as exc:
            self.memory.forget_listings(name)
            failure = self._record(name, FailureKind.VAULT_WRITE)
            logger.error("token %s: obtained a token but could not store it: %s", name, exc)
            return self._outcome(
                facts,
                Outcome(
                    name,
                    State.FAILING,
                    facts.output.trusted,
                    failure.retry_at,
                    plan.reason,
                    str(exc),
                    FailureKind.VAULT_WRITE,
                    failures=failure.count,
                ),
            )
        self.memory.note_output(name, written)
        version = written.version
        self.memory.clear_failure(name)
        # Stay held after the write: if someone overwrites or deletes the output while the token
        # is fresh, it is written back instead of exchanged anew.
        self.memory.hold(name, token)
        logger.info(
            "token %s: stored access token %s (%s), valid until %s, version %d",
            name,
            token.fingerprint,
            plan.reason,
            token.expires_at.isoformat(timespec="seconds"),
            version,
        )
        return self._outcome(
            facts,
            Outcome(
                name,
                State.REFRESHED,
                token,
                next_look(replace(facts, now=self._clock()), token, self.rules),
                plan.reason,
                principal_change=_principal_change(facts.output.trusted, token),
                version=version,
            ),
        )

    def _report(self, facts: TokenFacts, plan: Plan) -> Outcome:
        """The outcome of a pass the plan ended with a report."""
        assert plan.state is not None
        name = facts.name
        if plan.state is State.GONE:
            self.memory.forget(name)
        failure = facts.failure if plan.reason is Reason.BACKOFF else None
        if plan.record is not None:
            failure = self._record(name, plan.record, source_version=facts.source_version)
            if plan.record is FailureKind.INVALID_SOURCE:
                logger.error("%s", plan.detail)
        if plan.state is State.CAPPED:
            logger.warning(
                "token %s: %d issuances in the last hour; next allowed at %s",
                name,
                self.rules.max_issuances_per_hour,
                plan.at.isoformat(timespec="seconds") if plan.at else "-",
            )
        elif plan.step is Step.REPORT and plan.state is State.FRESH:
            logger.debug("token %s: %s; next look at %s", name, plan.reason, plan.at)
        at = plan.at or (failure.retry_at if failure is not None else facts.now)
        capped = plan.state is State.CAPPED
        return self._outcome(
            facts,
            Outcome(
                name,
                plan.state,
                plan.token,
                at,
                plan.reason,
                plan.detail,
                failure.kind if failure is not None else None,
                failures=failure.count if failure is not None else 0,
                capped_until=plan.at if capped else None,
                version=plan.version,
                issuances_last_hour=plan.issuances if capped else None,
            ),
        )

    def _outcome(self, facts: TokenFacts, outcome: Outcome) -> Outcome:
        """`outcome` with what every outcome of a pass over `facts`' token carries."""
        return replace(
            outcome,
            foreign_write=facts.output.foreign,
            api_token_expires_at=facts.api_token_expires_at,
        )

    def _failed(self, name: str, kind: FailureKind, reason: Reason, detail: str) -> Outcome:
        """A pass that ended in an error before it knew anything worth reporting."""
        failure = self._record(name, kind)
        return Outcome(
            name,
            State.FAILING,
            None,
            failure.retry_at,
            reason,
            detail,
            kind,
            failures=failure.count,
        )

    # --- claims between instances ---------------------------------------------------------------

    def _claim(self, name: str, now: datetime) -> Claim | None:
        return take_claim(self.store, name, self.instance_id, now, self.rules.claim_lease)

    def _release(self, name: str, claim: Claim, output_version: int) -> None:
        release_claim(self.store, name, self.instance_id, claim, output_version)

    def join_once(self) -> None:
        """Set `team` from the registry as it is now, for a command that runs once (`rotate`,
        `check`): it claims if any daemon is live. Unreadable registry: claim everything."""
        try:
            found = live_peers(self.store.list_instances(), self.instance_id, self._clock())
        except VaultError as exc:
            logger.info("instance registry: %s; claiming every refresh", exc)
            self.team = Team(self.instance_id)
            return
        self.team = Team(self.instance_id, others=tuple(peer.instance for peer in found))

    # --- many tokens --------------------------------------------------------------------------

    def discover(self) -> list[str]:
        """Every source secret's name under the prefix. Raises VaultError."""
        return self.store.list_sources()

    def run_cycle(
        self, names: Iterable[str] | None = None, *, force: bool = False
    ) -> list[Outcome]:
        """Rotate `names` (default: everything discovered), `worker_threads` at once, at most
        `max_workers` of them at the IdP. Returns one outcome per token, in name order. Raises
        VaultError only from discovery."""
        todo = sorted(set(self.discover() if names is None else names))
        workers = max(1, min(worker_threads(self.config), len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
            return list(pool.map(lambda n: self.rotate_one(n, force=force), todo))

    def inspect(self, name: str) -> Outcome:
        """A read-only look at one token (`plan.plan_status`): no exchange, no write. Raises
        VaultError (the report cannot be made); any other failure is that token's outcome."""
        try:
            return self._inspect(name)
        except VaultError:
            raise
        except Exception as exc:  # the bulkhead: one token's bad data stops no other's row
            logger.exception("token %s: unexpected error", name)
            detail = f"unexpected {type(exc).__name__}; see the log"
            return Outcome(name, State.FAILING, None, self._clock(), Reason.BUG, detail)

    def _inspect(self, name: str) -> Outcome:
        now = self._clock()
        if not is_valid_name(name):
            return self._refused_name(name, now)
        secret = self.store.read_source(name)
        facts = TokenFacts(name, now, None)
        if secret is not None:
            self.memory.note_key(name, secret)
            output = self.view(name, self.store.read_output(name))
            facts = TokenFacts(
                name, now, self.parse(name, secret), output, source_version=secret.version
            )
        plan = plan_status(facts, self.rules)
        assert plan.state is not None and plan.at is not None
        return Outcome(
            name,
            plan.state,
            plan.token,
            plan.at,
            plan.reason,
            plan.detail,
            FailureKind.INVALID_SOURCE if plan.state is State.INVALID_SOURCE else None,
            foreign_write=plan.reason is Reason.FOREIGN_WRITE,
            api_token_expires_at=facts.api_token_expires_at,
        )

    def planned(self, name: str) -> Planned:
        """What the next pass over `name` will do with its access token, and when, from what
        Vault holds (read-only, for `rotator plan`). A backoff after failed attempts lives in
        the daemon's memory and is not seen here."""
        now = self._clock()
        if not is_valid_name(name):
            return Planned(name, "fix the source secret", None, "not a usable token name")
        secret = self.store.read_source(name)
        facts = TokenFacts(name, now, None)
        if secret is not None:
            self.memory.note_key(name, secret)
            output = self.view(name, self.store.read_output(name))
            facts = TokenFacts(
                name,
                now,
                self.parse(name, secret),
                output,
                source_version=secret.version,
                history=output.issuances(now),
            )
        plan = plan_token(facts, self.rules)
        if plan.step is Step.READ_HISTORY:
            facts = replace(facts, history=self.store.output_issuances(name, facts.now))
            plan = plan_token(facts, self.rules)
        if plan.state is State.GONE:
            return Planned(name, "nothing", None, "the source secret is gone")
        if plan.state is State.INVALID_SOURCE:
            return Planned(name, "fix the source secret", None, plan.detail or "")
        if plan.state is State.CAPPED:
            why = f"{plan.issuances} issuances in the last hour (alerts.max_issuances_per_hour)"
            return Planned(name, "wait for the issuance cap", plan.at, why)
        if plan.step is Step.REPORT:
            return Planned(name, "refresh", plan.at, "the access token is fresh until then")
        return Planned(name, "refresh", now, f"now: {plan.reason}")

    def _refused_name(self, name: str, now: datetime) -> Outcome:
        try:
            check_name(name)
        except SourceError as exc:
            detail = str(exc)
        return Outcome(
            name,
            State.INVALID_SOURCE,
            None,
            now,
            Reason.INVALID_SOURCE,
            detail,
            FailureKind.INVALID_SOURCE,
        )

    def issuance_counts(self, outcomes: list[Outcome]) -> list[int | None]:
        """Issuances in the last hour per outcome, for the reports: the count the pass made on
        its way, else read from Vault (None when Vault does not answer)."""

        def count(outcome: Outcome) -> int | None:
            if outcome.issuances_last_hour is not None:
                return outcome.issuances_last_hour
            if not is_valid_name(outcome.name):
                return None
            try:
                return self.issuances_last_hour(outcome.name)
            except VaultError:
                return None

        if not outcomes:
            return []
        workers = max(1, min(self.config.exchange.max_workers, len(outcomes)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="count") as pool:
            return list(pool.map(count, outcomes))

    def issuances_last_hour(self, name: str) -> int:
        """Access tokens issued in the last hour (`VaultStore.output_issuances`)."""
        now = self._clock()
        return policy.issuances_in_window(self.store.output_issuances(name, now), now)

    def clear_transient_failures(self) -> list[str]:
        """Forget the backoff of every token failing because of an outage; returns their names."""
        return self.memory.clear_transient()

    def forget(self, name: str) -> None:
        """Drop in-memory state for a token whose source is gone."""
        self.memory.forget(name)

    # --- helpers ------------------------------------------------------------------------------

    def _record(
        self,
        name: str,
        kind: FailureKind,
        retry_after: float | None = None,
        source_version: int | None = None,
    ) -> Failure:
        return self.memory.record_failure(
            name,
            kind,
            self._clock(),
            self.config.exchange.max_backoff_seconds,
            self._jitter(),
            retry_after,
            source_version,
        )

    def _prove(self, name: str, api_token: str, verdict: Verdict) -> None:
        self.memory.prove(name, api_token, Proof(verdict, self._clock()))

    def _exchanged(self, name: str, result: str, started: float) -> None:
        if self.on_exchange is not None:
            self.on_exchange(name, result, time.monotonic() - started)

    def _keep_versions(self) -> int:
        # Enough history to count a full hour of issuances, plus a few for inspection.
        return max(10, self.config.alerts.max_issuances_per_hour + 2)

    def parse(self, name: str, secret: records.SecretVersion) -> Source | SourceError:
        """The source secret parsed (`sources.parse_source`), or what is wrong with it."""
        exchange = self.config.exchange
        try:
            return parse_source(
                name,
                secret.data,
                secret.version,
                exchange.allowed_hosts,
                exchange.insecure_http_hosts,
            )
        except SourceError as exc:
            return exc


# --- the protocols' steps: routes of vault.py, contents from records.py ---------------------------


def write_output(
    store: VaultStore,
    name: str,
    token: AccessToken,
    current: records.SecretVersion | None,
    key: bytes,
    keep_versions: int = 10,
) -> records.SecretVersion:
    """Store `token` as `name`'s output over `current` (None: there is none), by the write
    protocol of `records.py`: the data with its MAC (`key`: `records.output_key` of the API
    token of `token.source_version`) with check-and-set against `current`'s version, then the
    metadata record. Returns what is stored now; raises `VaultConflict` when someone else wrote
    first, `VaultError` otherwise."""
    fields = records.output_fields(token, key)
    version = store.write_output_data(
        name, fields, cas=current.version if current is not None else 0
    )
    metadata = records.record(
        current.custom_metadata if current is not None else {}, token, version, key
    )
    store.write_output_metadata(name, metadata, keep_versions)
    return records.SecretVersion(fields, version, metadata, token.issued_at)


def take_claim(
    store: VaultStore, name: str, owner: str, now: datetime, lease: timedelta
) -> Claim | None:
    """`owner`'s claim on `name` for `lease`, or None when another owner holds a live one or
    claimed first (check-and-set: of several owners claiming at once exactly one wins).

    Every claim reads the claim first, also an owner's own next one: skipping that read would let
    the last owner win every race and keep every token it ever took.
    """
    existing = store.read_claim(name)
    if records.is_claimed_by_another(existing, owner, now):
        return None
    version = store.write_claim(
        name,
        records.claim_record(owner, now + lease),
        cas=existing.version if existing is not None else 0,
    )
    return records.claim_taken(existing, version) if version is not None else None


def release_claim(
    store: VaultStore, name: str, owner: str, claim: Claim, output_version: int
) -> None:
    """End `claim` early, recording the output version as the owner leaves it; best effort (a
    claim lapses anyway). The check-and-set leaves a claim someone else took since untouched."""
    try:
        store.write_claim(name, records.release_record(owner, output_version), cas=claim.version)
    except VaultError as exc:
        logger.debug("releasing the claim on %s failed: %s", name, exc)


class _StaleSource(Exception):
    """Internal: the API token of a listed source was rejected, and the source has moved on
    since the listing; the pass starts again from fresh reads."""


def _principal_change(
    previous: AccessToken | None, token: AccessToken
) -> tuple[Principal, Principal] | None:
    """(before, after) when the new token speaks for another workspace or role."""
    if previous is None or not _principal_known(previous.principal):
        return None
    return (previous.principal, token.principal) if previous.principal != token.principal else None


def _principal_known(principal: Principal) -> bool:
    return principal.workspace_id is not None or principal.role is not None
