"""What rotator keeps in Vault beside the tokens, and how it reads it back. Pure: no I/O.

`vault.py` speaks the routes; this module decides what goes into them and what comes out means:

- **Ownership.** An output secret is rotator's own when its data is a token rotator announced in
  the metadata before writing it (`written_by_rotator`): anything else is a foreign write.
- **The write protocol.** A write announces the new token's fingerprint in the output's
  `custom_metadata` beside the current one's (`announce`), writes the data with check-and-set,
  then records `issued_at`, `expires_at` and the issuance log (`record`). A reader that sees the
  write half-way still recognises rotator's token.
- **The issuance log** (`tokens.issuance_log_add`): counts per minute for the last hour, merged
  into the metadata by `record`, read back by `SecretVersion.issuances(now)`.
- **Claims** between instances: a KV secret per token holding an owner and an expiry, taken with
  check-and-set (`claim_record`, `is_claimed_by_another`); a release records the output version
  the owner left (`release_record`), so the next claimer knows whether it must read again
  (`Claim.output_may_have_changed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotator.config import MAX_TIMEOUT_SECONDS
from rotator.redact import fingerprint
from rotator.tokens import (
    ISSUANCE_LOG_KEY,
    ISSUANCE_LOGGED_KEY,
    MAX_CLOCK_SKEW,
    AccessToken,
    format_time,
    issuance_log_add,
    issuance_log_times,
    parse_time,
)

WRITER_ID = "rotator"
NO_FINGERPRINT = "-"  # Vault refuses empty custom_metadata values
RELEASED_UNTIL = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class SecretVersion:
    """One KV v2 secret as read: its data, version and custom_metadata. `data` may hold secrets."""

    data: Mapping[str, Any] = field(repr=False)
    version: int
    custom_metadata: Mapping[str, str]
    created: datetime | None = None  # when this version was written

    @property
    def written_by_rotator(self) -> bool:
        """True when the data is a token rotator announced in the metadata before writing it:
        the current one, or the one before while a write is under way."""
        if self.custom_metadata.get("written_by") != WRITER_ID:
            return False
        announced = {
            self.custom_metadata.get("fingerprint"),
            self.custom_metadata.get("previous_fingerprint"),
        }
        return data_fingerprint(self.data) in announced - {None, "", NO_FINGERPRINT}

    def issuances(self, now: datetime) -> tuple[datetime, ...] | None:
        """Issuance times from the output's issuance log, as of `now`; None without one (or
        with nothing of the last hour in it)."""
        return issuance_log_times(self.custom_metadata.get(ISSUANCE_LOG_KEY), now)


@dataclass(frozen=True)
class OutputMetadata:
    """An output secret's KV metadata. Holds no secret values."""

    current_version: int
    custom_metadata: Mapping[str, str]
    history: tuple[datetime, ...]  # creation times of the versions kept, oldest first

    def issuances(self, now: datetime) -> tuple[datetime, ...]:
        """Issuance times as of `now`: from the issuance log rotator keeps in custom_metadata,
        or, for an output written without one, the creation times of the versions kept."""
        logged = issuance_log_times(self.custom_metadata.get(ISSUANCE_LOG_KEY), now)
        return logged if logged is not None else self.history

    @property
    def expires_at(self) -> datetime | None:
        """The expiry rotator recorded for the current token, if readable."""
        try:
            return parse_time(self.custom_metadata["expires_at"])
        except (KeyError, ValueError):
            return None


def data_fingerprint(data: Mapping[str, Any]) -> str:
    """The fingerprint of the access token an output's data holds ("" when it holds none)."""
    token = data.get("access_token")
    return fingerprint(token) if isinstance(token, str) else ""


# --- the write protocol ---------------------------------------------------------------------------


