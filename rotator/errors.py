"""Every error rotator raises on purpose.

    RotatorError
    ├── ConfigError              the config file or environment is unusable (exit 2)
    ├── SourceError              a source secret in Vault is malformed (fix the secret)
    ├── VaultError
    │   ├── VaultUnavailable     sealed, down, timing out, 5xx            (retryable)
    │   ├── VaultAuthError       rotator's own credentials are refused    (exit 3)
    │   └── VaultConflict        a check-and-set write lost a race        (retryable)
    └── ExchangeError
        ├── HostNotAllowed       token URL outside the allowlist, plain http, userinfo
        ├── RedirectRefused      the IdP answered 3xx; a token never follows a redirect
        ├── ApiTokenRejected     401/403: the API token is invalid or revoked
        ├── RequestRefused       another 4xx: the request itself is wrong (scope, client_id, URL)
        ├── RateLimited          429, with the server's Retry-After when given  (retryable)
        ├── IdPUnavailable       5xx, timeouts, connection errors               (retryable)
        └── InvalidResponse      a 200 whose body is not a usable token         (retryable)

Whether an error is worth retrying soon is a property of its class (`retryable`), never a guess at
the call site. Messages carry context (token name, Vault path, HTTP status), never secret values:
adapters build them from names and numbers only.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""

    retryable: bool = False


class ConfigError(RotatorError):
    """The configuration cannot be used; the message names the key and what is wrong with it."""


class SourceError(RotatorError):
    """A source secret is malformed (missing api_token, bad host, ...). Retrying will not help."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"source secret {name!r}: {problem}")
        self.name = name
        self.problem = problem


class VaultError(RotatorError):
    """Vault could not do what rotator asked."""


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

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdPUnavailable(ExchangeError):
    """The IdP answered 5xx, timed out, or the connection failed."""

    retryable = True


class InvalidResponse(ExchangeError):
    """The IdP answered 200 but the body is not a usable access token."""

    retryable = True
