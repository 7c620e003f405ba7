"""Every error rotator raises on purpose.

    RotatorError                                                        kind
    ├── ConfigError              the config file or environment is unusable (exit 2)
    ├── SourceError              a source secret in Vault is malformed       invalid_source
    ├── SinkError                an alert could not be delivered to one sink
    ├── VaultError                                                           transient
    │   ├── VaultUnavailable     sealed, down, timing out, 5xx  (retryable)
    │   ├── VaultAuthError       rotator's own credentials are refused (exit 3)
    │   └── VaultConflict        a check-and-set write lost a race (retryable)
    ├── ExchangeError
    │   ├── HostNotAllowed       token URL outside the allowlist, plain http  refused
    │   ├── RedirectRefused      the IdP answered 3xx; never followed         refused
    │   ├── ApiTokenRejected     401/403: the API token is invalid or revoked rejected
    │   ├── RequestRefused       another 4xx: the request itself is wrong     refused
    │   ├── RateLimited          429, with Retry-After when given (retryable) rate_limited
    │   ├── IdPUnavailable       5xx, timeouts, connections (retryable)       transient
    │   └── InvalidResponse      a 200 that is not a usable answer (retryable) transient
    └── MtmError                 LeanIX MTM (technical users) could not do what was asked
        ├── MtmRefused           401/403/400: the admin's token may not; nothing changed  refused
        ├── TechnicalUserMissing 404: MTM does not know the technical user            refused
        └── MtmUnavailable       5xx, timeouts, a connection lost (retryable)         transient

`definite` tells an MTM failure that certainly changed nothing (a refusal) from one after which
a replacement may or may not have happened (an answer lost on the way).

Whether an error is worth retrying soon (`retryable`) and which backoff a token failing with it
gets (`kind`, a `FailureKind`) are properties of its class, never a guess at the call site.
Messages carry context (token name, Vault path, HTTP status), never secret values: adapters build
them from names and numbers only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class FailureKind(StrEnum):
    """How an attempt at a token failed; decides its retry backoff (`policy.BACKOFF_BASE`)."""

    TRANSIENT = "transient"  # 5xx, timeouts, garbage bodies, Vault unavailable
    RATE_LIMITED = "rate_limited"  # 429
    REJECTED = "rejected"  # 401/403: the API token is invalid or revoked
    REFUSED = "refused"  # another 4xx, a redirect, a host outside the allowlist
    INVALID_SOURCE = "invalid_source"  # the source secret is malformed: fix it
    VAULT_WRITE = "vault_write"  # a token was obtained but could not be stored


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""

    retryable: ClassVar[bool] = False
    kind: ClassVar[FailureKind] = FailureKind.REFUSED


class ConfigError(RotatorError):
    """The configuration cannot be used; the message names the key and what is wrong with it."""


class SourceError(RotatorError):
    """A source secret is malformed (missing api_token, bad host, ...). Retrying will not help."""

    kind = FailureKind.INVALID_SOURCE

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"source secret {name!r}: {problem}")
        self.name = name
        self.problem = problem


class SinkError(RotatorError):
    """An alert sink failed to deliver; the message names the sink and status, never the
    payload."""


class VaultError(RotatorError):
    """Vault could not do what rotator asked."""

    kind = FailureKind.TRANSIENT


class VaultUnavailable(VaultError):
    """Vault is sealed, down, overloaded or unreachable."""

    retryable = True


class VaultAuthError(VaultError):
    """Vault refuses rotator's credentials (missing, expired, revoked or lacking policy)."""


class VaultConflict(VaultError):
    """A check-and-set write found a different version than expected: someone else wrote first."""

    retryable = True


class ExchangeError(RotatorError):
    """Exchanging an API token for an access token failed."""


class HostNotAllowed(ExchangeError):
    """The token URL may not receive a token: host outside the allowlist, plain http, userinfo."""


class RedirectRefused(ExchangeError):
    """The IdP answered with a redirect; a token is never re-sent along one."""


class ApiTokenRejected(ExchangeError):
    """The IdP answered 401 or 403: the API token is invalid, revoked or forbidden."""

    kind = FailureKind.REJECTED

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RequestRefused(ExchangeError):
    """The IdP answered another 4xx (400, 404, ...): retrying the same request will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ExchangeError):
    """The IdP answered 429. `retry_after` is in seconds when the server said how long to wait."""

    retryable = True
    kind = FailureKind.RATE_LIMITED

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdPUnavailable(ExchangeError):
    """The IdP answered 5xx, timed out, or the connection failed."""

    retryable = True
    kind = FailureKind.TRANSIENT


class InvalidResponse(ExchangeError):
    """The IdP answered 200 but the body is not a usable access token."""

    retryable = True
    kind = FailureKind.TRANSIENT


class MtmError(RotatorError):
    """LeanIX MTM (the technical-users API) could not do what rotator asked."""

    definite: ClassVar[bool] = False  # True: MTM certainly changed nothing


class MtmRefused(MtmError):
    """MTM answered 401, 403 or another 4xx: the admin's access token may not do this."""

    definite = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TechnicalUserMissing(MtmError):
    """MTM answered 404: it does not know the technical user (deleted, or another workspace)."""

    definite = True


class MtmUnavailable(MtmError):
    """MTM answered 5xx, timed out, or the connection was lost: it may have done it or not."""

    retryable = True
    kind = FailureKind.TRANSIENT