def announce(current: SecretVersion | None, token: AccessToken) -> dict[str, str]:
    """The output's custom_metadata to write before the data: the current metadata with the new
    token's fingerprint announced and the current token's (if rotator's) kept as the previous.

    For a foreign current token, the previous fingerprint stays the one rotator last announced:
    the forged value must never count as rotator's, even half-way through the restore.
    """
    previous = ""
    if current is not None:
        previous = (
            data_fingerprint(current.data)
            if current.written_by_rotator
            else current.custom_metadata.get("fingerprint", "")
        )
    return {
        **(current.custom_metadata if current is not None else {}),
        "written_by": WRITER_ID,
        "fingerprint": token.fingerprint,
        "previous_fingerprint": previous or NO_FINGERPRINT,
    }


def record(announced: Mapping[str, str], token: AccessToken) -> dict[str, str]:
    """The custom_metadata to write once the data is stored: `issued_at`, `expires_at`, and the
    issuance log counting this token, unless it is the one counted last (a held token written
    back is no new issuance)."""
    metadata = dict(announced)
    if metadata.get(ISSUANCE_LOGGED_KEY) != token.fingerprint:
        metadata[ISSUANCE_LOG_KEY] = issuance_log_add(
            metadata.get(ISSUANCE_LOG_KEY), token.issued_at
        )
        metadata[ISSUANCE_LOGGED_KEY] = token.fingerprint
    metadata["issued_at"] = format_time(token.issued_at)
    metadata["expires_at"] = format_time(token.expires_at)
    return metadata


# --- claims between instances ---------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A claim this instance holds: its KV version, and the output's version as the previous
    owner left it when it released the claim (None when unknown: never claimed, or the previous
    owner died holding it). While the output is still at that version, nobody wrote it since
    the caller read it, and it need not be read again under the claim."""

    version: int
    settled_output_version: int | None
    first: bool = False  # nobody had claimed this token before: no claimed write ever happened

    def output_may_have_changed(self, read_version: int) -> bool:
        """Whether a claimed exchange by another instance may have written the output since the
        caller read it at `read_version` (0: absent), so that it must be read again."""
        return not self.first and self.settled_output_version != read_version


def claim_record(owner: str, until: datetime) -> dict[str, str]:
    """The claim secret's data while `owner` holds it."""
    return {"owner": owner, "until": format_time(until)}


def release_record(owner: str, output_version: int) -> dict[str, Any]:
    """The claim secret's data once released: lapsed, with the output version left behind."""
    return {"owner": owner, "until": RELEASED_UNTIL, "output_version": output_version}


def claim_lease(timeout_seconds: float) -> timedelta:
    """How long a claim lasts: an exchange (connect, read, the body's deadline) and the writes
    after it."""
    return timedelta(seconds=3 * timeout_seconds + 15)


# No rotator writes a longer claim (the config caps exchange.timeout_seconds); one that says it
# lasts longer is forged or written by a clock far ahead, and is not honoured.
MAX_CLAIM_LEASE = claim_lease(MAX_TIMEOUT_SECONDS) + MAX_CLOCK_SKEW


def is_claimed_by_another(existing: SecretVersion | None, owner: str, now: datetime) -> bool:
    """True while another owner's claim is live. An unreadable expiry counts as lapsed, and so
    does one further ahead than any rotator's claim could be (`MAX_CLAIM_LEASE`)."""
    if existing is None or existing.data.get("owner") == owner:
        return False
    try:
        until = parse_time(str(existing.data.get("until", "")))
    except ValueError:
        return False
    return now < until <= now + MAX_CLAIM_LEASE


def claim_taken(existing: SecretVersion | None, version: int) -> Claim:
    """The claim just written at `version` over `existing` (None: there was no claim)."""
    # With no claim before ours (check-and-set at 0 won), no instance ever exchanged this token
    # under a claim, so none can have stored one since the caller's read.
    if existing is None:
        return Claim(version, None, first=True)
    return Claim(version, settled_output_version(existing))


def settled_output_version(claim: SecretVersion | None) -> int | None:
    """The output version a released claim recorded; None for a claim never released (or one
    from before releases recorded it) and when there was no claim at all."""
    if claim is None:
        return None
    recorded = claim.data.get("output_version")
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None
