"""What to do next for one token, and what a check does with each output. Pure.

The executors (`rotation.Rotator`, `daemon.Daemon`) read Vault and memory, hand what they saw to
a function here, do what it answers, and feed what that step observed into the next call, until
the answer is a report. Nothing here reads a clock, Vault or the network, so every branch is a
unit test without a server (tests/unit/test_plan.py).

One pass over a token (`plan_token`), in the order the questions are asked:

    source deleted?            -> report gone
    source malformed?          -> report invalid_source (a failure to record)
    not due, or backing off?   -> report fresh / failing, look again when due
    a newcomer's wait?         -> report newcomer, look again when it ends
    a held token still fresh?  -> write it back (no new issuance)
    issuance count unknown?    -> read the output's version history
    cap reached?               -> report capped until the hour allows
    others live, not claimed?  -> claim it                 (claimed by another: report)
    claimed, output may have moved since read? -> read it again
    another instance stored a fresh one?       -> report refreshed_elsewhere
    otherwise                  -> exchange, then write (check-and-set)

Alone (no other live instance, `peers.py`), a pass never claims: check-and-set alone keeps
every write. Among others, a token another instance is preferred for is due a little later.

A write that loses its check-and-set asks `plan_after_conflict`; `rotator status` asks
`plan_status`; the daemon's periodic check asks `plan_check` for every output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from rotator import policy
from rotator.config import Config
from rotator.errors import SourceError
from rotator.outcome import Failure, FailureKind, Reason, State
from rotator.policy import Action, Decision
from rotator.records import Claim, SecretVersion, claim_lease
from rotator.sources import Source
from rotator.tokens import AccessToken, parse_output

GONE_RECHECK = timedelta(days=1)  # a deleted source's job: discovery drops it long before


@dataclass(frozen=True)
class Rules:
    """The parts of the config the plans need."""

    refresh_fraction: float
    max_issuances_per_hour: int
    claim_lease: timedelta

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        return cls(
            refresh_fraction=config.exchange.refresh_fraction,
            max_issuances_per_hour=config.alerts.max_issuances_per_hour,
            claim_lease=claim_lease(config.exchange.timeout_seconds),
        )


@dataclass(frozen=True)
class OutputView:
    """An output secret as read, and what it means."""

    secret: SecretVersion | None = None  # None: there is no output secret
    token: AccessToken | None = None  # its access token; None when absent, deleted or malformed
    problem: str | None = None  # why it is malformed
    owned: bool = True  # rotator wrote it (`SecretVersion.written_by_rotator`)

    @classmethod
    def of(cls, secret: SecretVersion | None, key: bytes | None = None) -> OutputView:
        """Read `secret`'s fields (`tokens.parse_output`) and whether rotator wrote it, by its
        MAC with `key` (that of the source version it names; None: unknown). A malformed one
        keeps its problem; a deleted one is as good as none, but for its version and
        metadata."""
        if secret is None:
            return cls()
        owned = secret.written_by_rotator(key)
        if secret.deleted:
            return cls(secret)
        try:
            return cls(secret, parse_output(secret.data), owned=owned)
        except ValueError as exc:
            return cls(secret, None, str(exc), owned)

    @property
    def version(self) -> int:
        """Its KV version; 0 when there is none (check-and-set creates at 0)."""
        return self.secret.version if self.secret is not None else 0

    @property
    def readable(self) -> bool:
        return self.problem is None

    @property
    def foreign(self) -> bool:
        """True when it holds something rotator did not write."""
        return self.secret is not None and not self.owned

    @property
    def trusted(self) -> AccessToken | None:
        """The token to schedule by: rotator's own, never a foreign one."""
        return None if self.foreign else self.token

    def issuances(self, now: datetime) -> tuple[datetime, ...] | None:
        """Issuance times from its issuance log as of `now`; None without one (then read the
        history). No output at all has none: nothing was ever issued to it (a deleted one
        keeps its log in the metadata read with it)."""
        return self.secret.issuances(now) if self.secret is not None else ()


