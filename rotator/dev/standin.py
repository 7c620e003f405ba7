"""A local stand-in for LeanIX's token endpoint and MTM technical users: real HTTP(S), RS256 JWTs,
injectable faults.

Used by `rotator demo`, by the test suite and for trials; never in production. It answers
`POST /services/mtm/v1/oauth2/token` the way LEANIX.md describes LeanIX doing it: HTTP Basic
`client_id:api_token`, `grant_type=client_credentials` in the form body (or, as LeanIX also
accepts, the query string), and a JSON answer carrying a JWT whose claims look like LeanIX's.

One consumer-facing API sits behind those access tokens, so a consumer's token can be shown to
work: `POST /services/pathfinder/v1/graphql` with `Authorization: Bearer <access token>` and a
JSON body holding a `query` answers 200 and one fixed small document for any query. A bearer token
opens it only if this stand-in signed it (RS256, its own key, its own issuance), it has not
expired, and the API token it was issued for is still registered and not revoked; anything else
is 401. Every API behind an access token uses that one check (`_bearer_claims`). MTM's
technical-users API (below) is the other one: it lists the technical users that own the API
tokens and replaces their tokens.

Contracts:
- It listens on 127.0.0.1 only; `stop()` closes every connection, including idle keep-alive ones,
  so a client cannot keep talking to a stopped stand-in through its connection pool.
- Faults (`set_fault`) are thread-safe and are taken at the start of a request to the token path;
  they never touch the API. `latency_seconds` delays every request, the API's too.
  Transport faults ("status", "garbage", "close", "redirect", "huge", "deep", "hang", "drip")
  apply to any request, authenticated or not; body faults ("no_access_token", "expired", "not_jwt",
  "expires_in") alter an answer that would have succeeded, so they need a valid token.
- Tokens never reach a log line, an error body or a record: records keep a fingerprint.
- `cryptography` is an optional dependency (`rotator[demo]`); without it, construction raises.

Technical users and the MTM API (`/services/mtm/v1/technicalusers`, LEANIX.md "Technical users"):
- Every API token belongs to one technical user (`add_token` returns its id, which is the JWT's
  `principal.id`), in one workspace: `userName` (unique in the workspace), `email`,
  `permissionRole`, `workspaceId`, `accountId` (one per workspace), `apiTokenData` {`id`,
  `expiry`, `description`}. A technical user holds one current API token; the token endpoint
  refuses (401) a token that was replaced, revoked, is past its expiry or whose user was deleted.
- `GET /technicalusers?page=&size=&sort=&queryUserName=`, `GET /technicalusers/{id}` and
  `PUT /technicalusers/{id}/replaceToken` need `Authorization: Bearer <access token>` that opens
  the consumer API (`_bearer_claims`), else 401; the caller's workspace is the token's
  `principal.permission.workspaceId` and its `principal.permission.role` must be ADMIN, else 403.
  Users of other workspaces do not exist for the caller (404). Success is
  `{"status": "OK", "type", "message": null, "errors": [], "data"}` (lists add `"total"`), failure
  `{"status": "ERROR", "type", "message", "errors": [{"message", "messages"}], "data": null}`;
  no answer but replaceToken's carries a token, and that one only the new API token.
- replaceToken invalidates the old API token at once; access tokens issued for it stay valid
  until their `exp` (`revoke` instead ends those too). The new expiry is now + the user's token
  validity (365 days), or the old expiry with `replace_keeps_expiry`. `expiry` goes out as ISO
  8601 UTC with `Z`, to the millisecond like a Java `Instant` (`2027-12-01T10:00:00Z`,
  `...T10:00:00.250Z`), or as epoch milliseconds with `expiry_format="epoch_ms"`.
- MTM faults (`set_mtm_fault`) are separate from the token endpoint's, thread-safe, optionally
  limited to a path pattern, and taken before authentication ("drop_after_replace": after a
  replacement that really happened). Every MTM request is recorded (`mtm_requests`) without
  headers: method, path, paging parameters, status, the caller's technical-user id.
- Assumptions about LeanIX, none documented by it: an ADMIN role is needed and enough; the old
  token dies at once; access tokens outlive a replacement; a replacement restarts the validity;
  an API token past its expiry is refused at the token endpoint; the sort is case-insensitive;
  `queryUserName` is a case-insensitive substring match; `type` values are the stand-in's own;
  the token field is absent (not null) where there is none.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import fnmatch
import json
import logging
import secrets
import socket
import socketserver
import ssl
import sys
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError:  # pragma: no cover - exercised only where the extra is not installed
    _HAVE_CRYPTOGRAPHY = False
else:
    _HAVE_CRYPTOGRAPHY = True

from rotator.redact import fingerprint
from rotator.sources import LEANIX_TOKEN_PATH

logger = logging.getLogger(__name__)

TOKEN_PATH = LEANIX_TOKEN_PATH
GRAPHQL_PATH = "/services/pathfinder/v1/graphql"
GRAPHQL_ANSWER: dict[str, Any] = {"data": {"allFactSheets": {"totalCount": 0}}}
MAX_REQUEST_BYTES = 64 * 1024
CONNECTION_TIMEOUT = 30.0  # an idle or stalled client cannot pin a handler thread for longer
STOP_GRACE_SECONDS = 5.0

# mode -> (required params, optional params)
_FAULTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "status": (frozenset({"status"}), frozenset({"retry_after", "body"})),
    "garbage": (frozenset(), frozenset()),
    "no_access_token": (frozenset(), frozenset()),
    "expired": (frozenset(), frozenset()),
    "not_jwt": (frozenset(), frozenset()),
    "expires_in": (frozenset({"value"}), frozenset()),
    "hang": (frozenset({"seconds"}), frozenset()),
    "close": (frozenset(), frozenset()),
    "redirect": (frozenset(), frozenset({"location"})),
    "huge": (frozenset(), frozenset({"size"})),
    "deep": (frozenset(), frozenset({"depth"})),
    "drip": (frozenset({"interval"}), frozenset({"status"})),
}
_BODY_FAULTS = frozenset({"no_access_token", "expired", "not_jwt", "expires_in"})

# -- the MTM technical-users API (LEANIX.md "Technical users") --------------------------------
MTM_PATH = "/services/mtm/v1"
TECHNICAL_USERS_PATH = MTM_PATH + "/technicalusers"
DEFAULT_TOKEN_VALIDITY = timedelta(days=365)
MTM_DEFAULT_PAGE_SIZE = 30
MTM_MAX_PAGE_SIZE = 100
EXPIRY_FORMATS = frozenset({"iso", "epoch_ms"})
_MTM_QUERY_KEYS = ("page", "size", "sort", "queryUserName")  # recorded; nothing else is
_MTM_SORTS = {"userName-ASC": False, "userName-DESC": True}  # -> reverse
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# mode -> (required params, optional params), as _FAULTS
_MTM_FAULTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "status": (frozenset({"status"}), frozenset({"body", "retry_after"})),
    "drop_after_replace": (frozenset(), frozenset()),
    "hang": (frozenset({"seconds"}), frozenset({"then"})),
    "garbage": (frozenset(), frozenset()),
    "close": (frozenset(), frozenset()),
}


@dataclass(frozen=True)
class Issued:
    """One access token the stand-in handed out (in a 200 answer), identified without the token."""

    api_token_fingerprint: str
    jti: str
    issued_at: datetime
    exp: int


@dataclass(frozen=True)
class RequestRecord:
    """What a request looked like, minus its secrets: for asserting how a client calls."""

    method: str
    path: str
    client_id: str | None
    api_token_fingerprint: str | None
    grant_type_in: tuple[str, ...]  # where grant_type appeared: "body", "query", both or neither
    content_type: str | None
    scope: str | None
    header_names: tuple[str, ...] = ()  # lower-cased, in the order sent; no values
    accept_encoding: str | None = None
    cookie: str | None = None  # the Cookie header as sent (the stand-in's cookies hold no secret)


@dataclass(frozen=True)
class TechnicalUser:
    """A snapshot of one technical user as the stand-in holds it; its API token only as a
    fingerprint. `expiry` is aware, to the millisecond (what MTM sends)."""

    id: str
    user_name: str
    email: str | None
    role: str
    workspace_id: str
    workspace_name: str
    account_id: str
    client_id: str
    token_id: str
    expiry: datetime
    description: str
    api_token_fingerprint: str
    token_validity: timedelta
    replace_keeps_expiry: bool
    replacements: int


@dataclass(frozen=True)
class MtmRequest:
    """One request to the MTM technical-users API, minus its headers (they carry the bearer).

    `query` keeps only `page`, `size`, `sort` and `queryUserName`. `status` is what was answered,
    None when the connection was closed unanswered ("close", "drop_after_replace", a stop during
    "hang"). `caller_id` is the bearer's technical-user id once authenticated, else None. `fault`
    names the MTM fault that shaped the answer, if any."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    status: int | None
    caller_id: str | None
    fault: str | None


