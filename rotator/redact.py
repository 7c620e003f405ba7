"""Redaction by construction: one registry of every secret value the process has handled.

Adapters register each secret the moment they hold it (API tokens read from Vault, access tokens
received from the IdP, rotator's own Vault token and AppRole secret-id). Everything that leaves the
process as text passes through `SECRETS.redact`: the logging filter installed by `install_filter`,
Sentry's `before_send`/`before_breadcrumb`, and alert rendering. A secret is replaced by
`[REDACTED:<fingerprint>]`, which still lets on-call tell two tokens apart.

Two lifetimes: `register` keeps a value for good (API tokens, credentials, webhook URLs, the DSN:
bounded by the config and the number of sources); `register_until` keeps an access token until
`EXPIRY_GRACE` after it expires, and at most `MAX_EXPIRING` of those (the soonest to expire go
first), so that a fleet's stream of access tokens bounds memory without ever pushing out a
long-lived secret.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words; no real token is this short
LONG_KEY = 64  # see SecretRegistry.__init__
MAX_EXPIRING = 100_000  # access tokens kept at once: about 40 hours of a 1,000-token fleet
EXPIRY_GRACE = timedelta(hours=1)  # an access token is redacted this long after it expired


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible identifier for a secret value, safe for logs."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class SecretRegistry:
    """A thread-safe set of secret values and the redaction of text containing them."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._secrets: dict[str, str] = {}  # value -> placeholder
        self._permanent: set[str] = set()
        self._keep_until: dict[str, datetime] = {}  # expiring value -> when it may go
        # (keep_until, order, value), soonest first; stale entries (extended or made permanent
        # since) are skipped when they come up.
        self._expiry_heap: list[tuple[datetime, int, str]] = []
        self._order = itertools.count()
        # Secrets indexed by how they start, so that `redact` costs two dict lookups per
        # character of text however many secrets there are (a fleet has thousands): short ones
        # by their first MIN_SECRET_LENGTH characters, long ones by their first LONG_KEY (JWTs
        # of one issuer share a long header, so a short key would put them all in one bucket).
        self._index: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(value: str) -> str:
        return value[:LONG_KEY] if len(value) >= LONG_KEY else value[:MIN_SECRET_LENGTH]

    def register(self, *values: object) -> None:
        """Remember secret values for good; non-strings, empty and very short values are
        ignored. For values that live long: API tokens, credentials, URLs, the DSN."""
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                    self._add(value)
                    self._permanent.add(value)
                    self._keep_until.pop(value, None)

    def register_until(self, value: object, expires_at: datetime) -> None:
        """Remember a secret that stops mattering once it expired (an access token): kept until
        `EXPIRY_GRACE` after `expires_at`, or after now if that is later. Values registered for
        good stay so. Ignored like `register` ignores values."""
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            return
        now = self._clock()
        keep_until = max(expires_at, now) + EXPIRY_GRACE
        with self._lock:
            self._purge(now)
            if value in self._permanent:
                return
            if value in self._keep_until and self._keep_until[value] >= keep_until:
                return
            self._add(value)
            self._keep_until[value] = keep_until
            heapq.heappush(self._expiry_heap, (keep_until, next(self._order), value))
            while len(self._keep_until) > MAX_EXPIRING:
                self._pop_soonest()

    def expiring_count(self) -> int:
        """How many expiring secrets are kept now."""
        with self._lock:
            return len(self._keep_until)

    def _add(self, value: str) -> None:
        if value in self._secrets:
            return
        self._secrets[value] = f"[REDACTED:{fingerprint(value)}]"
        bucket = self._index.setdefault(self._key(value), [])
        bucket.append(value)
        bucket.sort(key=len, reverse=True)

    def _purge(self, now: datetime) -> None:
        while self._expiry_heap and self._expiry_heap[0][0] < now:
            self._pop_soonest()

    def _pop_soonest(self) -> None:
        keep_until, _, value = heapq.heappop(self._expiry_heap)
        if self._keep_until.get(value) == keep_until:  # not extended, not made permanent
            del self._keep_until[value]
            self._forget(value)

    def _forget(self, value: str) -> None:
        del self._secrets[value]
        key = self._key(value)
        self._index[key].remove(value)
        if not self._index[key]:
            del self._index[key]

    def redact(self, text: str) -> str:
        """`text` with every registered secret replaced by its placeholder (leftmost match
        first, the longest where several start at the same place)."""
        if len(text) < MIN_SECRET_LENGTH or not self._secrets:
            return text
        with self._lock:
            index, placeholders = self._index, self._secrets
            parts: list[str] = []
            done = at = 0
            last_start = len(text) - MIN_SECRET_LENGTH
            while at <= last_start:
                candidates = [
                    *index.get(text[at : at + LONG_KEY], ()),
                    *index.get(text[at : at + MIN_SECRET_LENGTH], ()),
                ]
                for value in candidates:
                    if text.startswith(value, at):
                        parts += (text[done:at], placeholders[value])
                        at = done = at + len(value)
                        break
                else:
                    at += 1
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def redact_data(self, data: Any) -> Any:
        """A copy of a JSON-like structure (dicts, lists, strings) with secrets redacted."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact_data(item) for item in data]
        return data


SECRETS = SecretRegistry()


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with secrets redacted."""

    def __init__(self, registry: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self._registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._registry.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._registry.redact(formatted)
        return True


def install_filter(handler: logging.Handler, registry: SecretRegistry = SECRETS) -> None:
    """Attach the redacting filter to a handler (handler filters see records from every logger)."""
    handler.addFilter(RedactingFilter(registry))
