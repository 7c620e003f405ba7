"""What rotator keeps in Vault beside the tokens, and how it reads it back. Pure: no I/O.

`vault.py` speaks the routes; this module decides what goes into them and what comes out means:

- **Ownership.** An output secret's data carries `rotator_mac`, an HMAC of its access token
  keyed with a key derived from the API token it was exchanged from (`output_key`): consumers
  never read the source, so they cannot forge it. Data whose MAC does not verify is a foreign
  write (`written_by_rotator`). Outputs from before MACs are recognised by the fingerprint an
  older rotator announced in their metadata, until rotator writes them again.
- **The write protocol.** One data write with check-and-set (`output_fields`: SPEC's fields and
  the MAC), then one metadata write recording `issued_at`, `expires_at`, the issuance log and
  `rotator_vouch` (`record`). A reader that sees the write half-way sees rotator's new data (the
  MAC verifies) beside the previous metadata.
- **Vouching from metadata alone.** `rotator_vouch` binds the version just written and the times
  recorded beside it with the same key (`OutputMetadata.vouched`). A KV version never changes
  once written, so metadata that vouches for the current version proves the current data is
  rotator's without reading it: how the daemon's check, from one listing of every output's
  metadata, tells its own and other instances' writes from a foreign one.
- **The issuance log** (`tokens.issuance_log_add`): counts per minute for the last hour, merged
  into the metadata by `record`, read back by `SecretVersion.issuances(now)`.
- **Claims** between instances: a KV secret per token holding an owner and an expiry, taken with
  check-and-set (`claim_record`, `is_claimed_by_another`); a release records the output version
  the owner left (`release_record`), so the next claimer knows whether it must read again
  (`Claim.output_may_have_changed`).
"""

from __future__ import annotations

import hashlib
import hmac
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
MAC_FIELD = "rotator_mac"
VOUCH_KEY = "rotator_vouch"
NO_FINGERPRINT = "-"  # Vault refuses empty custom_metadata values
RELEASED_UNTIL = "1970-01-01T00:00:00Z"
_KEY_LABEL = b"rotator output mac v1"
_LEGACY_KEYS = ("fingerprint", "previous_fingerprint")  # what rotator announced before MACs


@dataclass(frozen=True)
class SecretVersion:
    """One KV v2 secret as read: its data, version and custom_metadata. `data` may hold secrets."""

    data: Mapping[str, Any] = field(repr=False)
    version: int
    custom_metadata: Mapping[str, str]
    created: datetime | None = None  # when this version was written
    deleted: bool = False  # the current version is deleted or destroyed: `data` is empty

    def written_by_rotator(self, key: bytes | None) -> bool:
        """True when rotator wrote this output: its MAC verifies with `key` (the key of the API
        token it says it was exchanged from; None: that key is unknown), or, for an output
        written before MACs, its token is the one rotator announced in the metadata."""
        if self.deleted:
            return True  # nothing there to distrust
        mac = self.data.get(MAC_FIELD)
        token = self.data.get("access_token")
        if mac is not None:
            if key is None or not isinstance(mac, str) or not isinstance(token, str):
                return False
            return hmac.compare_digest(mac, _mac(key, token))
        if self.custom_metadata.get("written_by") != WRITER_ID:
            return False
        announced = {self.custom_metadata.get(name) for name in _LEGACY_KEYS}
        return data_fingerprint(self.data) in announced - {None, "", NO_FINGERPRINT}

    @property
    def source_version(self) -> int | None:
        """The source version an output says it was exchanged from, if it says."""
        version = self.data.get("source_version")
        return version if isinstance(version, int) and not isinstance(version, bool) else None

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
        return _recorded_time(self.custom_metadata, "expires_at")

    @property
    def issued_at(self) -> datetime | None:
        """The issue time rotator recorded for the current token, if readable."""
        return _recorded_time(self.custom_metadata, "issued_at")

    @property
    def vouched_source_version(self) -> int | None:
        """The source version whose key `rotator_vouch` says it was made with, if it says."""
        parts = _vouch_parts(self.custom_metadata)
        return parts[0] if parts is not None else None

    def vouched(self, key: bytes | None) -> bool:
        """True when `rotator_vouch` vouches with `key` (that of the source version
        `vouched_source_version` names) for the current version and the times recorded: the
        current data is then rotator's, unread."""
        parts = _vouch_parts(self.custom_metadata)
        if key is None or parts is None or parts[1] != self.current_version:
            return False
        expected = vouch(key, parts[0], self.current_version, self.custom_metadata)
        return expected is not None and hmac.compare_digest(
            expected, self.custom_metadata[VOUCH_KEY]
        )


def _recorded_time(metadata: Mapping[str, str], key: str) -> datetime | None:
    try:
        return parse_time(metadata[key])
    except (KeyError, ValueError):
        return None


def _vouch_parts(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    """(source version, output version) of a `rotator_vouch` value `<sv>.<version>.<mac>`."""
    parts = str(metadata.get(VOUCH_KEY, "")).split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


def data_fingerprint(data: Mapping[str, Any]) -> str:
    """The fingerprint of the access token an output's data holds ("" when it holds none)."""
    token = data.get("access_token")
    return fingerprint(token) if isinstance(token, str) else ""


# --- the write protocol ---------------------------------------------------------------------------


def output_key(api_token: str) -> bytes:
    """The key of the MACs of outputs exchanged from `api_token`."""
    return hmac.new(api_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, access_token: str) -> str:
    return hmac.new(key, access_token.encode(), hashlib.sha256).hexdigest()


def output_fields(token: AccessToken, key: bytes) -> dict[str, Any]:
    """The output secret's data: SPEC's fields, and the MAC that makes it rotator's. `key` is
    `output_key` of the API token of source version `token.source_version`."""
    return {**token.fields(), MAC_FIELD: _mac(key, token.access_token)}


def vouch(key: bytes, source_version: int, version: int, metadata: Mapping[str, str]) -> str | None:
    """The `rotator_vouch` value for output `version`, with the times `metadata` records; None
    when it records none."""
    issued, expires = metadata.get("issued_at"), metadata.get("expires_at")
    if not issued or not expires:
        return None
    message = f"{version}|{issued}|{expires}".encode()
    return f"{source_version}.{version}.{hmac.new(key, message, hashlib.sha256).hexdigest()}"


def record(
    metadata: Mapping[str, str], token: AccessToken, version: int, key: bytes
) -> dict[str, str]:
    """The custom_metadata to write once `token` is stored as `version` (with `key`, as
    `output_fields`), from the output's current one: `written_by`, `issued_at`, `expires_at`,
    the issuance log counting this token unless it is the one counted last (a held token
    written back is no new issuance), and the vouch. What rotator announced before MACs is
    dropped."""
    recorded = {k: v for k, v in metadata.items() if k not in _LEGACY_KEYS}
    if recorded.get(ISSUANCE_LOGGED_KEY) != token.fingerprint:
        recorded[ISSUANCE_LOG_KEY] = issuance_log_add(
            recorded.get(ISSUANCE_LOG_KEY), token.issued_at
        )
        recorded[ISSUANCE_LOGGED_KEY] = token.fingerprint
    recorded["written_by"] = WRITER_ID
    recorded["issued_at"] = format_time(token.issued_at)
    recorded["expires_at"] = format_time(token.expires_at)
    vouched = vouch(key, token.source_version, version, recorded)
    assert vouched is not None  # both times were just recorded
    recorded[VOUCH_KEY] = vouched
    return recorded


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
