"""The long-lived API token's lifecycle (SPEC, "API-token lifecycle"): when to replace it at MTM,
how a replacement interrupted at any step rolls forward, when to promote `api_token_next`. Pure.

A replacement is written down before it happens, in the source secret's custom_metadata:

    replacing_since    when the replacement started (before `PUT .../replaceToken`)
    replacing_from     the fingerprint of the API token it replaces
    replace_attempts   attempts since the last completed replacement
    replaced_at        when the last replacement completed (the new token stored)
    replace_attempted  when the last replacement started, kept once the record is cleared

and every step is idempotent, so whoever finds the record rolls it forward (`plan_api_token`):

    a new token held in memory, not yet stored          -> store it (step 3, retried until stored)
    record, the source holds another token than the
      one replaced, and the output an access token of it -> clear the record (step 5)
    record, the source still holds the token replaced:
        the API token still works (checked since)        -> the replacement never happened: clear
        the API token is rejected                        -> its new token was lost: replace again
        not known                                        -> prove the API token now (exchange)
    API token rejected, api_token_next works             -> promote next
    due (requested, every N days, N days before expiry)  -> replace, unless one started < 1 h ago

The hour: a replacement never starts within an hour of the previous one's start (whether it
completed, failed, or never reached MTM: `replace_attempted` keeps the time). The one
exception is a replacement whose new token provably died on the way (the record is there, the
source still holds the old token, and that one is rejected): that token is useless anyway and
waiting would only keep the integration down, so it is replaced again after `RECOVERY_DELAYS`
(0 s, then growing to the hour), which still rules out a loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.redact import fingerprint
from rotator.sources import Source
from rotator.tokens import format_time, parse_time

REPLACEMENT_INTERVAL = timedelta(hours=1)
# After a replacement whose token was lost: how long since its start before the next attempt,
# by the number of attempts made so far (the last entry repeats).
RECOVERY_DELAYS = (timedelta(0), timedelta(minutes=5), timedelta(minutes=20), REPLACEMENT_INTERVAL)

INTENT_KEY = "replacing_since"
INTENT_FROM_KEY = "replacing_from"
ATTEMPTS_KEY = "replace_attempts"
REPLACED_KEY = "replaced_at"
ATTEMPTED_KEY = "replace_attempted"
RECORD_KEYS = (INTENT_KEY, INTENT_FROM_KEY, ATTEMPTS_KEY)


@dataclass(frozen=True)
class LifecycleRules:
    """`[api_tokens]` of the config."""

    replace_every: timedelta | None  # None: only before expiry or on demand
    replace_before_expiry: timedelta | None  # None: never because of expiry


@dataclass(frozen=True)
class Intent:
    """A replacement written down in the source's custom_metadata."""

    since: datetime
    replaces: str  # the fingerprint of the API token being replaced
    attempts: int  # attempts since the last completed replacement, >= 1


def read_intent(metadata: Mapping[str, str]) -> Intent | None:
    """The replacement recorded in a source's custom_metadata; None when there is none. A
    record rotator cannot read counts as none: it was not written by rotator."""
    try:
        since = parse_time(metadata[INTENT_KEY])
        replaces = metadata[INTENT_FROM_KEY]
        attempts = int(metadata.get(ATTEMPTS_KEY, "1"))
    except (KeyError, ValueError):
        return None
    if not replaces or attempts < 1:
        return None
    return Intent(since, replaces, attempts)


def replaced_at(metadata: Mapping[str, str]) -> datetime | None:
    """When rotator last completed a replacement of this source's API token, if it did."""
    return _time(metadata, REPLACED_KEY)


def last_attempt(metadata: Mapping[str, str]) -> datetime | None:
    """When the last replacement of this source's API token started, whatever became of it."""
    intent = read_intent(metadata)
    moments = (_time(metadata, REPLACED_KEY), _time(metadata, ATTEMPTED_KEY))
    candidates = [t for t in (*moments, intent.since if intent else None) if t is not None]
    return max(candidates, default=None)


def _time(metadata: Mapping[str, str], key: str) -> datetime | None:
    try:
        return parse_time(metadata[key])
    except (KeyError, ValueError):
        return None


