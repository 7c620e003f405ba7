"""What rotator remembers of each token beyond Vault, in one place behind one lock.

Vault holds the state that matters (the output secret, its metadata, the claims); the process
keeps only what must not be lost between two passes over a token and cannot be read back:

- the *failure record* of a failing token (how many attempts of which kind, and when to retry),
  so that backoff survives from one job to the next;
- the *held token*: the last access token obtained, kept while it is valid, so that a token that
  could not be stored, or whose output was overwritten or deleted, is written back instead of
  exchanged anew;
- one lock per token, so that two passes over the same token never overlap.

A SIGHUP reload hands the same `TokenMemory` to the new `Rotator`: nothing is copied, so an
exchange still running on the old one records into the memory the new one reads.
"""

from __future__ import annotations

import threading
from datetime import datetime

from rotator import policy
from rotator.outcome import Failure, FailureKind
from rotator.tokens import AccessToken

# Failures an outage of Vault or the IdP causes: over once it is, so `clear_transient` forgets them.
TRANSIENT_KINDS = frozenset({FailureKind.TRANSIENT, FailureKind.VAULT_WRITE})


class TokenMemory:
    """Failure records, held tokens and per-token locks. Thread-safe."""

    def __init__(self) -> None:
        self._failures: dict[str, Failure] = {}
        self._held: dict[str, AccessToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        """The lock a pass over `name` holds."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

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

    # --- lifecycle ----------------------------------------------------------------------------

    def forget(self, name: str) -> None:
        """Drop everything about a token whose source is gone."""
        with self._guard:
            self._failures.pop(name, None)
            self._held.pop(name, None)