@dataclass(frozen=True)
class TokenFacts:
    """Everything known about one token at one moment of a pass."""

    name: str
    now: datetime
    source: Source | SourceError | None  # None: the source secret is gone
    output: OutputView = OutputView()
    source_version: int | None = None  # the source secret's KV version, even when malformed
    held: AccessToken | None = None  # the last token obtained, kept in memory
    failure: Failure | None = None  # the record of the last failed attempts
    force: bool = False  # `rotator rotate`: exchange whether due or not
    history: tuple[datetime, ...] | None = None  # issuance times; None: not known yet
    own_issuances: tuple[datetime, ...] = ()  # those this process made, whatever Vault says
    claim: Claim | None = None  # this instance's claim, once taken
    claimed_elsewhere: bool = False  # another instance holds the claim
    latest: OutputView | None = None  # the output as read again under the claim
    claims: bool = True  # other instances may be live: claim before exchanging
    defer: timedelta = timedelta(0)  # another instance is preferred: refresh this much later
    wait_until: datetime | None = None  # a newcomer refreshes nothing before then
    source_cached: bool = False  # the source was not read: the last listing vouched for it

    @property
    def api_token_expires_at(self) -> datetime | None:
        """When the API token expires, as far as the (parsed) source says."""
        return self.source.api_token_expires_at if isinstance(self.source, Source) else None

    @property
    def written_over(self) -> OutputView:
        """The output a write replaces: the one read under the claim, else the first read."""
        return self.latest if self.latest is not None else self.output


class Step(StrEnum):
    """What the executor does next."""

    REPORT = "report"  # the pass is over: report `state`, look again at `at`
    READ_HISTORY = "read_history"  # the cap needs the issuance count: read the version history
    WRITE_HELD = "write_held"  # write the held token back instead of exchanging
    CLAIM = "claim"  # take this instance's claim on the token
    REREAD = "reread"  # under the claim, read the output again before exchanging
    EXCHANGE = "exchange"  # exchange the API token and write the new access token


@dataclass(frozen=True)
class Plan:
    step: Step
    reason: Reason  # why the token is refreshed, or why it waits
    state: State | None = None  # REPORT: the token's state
    at: datetime | None = None  # REPORT: when to look again; None: when the recorded failure says
    token: AccessToken | None = None  # REPORT: what consumers hold; WRITE_HELD: what to write
    record: FailureKind | None = None  # REPORT: record one more failed attempt of this kind first
    detail: str | None = None  # REPORT: what went wrong, for on-call (never a secret)
    issuances: int | None = None  # issuances in the last hour, once counted
    version: int | None = None  # REPORT: the output version seen


def _report(
    reason: Reason,
    state: State,
    *,
    at: datetime | None = None,
    token: AccessToken | None = None,
    record: FailureKind | None = None,
    detail: str | None = None,
    issuances: int | None = None,
    version: int | None = None,
) -> Plan:
    return Plan(Step.REPORT, reason, state, at, token, record, detail, issuances, version)


