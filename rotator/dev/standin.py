"""A local stand-in for LeanIX's token endpoint: real HTTP(S), RS256-signed JWTs, injectable faults.

Used by `rotator demo`, by the test suite and for trials; never in production. It answers
`POST /services/mtm/v1/oauth2/token` the way LEANIX.md describes LeanIX doing it: HTTP Basic
`client_id:api_token`, `grant_type=client_credentials` in the form body (or, as LeanIX also
accepts, the query string), and a JSON answer carrying a JWT whose claims look like LeanIX's.

One consumer-facing API sits behind those access tokens, so a consumer's token can be shown to
work: `POST /services/pathfinder/v1/graphql` with `Authorization: Bearer <access token>` and a
JSON body holding a `query` answers 200 and one fixed small document for any query. A bearer token
opens it only if this stand-in signed it (RS256, its own key, its own issuance), it has not
expired, and the API token it was issued for is still registered and not revoked; anything else
is 401. Every API behind an access token uses that one check (`_bearer_claims`).

Contracts:
- It listens on 127.0.0.1 only; `stop()` closes every connection, including idle keep-alive ones,
  so a client cannot keep talking to a stopped stand-in through its connection pool.
- Faults (`set_fault`) are thread-safe and are taken at the start of a request to the token path;
  they never touch the API. `latency_seconds` delays every request, the API's too.
  Transport faults ("status", "garbage", "close", "redirect", "huge", "deep", "hang") apply to
  any request, authenticated or not; body faults ("no_access_token", "expired", "not_jwt",
  "expires_in") alter an answer that would have succeeded, so they need a valid token.
- Tokens never reach a log line, an error body or a record: records keep a fingerprint.
- `cryptography` is an optional dependency (`rotator[demo]`); without it, construction raises.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
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
from datetime import UTC, datetime
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
}
_BODY_FAULTS = frozenset({"no_access_token", "expired", "not_jwt", "expires_in"})


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


@dataclass
class _Registration:
    client_id: str
    workspace_id: str
    workspace_name: str
    role: str
    revoked: bool = False
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    permission_id: str = field(default_factory=lambda: str(uuid.uuid4()))


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
    ) -> None:
        """`private_key` lets a test suite share one RSA key (generating one takes ~0.1 s)."""
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
        self._last_request: RequestRecord | None = None
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
        workspace_name: str = "demo",
        role: str = "ADMIN",
        client_id: str = "apitoken",
    ) -> None:
        """Accept `api_token` (with Basic user `client_id`). Re-adding replaces and un-revokes."""
        registration = _Registration(
            client_id, workspace_id or str(uuid.uuid4()), workspace_name, role
        )
        with self._lock:
            self._tokens[api_token] = registration

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
        """Change who the next JWTs for `api_token` speak for; None leaves a field as it is."""
        with self._lock:
            registration = self._tokens[api_token]
            if workspace_id is not None:
                registration.workspace_id = workspace_id
            if workspace_name is not None:
                registration.workspace_name = workspace_name
            if role is not None:
                registration.role = role

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

    # -- counters -------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        with self._lock:
            self._requests_total = 0
            self._requests_by_token = {}
            self._issued = []
            self._max_in_flight = self._in_flight
            self._last_request = None

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

    def _registration(self, client_id: str, api_token: str) -> _Registration | None:
        with self._lock:
            registration = self._tokens.get(api_token)
            if registration is None or registration.revoked:
                return None
            if not secrets.compare_digest(registration.client_id, client_id):
                return None
            return replace(registration)  # a snapshot, consistent for one answer

    def _issue(self, api_token: str, registration: _Registration) -> tuple[str, int]:
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
                "username": f"{registration.workspace_name}-technical-user",
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
        ahead, and the API token it was issued for still registered and not revoked."""
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
        return claims

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
        for name, value in (headers or {}).items():
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
        if generated:
            # A throwaway token of a local fake, printed so a trial can use it at once.
            print(f"stand-in API token for workspace 'demo': {tokens[0][1]}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