def intent_metadata(metadata: Mapping[str, str], now: datetime, api_token: str) -> dict[str, str]:
    """`metadata` with a replacement of `api_token` recorded as starting now (step 1)."""
    previous = read_intent(metadata)
    attempts = previous.attempts + 1 if previous is not None else 1
    return {
        **metadata,
        INTENT_KEY: format_time(now),
        INTENT_FROM_KEY: fingerprint(api_token),
        ATTEMPTS_KEY: str(attempts),
    }


def stored_metadata(metadata: Mapping[str, str], now: datetime) -> dict[str, str]:
    """`metadata` once the new token is stored (step 3): completed now, the record kept until
    the new token is proven (step 5)."""
    return {**metadata, REPLACED_KEY: format_time(now)}


def cleared_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """`metadata` without the replacement record (step 5, or a replacement that never happened);
    when it started stays, for the hour."""
    kept = {key: value for key, value in metadata.items() if key not in RECORD_KEYS}
    intent = read_intent(metadata)
    if intent is not None:
        kept[ATTEMPTED_KEY] = format_time(intent.since)
    return kept


class Verdict(StrEnum):
    """What is known of an API token: the result of its last exchange."""

    UNKNOWN = "unknown"
    WORKS = "works"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Proof:
    """The last exchange of one API token: its verdict and when."""

    verdict: Verdict
    at: datetime | None = None

    def since(self, moment: datetime) -> Verdict:
        """The verdict if it was reached after `moment`, else UNKNOWN."""
        if self.at is None or self.at <= moment:
            return Verdict.UNKNOWN
        return self.verdict


UNPROVEN = Proof(Verdict.UNKNOWN)


@dataclass(frozen=True)
class ApiTokenFacts:
    """Everything the lifecycle plan needs about one token at one moment."""

    name: str
    now: datetime
    source: Source
    metadata: Mapping[str, str]  # the source secret's custom_metadata
    created: datetime | None = None  # when the current source version was written
    api_token: Proof = UNPROVEN  # what the last exchange of the source's api_token said
    next_token: Proof = UNPROVEN  # and of its api_token_next, when there is one
    output_source_version: int | None = None  # the source version the output was exchanged from
    requested: bool = False  # `rotator replace-api-token`
    holding: bool = False  # a new API token is held in memory, not yet stored

    @property
    def managed(self) -> bool:
        """True when rotator may replace this API token at MTM."""
        return self.source.technical_user_id is not None and self.source.mtm_base is not None


class Step(StrEnum):
    NONE = "none"  # nothing to do before `at` (None: nothing planned)
    STORE_HELD = "store_held"  # store the new API token held in memory (step 3 again)
    CLEAR = "clear"  # remove the replacement record (done, or it never happened)
    PROVE = "prove"  # exchange the API token now, to learn whether a replacement took effect
    PROMOTE = "promote"  # write api_token_next as the api_token
    REPLACE = "replace"  # steps 1-3: record, PUT replaceToken, store the new token
    WAIT = "wait"  # a replacement is wanted, but not before `at` (the hour)
    REFUSED = "refused"  # a replacement was requested but cannot be done for this source


class Why(StrEnum):
    """Why the plan says what it says."""

    HELD = "held"  # a replaced token is held in memory, not yet stored
    DONE = "done"  # the recorded replacement is complete
    PENDING = "pending"  # the new token is stored; its first exchange is due
    NEVER_HAPPENED = "never_happened"  # the old token still works after the record
    LOST = "lost"  # the old token is rejected and its replacement never stored
    UNPROVEN = "unproven"  # a record, and nothing known of the token since
    PROMOTE = "promote"  # api_token rejected, api_token_next works
    REQUESTED = "requested"
    EVERY = "every"  # replace_every_days
    EXPIRY = "expiry"  # replace_before_expiry_days
    HOUR = "hour"  # the last replacement started less than an hour ago
    NOT_MANAGED = "not_managed"  # no technical_user_id, or a token URL that is not LeanIX MTM
    NOTHING = "nothing"