@dataclass
class _Registration:
    """One API token: whose it is, and whether the token endpoint still takes it."""

    user_id: str
    revoked: bool = False  # `revoke`: refused, and so are the access tokens issued for it
    replaced: bool = False  # replaceToken: refused; its access tokens live on until their exp


@dataclass
class _Workspace:
    name: str
    account_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class _TechnicalUser:
    user_id: str
    user_name: str
    email: str | None
    role: str
    workspace_id: str
    workspace_name: str
    account_id: str
    client_id: str
    api_token: str = field(repr=False)  # the current one
    token_id: str
    expiry: datetime
    description: str
    token_validity: timedelta | None  # None: the stand-in's
    replace_keeps_expiry: bool | None  # None: the stand-in's
    permission_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    replacements: int = 0


@dataclass(frozen=True)
class _MtmAnswer:
    status: int
    document: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    caller_id: str | None = None
    replaced: bool = False  # a replaceToken that happened: "drop_after_replace" may apply


@dataclass
class _Fault:
    mode: str
    remaining: int | None
    params: dict[str, Any]


class LeanIXStandIn:
    """The token endpoint on 127.0.0.1. `start()`/`stop()`, or use it as a context manager."""

    def __init__(
        self,
        port: int = 0,
        *,
        lifetime_seconds: int = 3599,
        ssl_context: ssl.SSLContext | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        expiry_format: str = "iso",
        replace_keeps_expiry: bool = False,
        token_validity: timedelta = DEFAULT_TOKEN_VALIDITY,
    ) -> None:
        """`private_key` lets a test suite share one RSA key (generating one takes ~0.1 s).

        MTM options, each also an attribute: `expiry_format` ("iso" or "epoch_ms") is how
        `apiTokenData.expiry` goes out; `replace_keeps_expiry` makes replaceToken keep the old
        expiry instead of restarting `token_validity`; `token_validity` is how long a new or
        replaced API token lasts (a technical user's own option, from `add_token`, wins)."""
        if expiry_format not in EXPIRY_FORMATS:
            raise ValueError(f"expiry_format must be one of {', '.join(sorted(EXPIRY_FORMATS))}")
        if not _HAVE_CRYPTOGRAPHY:
            raise RuntimeError(
                "the LeanIX stand-in signs JWTs with 'cryptography': install rotator[demo]"
            )
        self._key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lifetime_seconds = lifetime_seconds
        self.latency_seconds = 0.0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a connection ends
        self._stopping = threading.Event()  # wakes sleeping handlers ("hang", latency) on stop
        self._tokens: dict[str, _Registration] = {}
        self._faults: dict[str | None, _Fault] = {}  # keyed by api token; None = every request
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._requests_total = 0
        self._requests_by_token: dict[str, int] = {}
        self._issued: list[Issued] = []
        self._issued_for: dict[str, str] = {}  # jti -> api token, for the bearer check
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections_total = 0
        # Extra headers on every answer, e.g. a Set-Cookie as load balancers add; replace the
        # dict to change them (read once per answer).
        self.answer_headers: dict[str, str] = {}
        self._last_request: RequestRecord | None = None
        # -- MTM: technical users, workspaces, faults, requests
        self.expiry_format = expiry_format
        self.replace_keeps_expiry = replace_keeps_expiry
        self.token_validity = token_validity
        self._users: dict[str, _TechnicalUser] = {}
        self._workspaces: dict[str, _Workspace] = {}
        self._mtm_faults: dict[str | None, _Fault] = {}  # keyed by path pattern; None = every one
        self._mtm_requests: list[MtmRequest] = []
        self._server = _Server(self, port, ssl_context)
        scheme = "https" if ssl_context else "http"
        self._base_url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve in a daemon thread; returns self. A stopped stand-in cannot be restarted."""
        if self._stopped or self._thread is not None:
            raise RuntimeError("the stand-in was already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # shutdown() waits up to one poll interval; the default 0.5 s adds up over a test suite
            kwargs={"poll_interval": 0.05},
            name="leanix-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every open connection and close the socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        with self._lock:
            for connection in self._connections:
                # socket.socket's own shutdown even for TLS: SSLSocket.shutdown would drop its
                # SSL object under the handler thread that is blocked reading from it.
                with contextlib.suppress(OSError):  # already gone
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)
            # Handler threads are daemons; waiting for them keeps a late write from landing after
            # the caller believes the stand-in is gone.
            self._idle.wait_for(lambda: not self._connections, timeout=STOP_GRACE_SECONDS)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def token_url(self) -> str:
        return self._base_url + TOKEN_PATH

    @property
    def graphql_url(self) -> str:
        """The consumer API an access token opens (Bearer), as LeanIX's Pathfinder GraphQL."""
        return self._base_url + GRAPHQL_PATH

    @property
    def mtm_url(self) -> str:
        """MTM's base (the token URL without `/oauth2/token`); `/technicalusers` is below it."""
        return self._base_url + MTM_PATH

    def public_key_pem(self) -> bytes:
        """The key that verifies every JWT this stand-in signs (SubjectPublicKeyInfo PEM)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- token registry -------------------------------------------------------------------------

    def add_token(
        self,
        api_token: str,
        *,
        workspace_id: str | None = None,
        workspace_name: str | None = None,
        role: str = "ADMIN",
        client_id: str = "apitoken",
        user_name: str | None = None,
        expiry: datetime | None = None,
        email: str | None = None,
        description: str | None = None,
        token_validity: timedelta | None = None,
        replace_keeps_expiry: bool | None = None,
    ) -> str:
        """Accept `api_token` (with Basic user `client_id`) as the API token of a new technical
        user, and return that user's id (the JWT's `principal.id`).

        The user lives in workspace `workspace_id` (a new one when None), named `workspace_name`
        (default: the workspace's name, else "demo"), with role `role`. `user_name` (default
        "<workspace name>-technical-user-<n>") must be unique in the workspace, else ValueError.
        `expiry` (aware; default now + the token validity) is when the API token stops working.
        `token_validity` and `replace_keeps_expiry` override the stand-in's for this user.

        Re-adding a technical user's current API token updates that user instead (same id; the
        arguments given replace what they name, workspace and name stay when None) and
        un-revokes the token. A token that was replaced, or whose user was deleted, makes a new
        user."""
        if expiry is not None:
            expiry = _to_millisecond(expiry)
        with self._lock:
            registration = self._tokens.get(api_token)
            user = None
            if registration is not None and not registration.replaced:
                user = self._users.get(registration.user_id)
            if user is not None and registration is not None:
                self._place(user, workspace_id, workspace_name, user_name)
                user.role, user.client_id = role, client_id
                if expiry is not None:
                    user.expiry = expiry
                if email is not None:
                    user.email = email
                if description is not None:
                    user.description = description
                if token_validity is not None:
                    user.token_validity = token_validity
                if replace_keeps_expiry is not None:
                    user.replace_keeps_expiry = replace_keeps_expiry
                registration.revoked = False
                return user.user_id
            workspace_id = workspace_id or str(uuid.uuid4())
            workspace = self._workspace(workspace_id, workspace_name)
            name = workspace_name or workspace.name
            user = _TechnicalUser(
                user_id=str(uuid.uuid4()),
                user_name=self._free_user_name(workspace_id, name, user_name),
                email=email,
                role=role,
                workspace_id=workspace_id,
                workspace_name=name,
                account_id=workspace.account_id,
                client_id=client_id,
                api_token=api_token,
                token_id=str(uuid.uuid4()),
                expiry=expiry or _to_millisecond(datetime.now(UTC) + self._validity(None)),
                description=description if description is not None else "stand-in API token",
                token_validity=token_validity,
                replace_keeps_expiry=replace_keeps_expiry,
            )
            self._users[user.user_id] = user
            self._tokens[api_token] = _Registration(user.user_id)
            return user.user_id

    def revoke(self, api_token: str) -> None:
        """Answer 401 for `api_token` from now on. KeyError if it was never added."""
        with self._lock:
            self._tokens[api_token].revoked = True

    def restore(self, api_token: str) -> None:
        """Undo `revoke`. KeyError if the token was never added."""
        with self._lock:
            self._tokens[api_token].revoked = False

    def set_principal(
        self,
        api_token: str,
        *,
        workspace_id: str | None = None,
        workspace_name: str | None = None,
        role: str | None = None,
    ) -> None:
        """Change who the next JWTs for `api_token` speak for (its technical user: moving it to
        another workspace moves it at MTM too); None leaves a field as it is. KeyError if the
        token was never added or its user was deleted."""
        with self._lock:
            user = self._users[self._tokens[api_token].user_id]
            self._place(user, workspace_id, workspace_name, None)
            if role is not None:
                user.role = role

    # -- technical users (MTM) ------------------------------------------------------------------

    def add_workspace(
        self, workspace_name: str = "demo", *, workspace_id: str | None = None
    ) -> str:
        """A workspace (with its own account) for `add_token(..., workspace_id=...)`; returns
        its id. ValueError if `workspace_id` exists already."""
        workspace_id = workspace_id or str(uuid.uuid4())
        with self._lock:
            if workspace_id in self._workspaces:
                raise ValueError("that workspace exists already")
            self._workspaces[workspace_id] = _Workspace(workspace_name)
        return workspace_id

    def technical_user(self, user_id: str) -> TechnicalUser:
        """A snapshot of technical user `user_id`. KeyError if there is none (or it was deleted)."""
        with self._lock:
            return self._snapshot(self._users[user_id])

    def technical_users(self, workspace_id: str | None = None) -> list[TechnicalUser]:
        """Snapshots of every technical user (of `workspace_id` only, if given), in MTM's order."""
        with self._lock:
            users = [
                self._snapshot(user)
                for user in self._users.values()
                if workspace_id is None or user.workspace_id == workspace_id
            ]
        return sorted(users, key=lambda user: (user.user_name.casefold(), user.user_name, user.id))

    def current_api_token(self, user_id: str) -> str:
        """The API token the stand-in holds for `user_id` now (the latest replacement's).
        KeyError for an unknown or deleted user. Compare it; never print it."""
        with self._lock:
            return self._users[user_id].api_token

    def accepts(self, api_token: str) -> bool:
        """Whether the token endpoint would issue an access token for `api_token` now (with its
        technical user's client id): registered, current, not revoked, not past its expiry."""
        with self._lock:
            registration = self._tokens.get(api_token)
            user = self._users.get(registration.user_id) if registration is not None else None
            client_id = user.client_id if user is not None else ""
        return self._registration(client_id, api_token) is not None

    def replacements(self, user_id: str) -> int:
        """How often replaceToken replaced `user_id`'s API token. KeyError for an unknown user."""
        with self._lock:
            return self._users[user_id].replacements

    def set_expiry(self, user_id: str, when: datetime) -> None:
        """Set the expiry of `user_id`'s current API token (aware; kept to the millisecond).
        Past it, the token endpoint refuses the token. KeyError for an unknown user."""
        when = _to_millisecond(when)
        with self._lock:
            self._users[user_id].expiry = when

    def delete_technical_user(self, user_id: str) -> None:
        """Delete `user_id` as MTM would: from now on MTM answers 404 for it, the token endpoint
        401 for each of its API tokens, and its access tokens open nothing. KeyError if unknown."""
        with self._lock:
            del self._users[user_id]
            for api_token in [t for t, r in self._tokens.items() if r.user_id == user_id]:
                del self._tokens[api_token]

    # -- faults ---------------------------------------------------------------------------------

    def set_fault(
        self, mode: str, *, count: int | None = None, api_token: str | None = None, **params: Any
    ) -> None:
        """Misbehave for the next `count` token requests (None: until `clear_faults`).

        With `api_token`, only requests carrying that token are affected, and such a fault wins
        over one for every request. Setting a fault replaces the previous one of the same scope.
        A request consumes the fault even when, as with a body fault and a bad token, it has no
        effect. Unknown modes, missing or unknown params raise ValueError.

        Answered whatever the credentials:
          "status"    that status; params `status`, optional `retry_after` (header), `body` (bytes)
          "garbage"   200 with an HTML body        "close"  the connection closes unanswered
          "redirect"  302 to param `location` (default: a dead port on 127.0.0.1)
          "huge"      200 with `size` bytes of JSON (default 1 MiB)
          "deep"      200 with JSON `depth` levels deep (default 100 000)
          "hang"      wait `seconds` (other requests go on), then answer normally
          "drip"      send the status line (`status`, default 200), then one header byte every
                      `interval` seconds, never ending the headers, until the client leaves or
                      the stand-in stops
        Altering a successful answer (a valid token is needed):
          "no_access_token", "expired" (`"expired": true`), "not_jwt" ("opaque-token-value"),
          "expires_in" (param `value`, sent as given: 0, -5, "3599", ...)
        """
        if mode not in _FAULTS:
            raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(sorted(_FAULTS))}")
        required, optional = _FAULTS[mode]
        if missing := required - params.keys():
            raise ValueError(f"fault {mode!r} needs {', '.join(sorted(missing))}")
        if unknown := params.keys() - required - optional:
            raise ValueError(f"fault {mode!r} takes no {', '.join(sorted(unknown))}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for 'until cleared'")
        with self._lock:
            self._faults[api_token] = _Fault(mode, count, params)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, api_token: str | None) -> _Fault | None:
        with self._lock:
            key = api_token if api_token in self._faults else None
            fault = self._faults.get(key)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[key]
            return fault

    def set_mtm_fault(
        self, mode: str, *, count: int | None = None, path: str | None = None, **params: Any
    ) -> None:
        """Misbehave for the next `count` MTM requests (None: until `clear_mtm_faults`).

        MTM faults never touch the token endpoint or the consumer API, nor do `set_fault`'s
        touch MTM. With `path`, a shell-style pattern (`fnmatch`, `*` crosses `/`) matched
        against the path below `mtm_url` or the whole path ("/technicalusers",
        "/technicalusers/*/replaceToken", "*/replaceToken"), only matching requests are
        affected, and such a fault wins over one for every request. Setting a fault replaces the
        previous one for the same `path`. Faults are taken before authentication, so any request
        consumes one. Unknown modes, missing or unknown params raise ValueError.

          "status"    that status; params `status`, optional `body` (bytes, or a dict sent as
                      JSON; default an MTM error document) and `retry_after` (header)
          "garbage"   200 with an HTML body          "close"  the connection closes unanswered
          "hang"      wait `seconds` (other requests go on), then answer normally; with
                      `then="close"`, close the connection instead, having done nothing
          "drop_after_replace"
                      a replaceToken is performed (the old API token dies, the new one works),
                      then the connection closes unanswered: the client never sees the new
                      token. Only a replacement that happened consumes it.
        """
        if mode not in _MTM_FAULTS:
            known = ", ".join(sorted(_MTM_FAULTS))
            raise ValueError(f"unknown MTM fault mode {mode!r}; known: {known}")
        required, optional = _MTM_FAULTS[mode]
        if missing := required - params.keys():
            raise ValueError(f"MTM fault {mode!r} needs {', '.join(sorted(missing))}")
        if unknown := params.keys() - required - optional:
            raise ValueError(f"MTM fault {mode!r} takes no {', '.join(sorted(unknown))}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for 'until cleared'")
        with self._lock:
            self._mtm_faults[path] = _Fault(mode, count, params)

    def clear_mtm_faults(self) -> None:
        with self._lock:
            self._mtm_faults.clear()

    def _take_mtm_fault(self, relative: str, *, after_replace: bool) -> _Fault | None:
        """The MTM fault for a request to `relative` (below MTM_PATH), consumed; only
        "drop_after_replace" when `after_replace`, never it otherwise."""
        with self._lock:
            patterns = [key for key in self._mtm_faults if key is not None]
            for key in [*patterns, None]:
                fault = self._mtm_faults.get(key)
                if fault is None or (fault.mode == "drop_after_replace") != after_replace:
                    continue
                if key is not None and not _matches(key, relative):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._mtm_faults[key]
                return fault
        return None

    # -- counters -------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        with self._lock:
            self._requests_total = 0
            self._requests_by_token = {}
            self._issued = []
            self._max_in_flight = self._in_flight
            self._last_request = None
            self._connections_total = 0
            self._mtm_requests = []

    @property
    def requests_total(self) -> int:
        """Every HTTP request answered or refused, whatever its path."""
        with self._lock:
            return self._requests_total

    @property
    def issued(self) -> list[Issued]:
        """A copy of the issuance records, oldest first."""
        with self._lock:
            return list(self._issued)

    @property
    def max_in_flight(self) -> int:
        """The most requests handled at the same time since the last `reset_counters`."""
        with self._lock:
            return self._max_in_flight

    @property
    def connections_total(self) -> int:
        """TCP connections accepted since the last `reset_counters` (keep-alive reuses one)."""
        with self._lock:
            return self._connections_total

    @property
    def last_request(self) -> RequestRecord | None:
        with self._lock:
            return self._last_request

    def issued_count(self, api_token: str) -> int:
        """Access tokens issued for `api_token` since the last `reset_counters`."""
        wanted = fingerprint(api_token)
        with self._lock:
            return sum(1 for record in self._issued if record.api_token_fingerprint == wanted)

    def requests_for(self, api_token: str) -> int:
        """Requests whose Basic credentials carried `api_token`, valid or not."""
        with self._lock:
            return self._requests_by_token.get(api_token, 0)

    @property
    def mtm_requests(self) -> list[MtmRequest]:
        """A copy of the MTM request records since the last `reset_counters`, oldest first. A
        record is added before its answer is sent, so a client that got an answer finds it."""
        with self._lock:
            return list(self._mtm_requests)

    def mtm_count(self, method: str | None = None, path: str | None = None) -> int:
        """MTM requests since the last `reset_counters` with that method (any when None) and a
        path matching the pattern `path` (as for `set_mtm_fault`; any when None)."""
        with self._lock:
            return sum(
                1
                for record in self._mtm_requests
                if (method is None or record.method == method)
                and (path is None or _matches(path, record.path[len(MTM_PATH) :]))
            )

    # -- used by the request handler ------------------------------------------------------------

    def _begin(self, record: RequestRecord, api_token: str | None) -> None:
        with self._lock:
            self._requests_total += 1
            if api_token is not None:
                self._requests_by_token[api_token] = self._requests_by_token.get(api_token, 0) + 1
            self._last_request = record
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _pause(self, seconds: float) -> bool:
        """Sleep without blocking other requests; False when the stand-in stopped meanwhile."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    def _registration(self, client_id: str, api_token: str) -> _TechnicalUser | None:
        """The technical user the token endpoint issues for, or None: `api_token` unknown,
        revoked, replaced, past its expiry, its user deleted, or another `client_id`."""
        with self._lock:
            registration = self._tokens.get(api_token)
            if registration is None or registration.revoked or registration.replaced:
                return None
            user = self._users.get(registration.user_id)
            if user is None or user.expiry <= datetime.now(UTC):
                return None
            if not secrets.compare_digest(user.client_id, client_id):
                return None
            return replace(user)  # a snapshot, consistent for one answer

    def _issue(self, api_token: str, registration: _TechnicalUser) -> tuple[str, int]:
        """A signed JWT for `registration` and the lifetime announced with it."""
        lifetime = self.lifetime_seconds
        now = datetime.now(UTC)
        exp = int(now.timestamp() + lifetime)
        jti = str(uuid.uuid4())
        claims = {
            "exp": exp,
            "iss": self._base_url,
            "jti": jti,
            "sub": f"technical-user/{registration.user_id}",
            "instanceUrl": self._base_url,
            "principal": {
                "id": registration.user_id,
                "username": registration.user_name,
                "role": registration.role,
                "status": "ACTIVE",
                "account": {"id": registration.account_id, "name": registration.workspace_name},
                "permission": {
                    "id": registration.permission_id,
                    "workspaceId": registration.workspace_id,
                    "workspaceName": registration.workspace_name,
                    "role": registration.role,
                    "status": "ACTIVE",
                    "customerRoles": [],
                },
            },
        }
        token = self._sign({"alg": "RS256", "typ": "JWT"}, claims)
        with self._lock:
            self._issued.append(Issued(fingerprint(api_token), jti, now, exp))
            self._issued_for[jti] = api_token
        return token, lifetime

    def _bearer_claims(self, headers: Message) -> dict[str, Any] | None:
        """The claims of the request's `Authorization: Bearer <JWT>`, or None unless this
        stand-in issued that JWT: RS256 with its own key, a `jti` it handed out, `exp` still
        ahead, and the API token it was issued for still registered and not revoked, to a
        technical user that still exists. A token replaced since (replaceToken) still counts:
        its access tokens live until their `exp`."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        claims = self._signed_claims(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            return None
        if exp <= datetime.now(UTC).timestamp():
            return None
        with self._lock:
            api_token = self._issued_for.get(str(claims.get("jti")))
            registration = self._tokens.get(api_token) if api_token is not None else None
            if registration is None or registration.revoked:
                return None
            if not self._issued_to_live_user(claims, registration):
                return None
        return claims

    # -- MTM, used by the request handler ------------------------------------------------------

    def _issued_to_live_user(self, claims: dict[str, Any], registration: _Registration) -> bool:
        """Whether the token's technical user still exists and is the one the JWT names (a token
        re-added for a new user after a deletion does not revive the old user's access tokens).
        The caller holds the lock."""
        principal = claims.get("principal")
        return (
            registration.user_id in self._users
            and isinstance(principal, dict)
            and principal.get("id") == registration.user_id
        )

    def _mtm_answer(
        self, method: str, relative: str, query_args: dict[str, list[str]], headers: Message
    ) -> _MtmAnswer:
        """What MTM answers to `method` `relative` (a path below MTM_PATH, under
        /technicalusers): 401 without a bearer that opens the consumer API, 403 for a caller
        whose workspace role is not ADMIN, 404/405 for unknown paths and methods, then the
        listing, one user, or a replacement (`replaced` set)."""
        claims = self._bearer_claims(headers)
        if claims is None:
            return _mtm_error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer realm="LeanIX"'})
        principal = claims.get("principal")
        permission = principal.get("permission") if isinstance(principal, dict) else None
        if not isinstance(principal, dict) or not isinstance(permission, dict):
            return _mtm_error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer realm="LeanIX"'})
        caller_id = str(principal.get("id"))
        workspace_id = str(permission.get("workspaceId"))
        if permission.get("role") != "ADMIN":
            answer = _mtm_error(403, "Forbidden: this needs the workspace role ADMIN")
            return replace(answer, caller_id=caller_id)
        parts = relative.split("/")  # "", "technicalusers", [id, ["replaceToken"]]
        if len(parts) == 2:
            answer = self._mtm_list(method, workspace_id, query_args)
        elif len(parts) == 3 and parts[2]:
            answer = self._mtm_get(method, workspace_id, parts[2])
        elif len(parts) == 4 and parts[2] and parts[3] == "replaceToken":
            answer = self._mtm_replace(method, workspace_id, parts[2])
        else:
            answer = _mtm_error(404, "Not found")
        return replace(answer, caller_id=caller_id)

    def _mtm_list(
        self, method: str, workspace_id: str, query_args: dict[str, list[str]]
    ) -> _MtmAnswer:
        if method != "GET":
            return _mtm_error(405, "Method not allowed", {"Allow": "GET"})
        page = _int_arg(query_args, "page", 1)
        size = _int_arg(query_args, "size", MTM_DEFAULT_PAGE_SIZE)
        if page is None or page < 1:
            return _mtm_error(400, "page must be an integer of at least 1")
        if size is None or not 1 <= size <= MTM_MAX_PAGE_SIZE:
            return _mtm_error(400, f"size must be an integer from 1 to {MTM_MAX_PAGE_SIZE}")
        sort = _first(query_args, "sort") or "userName-ASC"
        if sort not in _MTM_SORTS:
            return _mtm_error(400, f"sort must be one of {', '.join(_MTM_SORTS)}")
        wanted = (_first(query_args, "queryUserName") or "").casefold()
        users = [
            user
            for user in self.technical_users(workspace_id)
            if wanted in user.user_name.casefold()
        ]
        if _MTM_SORTS[sort]:
            users.reverse()
        shown = users[(page - 1) * size : page * size]
        documents = [self._user_document(user) for user in shown]
        return _MtmAnswer(200, _mtm_ok("TechnicalUserListResponse", documents, total=len(users)))

    def _mtm_get(self, method: str, workspace_id: str, user_id: str) -> _MtmAnswer:
        if method != "GET":
            return _mtm_error(405, "Method not allowed", {"Allow": "GET"})
        with self._lock:
            user = self._users.get(user_id)
            snapshot = self._snapshot(user) if user is not None else None
        if snapshot is None or snapshot.workspace_id != workspace_id:
            return _mtm_error(404, "Technical user not found")
        return _MtmAnswer(200, _mtm_ok("TechnicalUserResponse", self._user_document(snapshot)))

    def _mtm_replace(self, method: str, workspace_id: str, user_id: str) -> _MtmAnswer:
        """replaceToken: a new API token for the same user, the old one refused from now on."""
        if method != "PUT":
            return _mtm_error(405, "Method not allowed", {"Allow": "PUT"})
        new_token = "standin-" + secrets.token_urlsafe(32)
        with self._lock:
            user = self._users.get(user_id)
            if user is None or user.workspace_id != workspace_id:
                return _mtm_error(404, "Technical user not found")
            old_token = user.api_token
            if (old := self._tokens.get(old_token)) is not None:
                old.replaced = True
            keeps = user.replace_keeps_expiry
            if not (self.replace_keeps_expiry if keeps is None else keeps):
                user.expiry = _to_millisecond(datetime.now(UTC) + self._validity(user))
            user.api_token, user.token_id = new_token, str(uuid.uuid4())
            user.replacements += 1
            self._tokens[new_token] = _Registration(user.user_id)
            snapshot = self._snapshot(user)
        logger.debug(
            "stand-in replaced the API token of technical user %s: %s -> %s",
            user_id,
            fingerprint(old_token),
            fingerprint(new_token),
        )
        document = self._user_document(snapshot)
        document["apiTokenData"]["token"] = new_token
        return _MtmAnswer(200, _mtm_ok("TechnicalUserResponse", document), replaced=True)

    def _user_document(self, user: TechnicalUser) -> dict[str, Any]:
        """TechnicalUserData as MTM sends it, without a token."""
        return {
            "id": user.id,
            "userName": user.user_name,
            "email": user.email,
            "permissionRole": user.role,
            "customerRoles": None,
            "accountId": user.account_id,
            "workspaceId": user.workspace_id,
            "apiTokenData": {
                "id": user.token_id,
                "expiry": self._wire_expiry(user.expiry),
                "description": user.description,
            },
        }

    def _wire_expiry(self, when: datetime) -> str | int:
        if self.expiry_format == "epoch_ms":
            return (when - _EPOCH) // timedelta(milliseconds=1)
        utc = when.astimezone(UTC)
        millis = utc.microsecond // 1000
        fraction = f".{millis:03d}" if millis else ""
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"

    def _record_mtm(
        self,
        method: str,
        path: str,
        query_args: dict[str, list[str]],
        status: int | None,
        caller_id: str | None,
        fault: str | None,
    ) -> None:
        query = tuple((key, query_args[key][0]) for key in _MTM_QUERY_KEYS if query_args.get(key))
        record = MtmRequest(method, path, query, status, caller_id, fault)
        with self._lock:
            self._mtm_requests.append(record)

    def _validity(self, user: _TechnicalUser | None) -> timedelta:
        own = user.token_validity if user is not None else None
        return own if own is not None else self.token_validity

    def _snapshot(self, user: _TechnicalUser) -> TechnicalUser:
        """The caller holds the lock."""
        keeps = user.replace_keeps_expiry
        return TechnicalUser(
            id=user.user_id,
            user_name=user.user_name,
            email=user.email,
            role=user.role,
            workspace_id=user.workspace_id,
            workspace_name=user.workspace_name,
            account_id=user.account_id,
            client_id=user.client_id,
            token_id=user.token_id,
            expiry=user.expiry,
            description=user.description,
            api_token_fingerprint=fingerprint(user.api_token),
            token_validity=self._validity(user),
            replace_keeps_expiry=self.replace_keeps_expiry if keeps is None else keeps,
            replacements=user.replacements,
        )

    def _workspace(self, workspace_id: str, name: str | None) -> _Workspace:
        """Workspace `workspace_id`, made (named `name` or "demo") if new. Caller holds the lock."""
        workspace = self._workspaces.get(workspace_id)
        if workspace is None:
            workspace = self._workspaces[workspace_id] = _Workspace(name or "demo")
        return workspace

    def _place(
        self,
        user: _TechnicalUser,
        workspace_id: str | None,
        workspace_name: str | None,
        user_name: str | None,
    ) -> None:
        """Move `user` and rename it as given (None: as it is); ValueError, changing nothing,
        if its name is taken in the workspace it ends up in. The caller holds the lock."""
        target = workspace_id or user.workspace_id
        name = user_name or user.user_name
        if (target, name) != (user.workspace_id, user.user_name):
            self._free_user_name(target, "", name, user.user_id)
        if target != user.workspace_id:
            workspace = self._workspace(target, workspace_name or user.workspace_name)
            user.workspace_id, user.account_id = target, workspace.account_id
        user.user_name = name
        if workspace_name is not None:
            user.workspace_name = workspace_name

    def _free_user_name(
        self, workspace_id: str, workspace_name: str, wanted: str | None, exclude: str = ""
    ) -> str:
        """`wanted` if no other user of the workspace has it (else ValueError), or the first
        free default name. The caller holds the lock."""
        taken = {
            user.user_name
            for user in self._users.values()
            if user.workspace_id == workspace_id and user.user_id != exclude
        }
        if wanted is not None:
            if wanted in taken:
                raise ValueError(f"user name {wanted!r} is taken in that workspace")
            return wanted
        number = len(taken) + 1
        while f"{workspace_name}-technical-user-{number}" in taken:
            number += 1
        return f"{workspace_name}-technical-user-{number}"

    def _signed_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a compact JWT signed RS256 with this stand-in's key, else None."""
        try:
            encoded_header, encoded_claims, encoded_signature = token.split(".")
            header = json.loads(_unb64(encoded_header))
            claims = json.loads(_unb64(encoded_claims))
            self._key.public_key().verify(
                _unb64(encoded_signature),
                f"{encoded_header}.{encoded_claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, binascii.Error, InvalidSignature):  # JSON and Unicode errors too
            return None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            return None
        return claims if isinstance(claims, dict) else None

    def _sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        signing_input = f"{_b64(_compact(header))}.{_b64(_compact(claims))}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def _track(self, connection: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections.add(connection)
            self._connections_total += 1
            return True

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._idle.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: LeanIXStandIn, port: int, context: ssl.SSLContext | None) -> None:
        self.standin = standin
        self.context = context
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own name with getfqdn(), which can stall for
        # seconds on a host without working reverse DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake blocks nobody else.
        connection = cast(socket.socket, request)
        connection.settimeout(CONNECTION_TIMEOUT)
        # Headers and body go out in two writes; with Nagle's algorithm the body waits for the
        # client's delayed ACK of the headers (~40 ms per answer on a reused connection).
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            connection = self.context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        if not self.standin._track(connection):
            self.shutdown_request(connection)
            return
        try:
            if isinstance(connection, ssl.SSLSocket):
                connection.do_handshake()
            super().finish_request(connection, client_address)
        finally:
            self.standin._untrack(connection)
            # wrap_socket detached the original socket: the wrapped one is the one to close.
            self.shutdown_request(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called from inside an `except` block. Clients hanging up (timeouts, refused TLS) are
        # routine here: log the kind of error only, never print a traceback to stderr.
        error = sys.exc_info()[1]
        logger.debug("stand-in connection ended with %s", type(error).__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a client's connection pool expects
    server_version = "LeanIXStandIn/1.0"
    timeout = CONNECTION_TIMEOUT

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:  # MTM's replaceToken; elsewhere 405
        self._dispatch()

    def do_DELETE(self) -> None:  # 405 everywhere, rather than http.server's 501
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would print request lines and errors to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: headers and bodies carry tokens; queries might.
        # A malformed request line is refused before `command` and `path` are set.
        path = str(getattr(self, "path", "")).partition("?")[0]
        logger.debug("stand-in %s %s -> %s", getattr(self, "command", None), path, code)

    def _dispatch(self) -> None:
        standin = cast(_Server, self.server).standin
        path, _, query = self.path.partition("?")
        body = self._read_body()
        form = _form(body) if body is not None and self._is_form() else {}
        query_args = parse_qs(query)
        client_id, api_token = _basic_credentials(self.headers.get("Authorization", ""))
        record = RequestRecord(
            method=self.command,
            path=path,
            client_id=client_id,
            api_token_fingerprint=fingerprint(api_token) if api_token else None,
            grant_type_in=tuple(
                where
                for where, args in (("body", form), ("query", query_args))
                if "grant_type" in args
            ),
            content_type=self.headers.get("Content-Type"),
            scope=_first(form, "scope"),
            header_names=tuple(name.lower() for name in self.headers),
            accept_encoding=self.headers.get("Accept-Encoding"),
            cookie=self.headers.get("Cookie"),
        )
        standin._begin(record, api_token)
        try:
            if body is None:
                self.close_connection = True  # the unread body would be taken for the next request
                self._send(413, {"error": "invalid_request"})
                return
            if not standin._pause(standin.latency_seconds):
                self.close_connection = True
                return
            if path == TECHNICAL_USERS_PATH or path.startswith(TECHNICAL_USERS_PATH + "/"):
                self._mtm(standin, path, query_args)
                return
            if path not in (TOKEN_PATH, GRAPHQL_PATH):
                self._send(404, {"error": "not_found"})
            elif self.command != "POST":
                self._send(405, {"error": "method_not_allowed"}, {"Allow": "POST"})
            elif path == GRAPHQL_PATH:
                self._graphql(standin, body)
            else:
                self._token(standin, form, query_args, client_id, api_token)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on us, e.g. after its timeout
        finally:
            standin._end()

    def _token(
        self,
        standin: LeanIXStandIn,
        form: dict[str, list[str]],
        query_args: dict[str, list[str]],
        client_id: str | None,
        api_token: str | None,
    ) -> None:
        fault = standin._take_fault(api_token)
        if fault is not None and fault.mode not in _BODY_FAULTS:
            self._transport_fault(standin, fault)
            if fault.mode != "hang" or self.close_connection:
                return
        registration = None
        if client_id is not None and api_token is not None:
            registration = standin._registration(client_id, api_token)
        if registration is None or api_token is None:
            description = "The API token is invalid, expired or revoked."
            self._send(
                401,
                {"error": "unauthorized", "error_description": description},
                {"WWW-Authenticate": 'Basic realm="LeanIX"'},
            )
            return
        grant_type = _first(form, "grant_type") or _first(query_args, "grant_type")
        if grant_type != "client_credentials":
            self._send(400, {"error": "unsupported_grant_type"})
            return
        answer: dict[str, Any] = {"scope": _first(form, "scope") or "", "expired": False}
        mode = fault.mode if fault is not None else None
        if mode == "not_jwt":
            answer["access_token"] = "opaque-token-value"  # noqa: S105 - a fake on purpose
            answer["expires_in"] = standin.lifetime_seconds
        elif mode == "no_access_token":
            answer["expires_in"] = standin.lifetime_seconds
        else:
            answer["access_token"], answer["expires_in"] = standin._issue(api_token, registration)
        answer["token_type"] = "bearer"  # noqa: S105 - a token type, not a secret
        if mode == "expired":
            answer["expired"] = True
        elif mode == "expires_in" and fault is not None:
            answer["expires_in"] = fault.params["value"]
        self._send(200, answer)

    def _graphql(self, standin: LeanIXStandIn, body: bytes) -> None:
        """The consumer API: 401 without a bearer token this stand-in issued and still honours,
        400 without a JSON `query`, else 200 and the same small document for any query."""
        if standin._bearer_claims(self.headers) is None:
            self._send(
                401,
                {"errors": [{"message": "Unauthorized"}]},
                {"WWW-Authenticate": 'Bearer realm="LeanIX"'},
            )
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            self._send(400, {"errors": [{"message": "a JSON body with a 'query' is required"}]})
            return
        self._send(200, GRAPHQL_ANSWER)

    def _mtm(self, standin: LeanIXStandIn, path: str, query_args: dict[str, list[str]]) -> None:
        """The technical-users API: an MTM fault if one applies, else `_mtm_answer`. Each
        request is recorded before its answer goes out (or the connection closes)."""
        relative = path[len(MTM_PATH) :]
        fault = standin._take_mtm_fault(relative, after_replace=False)

        def record(status: int | None, caller_id: str | None, fault_mode: str | None) -> None:
            standin._record_mtm(self.command, path, query_args, status, caller_id, fault_mode)

        if fault is not None and fault.mode == "hang":
            if not standin._pause(float(fault.params["seconds"])) or fault.params.get("then"):
                record(None, None, fault.mode)
                self.close_connection = True  # stopped meanwhile, or then="close": nothing done
                return
        elif fault is not None:
            record(
                None if fault.mode == "close" else self._mtm_fault_status(fault), None, fault.mode
            )
            self._mtm_fault(fault)
            return
        answer = standin._mtm_answer(self.command, relative, query_args, self.headers)
        if answer.replaced:
            dropped = standin._take_mtm_fault(relative, after_replace=True)
            if dropped is not None:
                record(None, answer.caller_id, dropped.mode)
                self.close_connection = True  # the new token is never sent
                return
        record(answer.status, answer.caller_id, fault.mode if fault is not None else None)
        self._send(answer.status, answer.document, answer.headers)

    @staticmethod
    def _mtm_fault_status(fault: _Fault) -> int:
        return int(fault.params["status"]) if fault.mode == "status" else 200

    def _mtm_fault(self, fault: _Fault) -> None:
        """Answer as MTM fault `fault` ("status", "garbage" or "close") says."""
        if fault.mode == "close":
            self.close_connection = True  # nothing is written: the client sees the socket close
        elif fault.mode == "status":
            params = fault.params
            headers = {"Retry-After": str(params["retry_after"])} if "retry_after" in params else {}
            body = params.get("body", _mtm_error(int(params["status"]), "injected fault").document)
            self._send(int(params["status"]), body, headers)
        elif fault.mode == "garbage":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")

    def _transport_fault(self, standin: LeanIXStandIn, fault: _Fault) -> None:
        """Answer (or not) as `fault` says; for "hang", only wait and let the caller go on."""
        params = fault.params
        if fault.mode == "hang":
            if not standin._pause(float(params["seconds"])):
                self.close_connection = True
        elif fault.mode == "close":
            self.close_connection = True  # nothing is written: the client sees the socket close
        elif fault.mode == "status":
            headers = {"Retry-After": params["retry_after"]} if "retry_after" in params else {}
            body = params.get("body", b'{"error": "injected_fault"}')
            self._send(int(params["status"]), body, headers)
        elif fault.mode == "redirect":
            location = params.get("location", "http://127.0.0.1:9/services/mtm/v1/oauth2/token")
            self._send(302, b"", {"Location": location})
        elif fault.mode == "garbage":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        elif fault.mode == "huge":
            size = int(params.get("size", 1024 * 1024))
            self._send(200, b'{"padding": "' + b"x" * max(0, size - 15) + b'"}')
        elif fault.mode == "deep":
            depth = int(params.get("depth", 100_000))
            self._send(200, b"[" * depth + b"]" * depth)
        elif fault.mode == "drip":
            self.close_connection = True  # the headers never end: nothing can follow them
            self.wfile.write(f"HTTP/1.1 {int(params.get('status', 200))} Dripping\r\n".encode())
            self.wfile.flush()
            while standin._pause(float(params["interval"])):
                self.wfile.write(b"X")  # one byte of a header line that never ends
                self.wfile.flush()

    def _send(
        self,
        status: int,
        body: dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json;charset=UTF-8",
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")  # as OAuth2 requires for token answers
        extra = cast(_Server, self.server).standin.answer_headers
        for name, value in {**extra, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is chunked, unsized or too large to accept."""
        length = self.headers.get("Content-Length", "0")
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            return None
        if int(length) > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(int(length))

    def _is_form(self) -> bool:
        content_type = self.headers.get("Content-Type", "")
        return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    """(client_id, api_token) from a Basic Authorization header; (None, None) if unreadable."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, colon, api_token = decoded.partition(":")
    return (client_id, api_token) if colon else (None, None)


def _form(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}


def _first(args: dict[str, list[str]], key: str) -> str | None:
    values = args.get(key)
    return values[0] if values else None


def _mtm_ok(kind: str, data: Any, **extra: Any) -> dict[str, Any]:
    """MTM's success envelope; `extra` (a list's `total`) goes before `data`, as MTM orders it."""
    return {"status": "OK", "type": kind, "message": None, "errors": [], **extra, "data": data}


def _mtm_error(status: int, message: str, headers: dict[str, str] | None = None) -> _MtmAnswer:
    """MTM's failure envelope. `message` is the stand-in's own text: never a request's value."""
    document = {
        "status": "ERROR",
        "type": "ErrorResponse",
        "message": message,
        "errors": [{"message": message, "messages": [message]}],
        "data": None,
    }
    return _MtmAnswer(status, document, headers or {})


def _int_arg(args: dict[str, list[str]], key: str, default: int) -> int | None:
    """The integer query argument `key` (`default` when absent), None when it is no integer."""
    value = _first(args, key)
    if value is None:
        return default
    text = value.strip()
    return int(text) if text.isascii() and text.removeprefix("-").isdigit() else None


def _matches(pattern: str, relative: str) -> bool:
    """`pattern` against an MTM path, below MTM_PATH (`relative`) or whole."""
    return fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(
        MTM_PATH + relative, pattern
    )


def _to_millisecond(when: datetime) -> datetime:
    """`when` (aware, else ValueError) in UTC, cut to the millisecond as MTM's `Instant`s."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("an expiry must be an aware datetime")
    utc = when.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url without padding; binascii.Error on anything else."""
    if "=" in text:
        raise binascii.Error("padded")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m rotator.dev.standin`: serve until Ctrl-C, for trying rotator by hand."""
    parser = argparse.ArgumentParser(
        prog="python -m rotator.dev.standin", description="A local LeanIX token-endpoint stand-in."
    )
    parser.add_argument("--port", type=int, default=8700, help="TCP port on 127.0.0.1")
    parser.add_argument("--lifetime", type=int, default=3599, help="access-token lifetime (s)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="NAME=APITOKEN",
        help="accept APITOKEN for workspace NAME (repeatable); one is generated if none is given",
    )
    parser.add_argument("--verbose", action="store_true", help="log each request's method/path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)

    tokens: list[tuple[str, str]] = []
    for item in args.token:
        name, equals, api_token = item.partition("=")
        if not equals or not name or not api_token:
            parser.error("--token wants NAME=APITOKEN")  # never echo: it may be a bare token
        tokens.append((name, api_token))
    generated = not tokens
    if generated:
        tokens.append(("demo", "standin-" + secrets.token_urlsafe(24)))

    with LeanIXStandIn(args.port, lifetime_seconds=args.lifetime) as standin:
        for name, api_token in tokens:
            standin.add_token(api_token, workspace_name=name)
        print(f"LeanIX stand-in: {standin.token_url}", flush=True)
        print(f"  its API (Bearer access token): {standin.graphql_url}", flush=True)
        print(
            f"  MTM technical users (Bearer, ADMIN): {standin.mtm_url}/technicalusers", flush=True
        )
        if generated:
            # A throwaway token of a local fake, printed so a trial can use it at once.
            print(f"stand-in API token for workspace 'demo': {tokens[0][1]}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
