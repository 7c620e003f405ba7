"""Redaction by construction: one registry of every secret value the process has handled.

Adapters register each secret the moment they hold it (API tokens read from Vault, access tokens
received from the IdP, rotator's own Vault token and AppRole secret-id). Everything that leaves the
process as text passes through `SECRETS.redact`: the logging filter installed by `install_filter`,
Sentry's `before_send`/`before_breadcrumb`, and alert rendering. A secret is replaced by
`[REDACTED:<fingerprint>]`, which still lets on-call tell two tokens apart.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words; no real token is this short
MAX_SECRETS = 100_000  # a bound on memory; the oldest registrations go first


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible identifier for a secret value, safe for logs."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class SecretRegistry:
    """A thread-safe set of secret values and the redaction of text containing them."""

    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}  # value -> placeholder, in registration order
        self._lock = threading.Lock()

    def register(self, *values: object) -> None:
        """Remember secret values; non-strings, empty and very short values are ignored."""
        with self._lock:
            for value in values:
                if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                    continue
                if value not in self._secrets:
                    self._secrets[value] = f"[REDACTED:{fingerprint(value)}]"
                    if len(self._secrets) > MAX_SECRETS:
                        del self._secrets[next(iter(self._secrets))]

    def redact(self, text: str) -> str:
        """`text` with every registered secret replaced by its placeholder."""
        with self._lock:
            items = list(self._secrets.items())
        # Longest first, so a secret containing another is replaced whole.
        for value, placeholder in sorted(items, key=lambda item: -len(item[0])):
            if value in text:
                text = text.replace(value, placeholder)
        return text

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