def plan_token(facts: TokenFacts, rules: Rules) -> Plan:
    """The next step of one pass over a token (see the module docstring for the order)."""
    now = facts.now
    if facts.source is None:
        return _report(Reason.SOURCE_DELETED, State.GONE, at=now + GONE_RECHECK)
    output = facts.output
    if isinstance(facts.source, SourceError):
        return _report(
            Reason.INVALID_SOURCE,
            State.INVALID_SOURCE,
            token=output.trusted,
            record=FailureKind.INVALID_SOURCE,
            detail=str(facts.source),
        )

    decision = _decide(facts, output.trusted, output.readable, rules)
    if decision.action is Action.WAIT and not facts.force:
        if decision.reason is Reason.BACKOFF and facts.failure is not None:
            detail = f"{facts.failure.count} failed attempts; next at {decision.at:%H:%M:%S}"
            return _report(
                Reason.BACKOFF, State.FAILING, at=decision.at, token=output.trusted, detail=detail
            )
        return _report(decision.reason, State.FRESH, at=decision.at, token=output.trusted)

    if facts.force:
        reason = Reason.FORCED
    elif output.foreign:
        reason = Reason.FOREIGN_WRITE
    else:
        reason = decision.reason
    waited = _newcomer_waits_until(facts, decision.reason, output.trusted, rules)
    if waited is not None:
        state = _healthy_if_valid(output, now)
        return _report(Reason.NEWCOMER, state, at=waited, token=output.trusted)
    held = facts.held
    if held is not None and not facts.force and _is_fresh(facts, held, rules):
        return Plan(Step.WRITE_HELD, reason, token=held)

    if facts.history is None:
        return Plan(Step.READ_HISTORY, reason)
    history = _cap_history(facts.history, facts.own_issuances, now)
    recent = policy.issuances_in_window(history, now)
    allowed_at = policy.issuance_allowed_at(history, now, rules.max_issuances_per_hour)
    if allowed_at is not None:
        return _report(
            reason,
            State.CAPPED,
            at=allowed_at,
            token=output.trusted,
            detail="issuance cap reached",
            issuances=recent,
        )

    if facts.claimed_elsewhere:
        return _report(
            Reason.CLAIMED_ELSEWHERE,
            _healthy_if_valid(output, now),
            at=now + rules.claim_lease,
            token=output.trusted,
        )
    if facts.claim is None and facts.claims:
        return Plan(Step.CLAIM, reason, issuances=recent)
    latest = facts.latest
    if latest is None:
        if facts.claim is not None and facts.claim.output_may_have_changed(output.version):
            return Plan(Step.REREAD, reason, issuances=recent)
    elif latest.version != output.version and latest.trusted is not None and not facts.force:
        # Another instance stored a token between our read and our claim.
        again = _decide(facts, latest.trusted, True, rules)
        if again.reason is Reason.FRESH:
            return _report(
                Reason.REFRESHED_ELSEWHERE,
                State.FRESH,
                at=again.at,
                token=latest.trusted,
                version=latest.version,
            )
    return Plan(Step.EXCHANGE, reason, issuances=recent)


def plan_after_conflict(
    facts: TokenFacts, latest: OutputView, reason: Reason, rules: Rules
) -> Plan:
    """A check-and-set write lost: someone wrote since the version read. Keep theirs when it is
    rotator's own (another instance) and valid; otherwise fail softly and look again soon."""
    token = latest.trusted
    if token is not None and token.expires_at > facts.now:
        return _report(
            Reason.CONFLICT,
            State.FRESH,
            at=_decide(facts, token, True, rules).at,
            token=token,
            version=latest.version,
        )
    return _report(
        reason,
        State.FAILING,
        record=FailureKind.TRANSIENT,
        detail="output changed during the write",
    )


def next_look(facts: TokenFacts, token: AccessToken, rules: Rules) -> datetime:
    """When to look again at a token that was just stored: its refresh time."""
    return _decide(replace(facts, failure=None), token, True, rules).at


def plan_status(facts: TokenFacts, rules: Rules) -> Plan:
    """A read-only look (`rotator status`): the state consumers see, without acting on it."""
    now = facts.now
    if facts.source is None:
        return _report(Reason.SOURCE_DELETED, State.GONE, at=now)
    output = facts.output
    if isinstance(facts.source, SourceError):
        return _report(
            Reason.INVALID_SOURCE,
            State.INVALID_SOURCE,
            at=now,
            token=output.token,
            detail=str(facts.source),
        )
    if output.foreign:
        return _report(
            Reason.FOREIGN_WRITE,
            State.FAILING,
            at=now,
            token=output.token,
            detail="the output secret was changed by someone else",
        )
    decision = _decide(facts, output.token, output.readable, rules)
    token = output.token
    state = State.FAILING if token is None or token.expires_at <= now else State.FRESH
    return _report(decision.reason, state, at=decision.at, token=token)


class Look(StrEnum):
    """What the daemon's periodic check does about one output."""

    KEEP = "keep"  # its job stands as scheduled (or is running)
    ADD_JOB = "add_job"  # it has no job (lost): schedule one now
    MOVED = "moved"  # another instance stored a new version: schedule by it, nothing to read
    CHANGED = "changed"  # the output's version moved under it: look now
    STALE = "stale"  # no output, or it has expired: look now


