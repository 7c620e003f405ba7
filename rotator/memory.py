"""What rotator remembers of each token beyond Vault, in one place behind one lock.

Vault holds the state that matters (the output secret, its metadata, the claims); the process
keeps only what must not be lost between two passes over a token and cannot be read back:

- the *failure record* of a failing token (how many attempts of which kind, and when to retry),
  so that backoff survives from one job to the next;
- the *held token*: the last access token obtained, kept while it is valid, so that a token that
  could not be stored, or whose output was overwritten or deleted, is written back instead of
  exchanged anew;
- what the last exchange of each API token said (`lifecycle.Proof`, by the token's
  fingerprint), which the API-token lifecycle decides by;
- a new API token obtained at MTM but not yet stored in Vault (`HeldApiToken`): never lost while
  the process lives, written again until Vault takes it;
- what Vault holds, as far as this process last saw it, so that a pass reads only what moved:
  the source secret and the output secret as last read or written, the versions the daemon's
  check last listed (`Listing`), and the MAC keys of the source versions seen (`records.py`);
- the access tokens this process obtained in the last hour, so that the issuance cap holds
  within the process whatever the output's issuance log says (someone may forge it);
- one lock per token, so that two passes over the same token never overlap (reentrant: a
  replacement holds it across the rotation that proves the new API token).

A SIGHUP reload hands the same `TokenMemory` to the new `Rotator`: nothing is copied, so an
exchange still running on the old one records into the memory the new one reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from rotator import policy
from rotator.lifecycle import UNPROVEN, Proof
from rotator.outcome import Failure, FailureKind
from rotator.records import OutputMetadata, SecretVersion, output_key
from rotator.redact import fingerprint
from rotator.tokens import AccessToken

OWN_ISSUANCES_KEPT = timedelta(minutes=65)  # the cap's hour, and some
MAX_KEYS = 4  # per token: MAC keys of the latest source versions seen
MAX_PROOFS = 4  # per token: the current API token, api_token_next, and the ones before
# Failures an outage of Vault or the IdP causes: over once it is, so `clear_transient` forgets them.
TRANSIENT_KINDS = frozenset({FailureKind.TRANSIENT, FailureKind.VAULT_WRITE})


@dataclass(frozen=True)
class Listing:
    """One token's current versions as the daemon's check last listed them, or as a read or
    write since showed them."""

    source_version: int | None  # None: unknown (sources are not listed without OpenBao's listing)
    output: OutputMetadata | None  # None: no output secret


@dataclass(frozen=True)
class HeldApiToken:
    """A new API token MTM handed out, until it is stored as a new version of the source."""

    api_token: str = field(repr=False)
    expires_at: datetime | None
    from_version: int  # the source version it replaces


class TokenMemory:
    """Failure records, held tokens, API-token proofs and per-token locks. Thread-safe."""

    def __init__(self) -> None:
        self._failures: dict[str, Failure] = {}
        self._held: dict[str, AccessToken] = {}
        self._held_api_tokens: dict[str, HeldApiToken] = {}
        self._proofs: dict[str, dict[str, Proof]] = {}  # name -> token fingerprint -> proof
        self._sources: dict[str, SecretVersion] = {}
        self._outputs: dict[str, SecretVersion | None] = {}  # None: seen absent
        self._listings: dict[str, Listing] = {}
        self._keys: dict[str, dict[int, bytes]] = {}  # name -> source version -> MAC key
        self._issued: dict[str, list[datetime]] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.RLock:
        """The lock a pass over `name` holds."""
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    # --- failures -----------------------------------------------------------------------------

    def failure(self, name: str) -> Failure | None:
        with self._guard:
            return self._failures.get(name)

    def record_failure(
        self,
        name: str,
        kind: FailureKind,
        now: datetime,
        max_backoff: float,
        jitter: float,
        retry_after: float | None = None,
        source_version: int | None = None,
    ) -> Failure:
        """Count one more failed attempt (`policy.next_failure`); returns the new record."""
        with self._guard:
            failure = policy.next_failure(
                self._failures.get(name),
                kind,
                now,
                max_backoff,
                jitter,
                retry_after,
                source_version,
            )
            self._failures[name] = failure
        return failure

    def clear_failure(self, name: str) -> None:
        with self._guard:
            self._failures.pop(name, None)

    def clear_transient(self) -> list[str]:
        """Forget the backoff of every token failing because of an outage (Vault, the IdP);
        returns their names. For when the outage is known to be over."""
        with self._guard:
            names = sorted(n for n, f in self._failures.items() if f.kind in TRANSIENT_KINDS)
            for name in names:
                del self._failures[name]
        return names

    # --- held tokens --------------------------------------------------------------------------

    def held(self, name: str, now: datetime) -> AccessToken | None:
        """The last token obtained for `name`, while it has not expired."""
        with self._guard:
            token = self._held.get(name)
            if token is not None and token.expires_at <= now:
                del self._held[name]
                return None
            return token

    def hold(self, name: str, token: AccessToken) -> None:
        with self._guard:
            self._held[name] = token

    # --- API tokens ---------------------------------------------------------------------------

    def prove(self, name: str, api_token: str, proof: Proof) -> None:
        """Remember what an exchange of `name`'s `api_token` (its api_token or api_token_next)
        said; only the fingerprint is kept."""
        with self._guard:
            proofs = self._proofs.setdefault(name, {})
            proofs.pop(fingerprint(api_token), None)
            proofs[fingerprint(api_token)] = proof
            while len(proofs) > MAX_PROOFS:
                del proofs[next(iter(proofs))]

    def proof(self, name: str, api_token: str) -> Proof:
        """What the last exchange of `api_token` said; UNPROVEN when there was none."""
        with self._guard:
            return self._proofs.get(name, {}).get(fingerprint(api_token), UNPROVEN)

    def hold_api_token(self, name: str, held: HeldApiToken) -> None:
        with self._guard:
            self._held_api_tokens[name] = held

    def held_api_token(self, name: str) -> HeldApiToken | None:
        with self._guard:
            return self._held_api_tokens.get(name)

    def drop_api_token(self, name: str) -> None:
        with self._guard:
            self._held_api_tokens.pop(name, None)

    # --- issuances -----------------------------------------------------------------------------

    def issued(self, name: str, at: datetime) -> None:
        """Count an access token this process obtained for `name` at `at`."""
        with self._guard:
            times = self._issued.setdefault(name, [])
            times.append(at)
            cutoff = at - OWN_ISSUANCES_KEPT
            times[:] = [moment for moment in times if moment > cutoff]

    def issuances(self, name: str) -> tuple[datetime, ...]:
        """The access tokens this process obtained for `name` in the last hour or so."""
        with self._guard:
            return tuple(self._issued.get(name, ()))

    # --- sources ------------------------------------------------------------------------------

    def note_source(self, name: str, secret: SecretVersion) -> None:
        """Remember the source secret as just read, and its API token's MAC key."""
        with self._guard:
            self._sources[name] = secret
            listing = self._listings.get(name)
            if listing is not None:
                self._listings[name] = replace(listing, source_version=secret.version)
        self.note_key(name, secret)

    def note_key(self, name: str, secret: SecretVersion) -> None:
        """Remember the MAC key of source version `secret` (the current one or an older one
        an output names), so that outputs exchanged from it are recognised."""
        api_token = secret.data.get("api_token")
        if not isinstance(api_token, str):
            return
        with self._guard:
            keys = self._keys.setdefault(name, {})
            keys[secret.version] = output_key(api_token.strip())
            for old in sorted(keys)[:-MAX_KEYS]:
                del keys[old]

    def source(self, name: str) -> SecretVersion | None:
        """The source secret as last read, if it was."""
        with self._guard:
            return self._sources.get(name)

    def forget_source(self, name: str) -> None:
        """The source changed (this process wrote it): read it again next time."""
        with self._guard:
            self._sources.pop(name, None)

    def current_source(self, name: str) -> SecretVersion | None:
        """The source as last read, if the last listing says it is still the current version."""
        with self._guard:
            secret, listing = self._sources.get(name), self._listings.get(name)
        if secret is None or listing is None or listing.source_version != secret.version:
            return None
        return secret

    def key(self, name: str, source_version: int) -> bytes | None:
        """The MAC key of `name`'s source version `source_version`, if that version was seen."""
        with self._guard:
            return self._keys.get(name, {}).get(source_version)

    # --- outputs ------------------------------------------------------------------------------

    def note_output(self, name: str, secret: SecretVersion | None) -> None:
        """Remember the output secret as just read or written (None: there is none): the
        current one, as far as anyone knows now."""
        with self._guard:
            self._outputs[name] = secret
            listing = self._listings.get(name)
            if listing is not None:
                metadata = None
                if secret is not None:
                    metadata = OutputMetadata(secret.version, secret.custom_metadata, ())
                self._listings[name] = replace(listing, output=metadata)

    def current_output(self, name: str) -> tuple[bool, SecretVersion | None]:
        """(known, the output): the output as last read or written, with the custom_metadata
        the last listing shows, if that listing says it is still the current version; (False,
        None) when it must be read."""
        with self._guard:
            if name not in self._outputs or name not in self._listings:
                return False, None
            secret, listed = self._outputs[name], self._listings[name].output
        if secret is None or listed is None:
            return (True, None) if secret is None and listed is None else (False, None)
        if secret.deleted or listed.current_version != secret.version:
            return False, None
        return True, replace(secret, custom_metadata=listed.custom_metadata)

    def output_version(self, name: str) -> int | None:
        """The version of the output as this process last read or wrote it (0: absent)."""
        with self._guard:
            if name not in self._outputs:
                return None
            secret = self._outputs[name]
        return secret.version if secret is not None else 0

    def note_listing(self, name: str, listing: Listing) -> None:
        """Remember what the daemon's check just listed of `name`."""
        with self._guard:
            self._listings[name] = listing

    def forget_listings(self, name: str | None = None) -> None:
        """Vault failed (for `name`, or for everything): nothing is known to be current, so the
        next pass reads, and fails there, before it asks the IdP for anything."""
        with self._guard:
            if name is None:
                self._listings.clear()
            else:
                self._listings.pop(name, None)

    # --- lifecycle ----------------------------------------------------------------------------

    def forget(self, name: str) -> None:
        """Drop everything about a token whose source is gone, except a new API token that
        MTM handed out and that is not stored yet: that one is never dropped."""
        with self._guard:
            self._failures.pop(name, None)
            self._held.pop(name, None)
            self._sources.pop(name, None)
            self._outputs.pop(name, None)
            self._listings.pop(name, None)
            self._keys.pop(name, None)
            self._proofs.pop(name, None)
            self._issued.pop(name, None)
