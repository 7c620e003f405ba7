"""The vocabulary every layer shares: what happened to a token, why, and how it failed. Pure.

`Outcome` is what one pass over one token came to; the daemon schedules by it, the monitor turns
it into alerts and metrics, and the reports print it. `State`, `Reason` and `FailureKind` are the
only words for those things: the README's lists are tested against these enums. `FailureKind`
lives with the error tree (every error class names its kind) and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rotator.errors import FailureKind
from rotator.lifecycle import Step, Verdict, Why
from rotator.tokens import AccessToken, Principal

__all__ = [
    "ApiTokenOutcome",
    "Check",
    "Failure",
    "FailureKind",
    "Outcome",
    "Planned",
    "Reason",
    "Replacement",
    "State",
]


class State(StrEnum):
    """Where a token stands after a pass."""

    FRESH = "fresh"  # valid, nothing to do
    REFRESHED = "refreshed"  # a new token was written
    FAILING = "failing"  # no valid token, or the last attempt failed
    CAPPED = "capped"  # the issuance cap is reached; no exchange until the hour allows
    INVALID_SOURCE = "invalid_source"  # the source secret is malformed
    GONE = "gone"  # no such source


class Reason(StrEnum):
    """Why a token was refreshed, or why it waits."""

    MISSING = "missing"  # no output secret yet
    UNREADABLE = "unreadable"  # the output secret is there but malformed
    SOURCE_CHANGED = "source_changed"  # the API token in Vault was replaced
    DUE = "due"  # refresh_fraction of the lifetime has passed
    EXPIRED = "expired"
    FRESH = "fresh"  # valid and not yet due
    FORCED = "forced"  # `rotator rotate`
    FOREIGN_WRITE = "foreign_write"  # the output holds a token rotator did not write
    BACKOFF = "backoff"  # the last attempt failed; waiting before the next
    CLAIMED_ELSEWHERE = "claimed_elsewhere"  # another instance is refreshing it right now
    NEWCOMER = "newcomer"  # just started beside other instances: waiting one lease (peers.py)
    REFRESHED_ELSEWHERE = "refreshed_elsewhere"  # another instance stored a fresh one meanwhile
    CONFLICT = "conflict"  # a check-and-set write lost to another instance's fresh token
    INVALID_SOURCE = "invalid_source"  # the source secret is malformed
    SOURCE_DELETED = "source_deleted"
    VAULT = "vault"  # Vault was unavailable during the pass
    VAULT_AUTH = "vault_auth"  # Vault refused rotator's own credentials
    BUG = "bug"  # an unexpected error; see the log


@dataclass(frozen=True)
class Failure:
    """What the last attempts at a token came to; kept in memory (`memory.TokenMemory`)."""

    kind: FailureKind
    count: int  # consecutive failures of this kind, >= 1
    retry_at: datetime
    source_version: int | None = None  # the source secret's version that failed


@dataclass(frozen=True)
class Outcome:
    """What happened to one token in one pass, and when to look at it next."""

    name: str
    state: State
    output: AccessToken | None  # the access token consumers hold, as far as this pass knows
    next_at: datetime
    reason: Reason | None = None
    error: str | None = None  # names tokens, paths and statuses; never a secret value
    error_kind: FailureKind | None = None
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
        return self.state in (State.FRESH, State.REFRESHED)


class Replacement(StrEnum):
    """What became of the API token in one lifecycle pass (`replacement.ApiTokens.step`)."""

    NOTHING = "nothing"  # nothing was due, or it has to wait (see `plan`)
    REPLACED = "replaced"  # a new API token from MTM is stored
    PROMOTED = "promoted"  # api_token_next became the api_token
    FAILED = "failed"  # a due or requested replacement did not complete
    PENDING = "pending"  # a new API token is held in memory; Vault did not take it yet


@dataclass(frozen=True)
class ApiTokenOutcome:
    """What one pass of the API-token lifecycle came to for one token."""

    name: str
    result: Replacement
    plan: Step  # the last step planned
    why: Why
    next_at: datetime | None = None  # when the lifecycle wants to look again (None: no need)
    error: str | None = None  # never a secret value
    next_token: Verdict | None = None  # api_token_next's last verdict; None: there is none
    api_token_expires_at: datetime | None = None
    rotation: Outcome | None = None  # the last rotation this pass made (proving a new token)


@dataclass(frozen=True)
class Planned:
    """One action `rotator plan` expects for a token: what, when (None: no set time), why."""

    name: str
    action: str  # e.g. "refresh", "wait for the issuance cap", "replace the API token"
    at: datetime | None
    why: str


@dataclass(frozen=True)
class Check:
    """One step an API-token replacement would take, as `replace-api-token --dry-run` proves
    it."""

    what: str
    ok: bool
    detail: str = ""