# What each reason means, for reports and `rotator plan`.
WHY_TEXT = {
    Why.HELD: "a new API token is held in memory",
    Why.DONE: "the last replacement is complete",
    Why.PENDING: "the new API token is stored; its first exchange is due",
    Why.NEVER_HAPPENED: "the recorded replacement never happened",
    Why.LOST: "a replacement was interrupted and its new token lost",
    Why.UNPROVEN: "a replacement was interrupted; is the old token still valid?",
    Why.PROMOTE: "api_token is rejected and api_token_next works",
    Why.REQUESTED: "requested",
    Why.EVERY: "api_tokens.replace_every_days",
    Why.EXPIRY: "api_tokens.replace_before_expiry_days",
    Why.HOUR: "at most one replacement per hour",
    Why.NOT_MANAGED: "not a LeanIX technical user's token",
    Why.NOTHING: "nothing scheduled",
}


@dataclass(frozen=True)
class LifecyclePlan:
    step: Step
    why: Why
    at: datetime | None = None  # NONE/WAIT: when something is planned next


def plan_api_token(facts: ApiTokenFacts, rules: LifecycleRules) -> LifecyclePlan:
    """The next step of an API token's lifecycle (see the module docstring for the order)."""
    now, source = facts.now, facts.source
    if facts.holding:
        return LifecyclePlan(Step.STORE_HELD, Why.HELD)
    intent = read_intent(facts.metadata)
    if intent is not None:
        if fingerprint(source.api_token) != intent.replaces:  # the new token is stored
            proven = facts.api_token.since(intent.since) is Verdict.WORKS
            if proven and facts.output_source_version == source.version:
                return LifecyclePlan(Step.CLEAR, Why.DONE)
            # Stored: the rotation exchanges the new version as soon as it may (its own timing).
            return LifecyclePlan(Step.NONE, Why.PENDING)
        verdict = facts.api_token.since(intent.since)
        if verdict is Verdict.WORKS:
            return LifecyclePlan(Step.CLEAR, Why.NEVER_HAPPENED)
        if verdict is Verdict.UNKNOWN:
            return LifecyclePlan(Step.PROVE, Why.UNPROVEN)
        if facts.managed:
            delay = RECOVERY_DELAYS[min(intent.attempts, len(RECOVERY_DELAYS)) - 1]
            allowed = intent.since + delay
            if allowed > now:
                return LifecyclePlan(Step.WAIT, Why.LOST, allowed)
            return LifecyclePlan(Step.REPLACE, Why.LOST)

    if (
        source.api_token_next is not None
        and facts.api_token.verdict is Verdict.REJECTED
        and facts.next_token.verdict is Verdict.WORKS
    ):
        return LifecyclePlan(Step.PROMOTE, Why.PROMOTE)

    if not facts.managed:
        if facts.requested:
            return LifecyclePlan(Step.REFUSED, Why.NOT_MANAGED)
        return LifecyclePlan(Step.NONE, Why.NOT_MANAGED)

    due, why = _due(facts, rules)
    if facts.requested:
        due, why = now, Why.REQUESTED
    if due is None:
        return LifecyclePlan(Step.NONE, Why.NOTHING)
    last = last_attempt(facts.metadata)
    if last is not None and last + REPLACEMENT_INTERVAL > max(now, due):
        return LifecyclePlan(Step.WAIT, Why.HOUR, last + REPLACEMENT_INTERVAL)
    if due > now:
        return LifecyclePlan(Step.NONE, why, due)
    return LifecyclePlan(Step.REPLACE, why)


def _due(facts: ApiTokenFacts, rules: LifecycleRules) -> tuple[datetime | None, Why]:
    """When the API token is next due for replacement by the schedule, and why."""
    candidates: list[tuple[datetime, Why]] = []
    if rules.replace_every is not None:
        baseline = replaced_at(facts.metadata) or facts.created
        if baseline is not None:
            candidates.append((baseline + rules.replace_every, Why.EVERY))
    expires_at = facts.source.api_token_expires_at
    if rules.replace_before_expiry is not None and expires_at is not None:
        candidates.append((expires_at - rules.replace_before_expiry, Why.EXPIRY))
    if not candidates:
        return None, Why.NOTHING
    return min(candidates)
