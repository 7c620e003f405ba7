"""Source secrets and where their tokens may be sent. Pure: no I/O, no clock.

A source secret (SPEC, "Vault layout") becomes a `Source` only once every field checks out; a bad
one raises `SourceError` naming the field, never echoing the API token. `check_destination` is the
single gate every token URL passes, at parse time and again right before a request is sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from rotator.errors import HostNotAllowed, SourceError
from rotator.tokens import parse_time

LEANIX_TOKEN_PATH = "/services/mtm/v1/oauth2/token"  # noqa: S105 - a path, not a secret
MAX_FIELD_LENGTH = 8192

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_LABEL_ONLY = re.compile(rf"^{_LABEL}$")
_LEANIX_HOST = re.compile(r"^[a-z0-9-]+\.leanix\.net$", re.IGNORECASE)
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
        """LeanIX issues RS256 JWTs; anything else from it is invalid. True for any LeanIX host
        (one label of letters, digits and `-` under `leanix.net`, as LeanIX's own tooling
        accepts) whatever the path, and for any host whose path is LeanIX's token path however
        it is spelled (a local stand-in, a proxy): `.../oauth2/./token`, `.../token/`,
        `//services/...` and `%74oken` reach the same endpoint, so they must not turn the
        requirement off."""
        parts = urlsplit(self.token_url)
        if _LEANIX_HOST.match(parts.hostname or ""):
            return True
        return normalised_path(parts.path) == LEANIX_TOKEN_PATH.lower()


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


def normalised_path(path: str) -> str:
    """`path` as some server may read it, for comparing against a known path; errs towards
    matching. Percent-escapes decoded (of any case, twice-encoded ones too), `\\` read as `/`,
    `;` parameters dropped, empty and `.` segments dropped, `..` resolved (never above the
    root), a trailing `/` ignored, lower-cased."""
    for _ in range(3):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    segments: list[str] = []
    for raw in path.replace("\\", "/").split("/"):
        segment = raw.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments).lower()


def is_valid_name(name: str) -> bool:
    """Whether `check_name` accepts `name`."""
    try:
        check_name(name)
    except SourceError:
        return False
    return True


def check_name(name: str) -> None:
    """Refuse a token name (a source's path below the prefix, also used below the output
    prefix and in claims) that could address another secret or garble a log line: empty, with
    a leading `/`, an empty, `.` or `..` segment, or a control character. Raises `SourceError`
    (its message shows the name escaped)."""
    if not name:
        raise SourceError(name, "token name is empty")
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise SourceError(name, "token name holds a control character")
    if name.startswith("/"):
        raise SourceError(name, "token name starts with '/'")
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        raise SourceError(name, "token name has an empty, '.' or '..' segment")


def host_matches(hostname: str, pattern: str) -> bool:
    """Whether a hostname matches an allowlist pattern, case-insensitively.

    A pattern is a literal hostname or IP address, or `*.` and at least two literal labels: the
    `*` stands for exactly one whole DNS label, as in a TLS wildcard certificate.
    `*.leanix.net` matches `acme.leanix.net` but neither `leanix.net` nor `a.b.leanix.net`. Any
    other pattern with a `*` (config refuses them) matches nothing.
    """
    hostname, pattern = hostname.lower(), pattern.lower()
    if pattern.startswith("*."):
        rest = pattern[2:]
        if "*" in rest or "." not in rest:
            return False
        label, dot, host_rest = hostname.partition(".")
        return bool(dot) and _LABEL_ONLY.match(label) is not None and host_rest == rest
    return "*" not in pattern and hostname == pattern


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