def plan_check(
    *,
    running: bool,
    has_job: bool,
    seen_version: int | None,
    version: int,
    expires_at: datetime | None,
    now: datetime,
    known_version: int | None = None,
    vouched: bool = False,
    source_moved: bool = False,
) -> Look:
    """One output on one check. `seen_version` is the version the previous check saw (None:
    this is the first), `version` the current one (0: none), `expires_at` what its metadata
    records; `known_version` the version this process last read or wrote itself, `vouched`
    whether the metadata vouches for the current version (`records.OutputMetadata.vouched`),
    `source_moved` whether the source has a newer version than the one last read (someone
    replaced the API token: prove the new one now)."""
    if running:
        return Look.KEEP  # its job re-adds itself when done
    if not has_job:
        # Normal for the instant between a job firing and its thread starting; anything longer
        # would be a lost job, and this puts it back.
        return Look.ADD_JOB
    if source_moved:
        return Look.CHANGED
    if seen_version is not None and seen_version != version:
        if version == known_version:
            return Look.KEEP  # this process's own write (or read): its job knows
        if vouched and expires_at is not None and expires_at > now:
            return Look.MOVED
        return Look.CHANGED
    if expires_at is None or expires_at <= now:
        return Look.STALE
    return Look.KEEP


def moved_look(
    name: str, issued_at: datetime, expires_at: datetime, defer: timedelta, rules: Rules
) -> datetime:
    """When to look at a token another instance just stored (Look.MOVED), from the times its
    metadata records: its refresh time, as `_decide` would plan it."""
    jitter = policy.phase(f"{name}@{issued_at.isoformat()}")
    wanted = policy.refresh_time(issued_at, expires_at, name, rules.refresh_fraction, jitter)
    return policy.deferred(wanted, expires_at, defer)


# --- plumbing -------------------------------------------------------------------------------------


def _decide(facts: TokenFacts, token: AccessToken | None, readable: bool, rules: Rules) -> Decision:
    """`policy.decide` for `token`. The jitter is drawn from the issuance, so every look at the
    same token (and every instance) agrees on its refresh time."""
    source_version = facts.source.version if isinstance(facts.source, Source) else None
    jitter = policy.phase(f"{facts.name}@{token.issued_at.isoformat()}") if token else 0.0
    return policy.decide(
        facts.now,
        facts.name,
        token,
        readable,
        source_version,
        facts.failure,
        rules.refresh_fraction,
        jitter,
        facts.defer,
    )


def _cap_history(
    logged: tuple[datetime, ...], own: tuple[datetime, ...], now: datetime
) -> tuple[datetime, ...]:
    """The issuances the cap counts: Vault's issuance log (every instance's issuances), unless
    this process alone made more in the last hour than it says (the log was forged or lost)."""
    mine = policy.issuances_in_window(own, now)
    return own if mine > policy.issuances_in_window(logged, now) else logged


def _newcomer_waits_until(
    facts: TokenFacts, reason: Reason, token: AccessToken | None, rules: Rules
) -> datetime | None:
    """Until when a newcomer holds a refresh back (`peers.Team.met`): its wait. A routine one
    never past a third of the time between the refresh time and the expiry (sooner than the
    others' deference, which may reach half of it: the token's preferred instance still goes
    first). Anything else (a missing, expired or broken output, a new API token) waits for it
    in full: the instance already running, which may not claim yet, acts on it meanwhile."""
    if facts.wait_until is None or facts.force or facts.now >= facts.wait_until:
        return None
    if reason is not Reason.DUE or token is None:
        return facts.wait_until
    due = _decide(replace(facts, now=token.issued_at, failure=None), token, True, rules).at
    until = min(facts.wait_until, due + (token.expires_at - due) / 3)
    return until if facts.now < until else None


def _healthy_if_valid(output: OutputView, now: datetime) -> State:
    """While another instance acts on a token: healthy only if consumers hold a valid one."""
    valid = output.trusted is not None and output.trusted.expires_at > now
    return State.FRESH if valid else State.FAILING


def _is_fresh(facts: TokenFacts, token: AccessToken, rules: Rules) -> bool:
    return _decide(facts, token, True, rules).reason is Reason.FRESH
