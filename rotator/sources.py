"""Source secrets and where their tokens may be sent. Pure: no I/O, no clock.

A source secret (SPEC, "Vault layout") becomes a `Source` only once every field checks out; a bad
one raises `SourceError` naming the field, never echoing the API token. `check_destination` is the
single gate every token URL passes, at parse time and again right before a request is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from rotator.errors import HostNotAllowed, SourceError
from rotator.tokens import parse_time

LEANIX_TOKEN_PATH = "/services/mtm/v1/oauth2/token"  # noqa: S105 - a path, not a secret
MAX_FIELD_LENGTH = 8192

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what Basic auth carries
# A technical user's id goes into an MTM URL path: LeanIX's ids are UUIDs.
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_OAUTH_TOKEN_SUFFIX = "/oauth2/token"  # noqa: S105 - a path, not a secret


@dataclass(frozen=True)
class Source:
    """One API token as read from Vault, validated. `api_token` is a secret."""

    name: str
    token_url: str
    version: int
    api_token: str = field(repr=False)
    client_id: str = "apitoken"
    scope: str | None = None
    api_token_expires_at: datetime | None = None
    technical_user_id: str | None = None  # the MTM technical user owning api_token
    admin_source: str | None = None  # whose access token authorises MTM calls (None: this one)
    api_token_next: str | None = field(default=None, repr=False)  # staged by an admin

    @property
    def mtm_base(self) -> str | None:
        """The MTM API base (`https://{host}/services/mtm/v1`), or None when the token URL has
        another shape than LeanIX's: then there is no MTM to manage the API token through."""
        if urlsplit(self.token_url).path != LEANIX_TOKEN_PATH:
            return None
        return self.token_url[: -len(_OAUTH_TOKEN_SUFFIX)]

    @property
    def admin(self) -> str:
        """The source whose access token authorises this token's MTM calls."""
        return self.admin_source or self.name

    @property
    def issues_jwts(self) -> bool:
        """LeanIX's token endpoint issues RS256 JWTs; anything else from it is invalid."""
        return urlsplit(self.token_url).path == LEANIX_TOKEN_PATH


def parse_source(
    name: str,
    data: Mapping[str, Any],
    version: int,
    allowed_hosts: tuple[str, ...],
    insecure_http_hosts: tuple[str, ...],
) -> Source:
    """Validate a source secret's fields. Raises `SourceError` naming the first bad field."""

    def text(key: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise SourceError(name, f"field {key!r} is missing")
            return None
        if not isinstance(value, str):
            raise SourceError(name, f"field {key!r} must be a string, not {type(value).__name__}")
        if len(value) > MAX_FIELD_LENGTH:
            raise SourceError(name, f"field {key!r} is longer than {MAX_FIELD_LENGTH} characters")
        return value.strip()

    api_token = text("api_token", required=True) or ""
    if not api_token:
        raise SourceError(name, "field 'api_token' is empty")
    if not _TOKEN_CHARS.match(api_token):
        raise SourceError(name, "field 'api_token' holds characters other than printable ASCII")

    client_id = text("client_id") or "apitoken"
    if not _TOKEN_CHARS.match(client_id) or ":" in client_id:
        raise SourceError(name, "field 'client_id' must be printable ASCII without ':'")

    host, token_url = text("host"), text("token_url")
    if bool(host) == bool(token_url):
        raise SourceError(name, "give exactly one of the fields 'host' and 'token_url'")
    if host:
        if not _HOSTNAME.match(host.lower()) or "." not in host:
            # Never echoed: a malformed value may carry credentials (`user:token@host`).
            raise SourceError(
                name, "field 'host' must be a bare hostname (no scheme, port, path or userinfo)"
            )
        url = f"https://{host.lower()}{LEANIX_TOKEN_PATH}"
    else:
        url = token_url or ""
    try:
        check_destination(url, allowed_hosts, insecure_http_hosts)
    except HostNotAllowed as exc:
        raise SourceError(name, f"field {'host' if host else 'token_url'!r}: {exc}") from None

    expires_at = None
    raw_expiry = text("api_token_expires_at")
    if raw_expiry:
        try:
            expires_at = parse_time(raw_expiry)
        except ValueError as exc:  # parse_time's messages never quote the value
            raise SourceError(name, f"field 'api_token_expires_at': {exc}") from None

    user_id = text("technical_user_id") or None
    if user_id is not None and not _USER_ID.match(user_id):
        raise SourceError(name, "field 'technical_user_id' is not a technical user's id")
    admin_source = text("admin_source") or None
    if admin_source is not None and not is_valid_name(admin_source):
        raise SourceError(name, "field 'admin_source' is not a source name")
    api_token_next = text("api_token_next") or None
    if api_token_next is not None and not _TOKEN_CHARS.match(api_token_next):
        raise SourceError(
            name, "field 'api_token_next' holds characters other than printable ASCII"
        )

    return Source(
        name=name,
        token_url=url,
        version=version,
        api_token=api_token,
        client_id=client_id,
        scope=text("scope") or None,
        api_token_expires_at=expires_at,
        technical_user_id=user_id,
        admin_source=admin_source,
        api_token_next=api_token_next,
    )


def is_valid_name(name: str) -> bool:
    """A token name as discovery produces it: `/`-separated segments below the source prefix,
    none of them empty, `.` or `..`, no control characters."""
    segments = name.split("/")
    return (
        bool(name)
        and name.isprintable()
        and all(segment not in ("", ".", "..") for segment in segments)
    )


def host_matches(hostname: str, pattern: str) -> bool:
    """Shell-style match of a hostname against a pattern; `*` stays within one DNS label.

    `*.leanix.net` matches `acme.leanix.net` but neither `leanix.net` nor `a.b.leanix.net`, the
    way a TLS wildcard certificate does: a wildcard never widens the allowlist across a dot, and
    never matches an empty label.
    """
    regex = "[a-z0-9-]+".join(re.escape(part) for part in pattern.lower().split("*"))
    return re.fullmatch(regex, hostname.lower()) is not None


def check_destination(
    url: str, allowed_hosts: tuple[str, ...], insecure_http_hosts: tuple[str, ...]
) -> None:
    """Raise `HostNotAllowed` unless a token may be sent to `url`.

    Allowed: http(s) URLs without userinfo, query or fragment whose hostname matches
    `allowed_hosts`, and https unless the hostname also matches `insecure_http_hosts`.
    A port is fine.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise HostNotAllowed("token URL is malformed") from None
    if parts.scheme not in ("https", "http"):
        raise HostNotAllowed(f"token URL scheme {parts.scheme!r} is not http(s)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise HostNotAllowed("token URL must not carry userinfo")
    if parts.query or parts.fragment:
        raise HostNotAllowed("token URL must not carry a query or fragment")
    if not hostname or not (_HOSTNAME.match(hostname) or _is_ip_literal(hostname)):
        raise HostNotAllowed("token URL has no valid hostname")
    if not any(host_matches(hostname, pattern) for pattern in allowed_hosts):
        raise HostNotAllowed(f"host {hostname!r} is not in exchange.allowed_hosts")
    if parts.scheme == "http" and not any(
        host_matches(hostname, pattern) for pattern in insecure_http_hosts
    ):
        raise HostNotAllowed(f"plain http to {hostname!r} is not in exchange.insecure_http_hosts")


def _is_ip_literal(hostname: str) -> bool:
    return re.fullmatch(r"[0-9.]+|[0-9a-f:]+", hostname) is not None
