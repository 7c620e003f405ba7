"""A counting proxy for Vault on loopback: what a client asks of Vault, counted by route.

Deliberately lean, so that it barely slows what it measures (a proxy built on `http.server`
and `http.client` nearly doubled the daemon's first cycle on a 2-core machine): each client
connection gets one upstream connection and two threads. Client to Vault, requests are parsed
only as far as their head (request line and `Content-Length`), counted, and forwarded whole;
Vault to client, bytes are piped unparsed. Bodies and headers are never logged or kept.

A route is the method and path with the Vault prefixes the bench knows replaced by placeholders
(`GET secret/metadata/{output}/*`), so a per-token request counts as one route whatever the token.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
CHUNK = 256 * 1024


class CountingProxy:
    """`CountingProxy(upstream, prefixes)`: listen on 127.0.0.1 (`addr`), count per route."""

    def __init__(self, upstream: str, prefixes: dict[str, str] | None = None) -> None:
        """`prefixes` maps a Vault path prefix (e.g. `bench/src/n2000`) to its placeholder
        (`{source}`); the longest matching prefix wins."""
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError("upstream must be http://host:port")
        self._upstream = (parts.hostname, parts.port)
        self._prefixes = sorted((prefixes or {}).items(), key=lambda item: -len(item[0]))
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._accept, name="vault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and end every open connection."""
        with self._lock:
            self._stopped = True
            sockets = list(self._sockets)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            _close(sock)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def counts(self) -> dict[str, int]:
        """Requests per route since the last `reset`, most frequent first."""
        with self._lock:
            return dict(self._counts.most_common())

    def route(self, method: str, target: str) -> str:
        """`LIST secret/metadata/{source}` for `LIST /v1/secret/metadata/bench/src/n2000/`."""
        path, _, query = target.partition("?")
        if method == "GET" and "list=true" in query:
            method = "LIST"
        path = path.removeprefix("/v1/").strip("/")
        for prefix, placeholder in self._prefixes:
            marker = f"/{prefix}"
            at = path.find(marker)
            end = at + len(marker)
            if at >= 0 and (len(path) == end or path[end] == "/"):
                below = "/*" if path[end:].strip("/") else ""
                return f"{method} {path[:at]}/{placeholder}{below}"
        return f"{method} {path}"

    # --- connections --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopped:
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to Vault: split the stream into requests, count each, forward it."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    if len(buffer) > MAX_HEAD_BYTES or not (chunk := client.recv(CHUNK)):
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                method, target, length = _parse_head(head)
                while len(rest) < length:
                    if not (chunk := client.recv(CHUNK)):
                        return
                    rest += chunk
                self._count(method, target)
                upstream.sendall(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
        except (OSError, ValueError):
            return  # a closed socket, or a request this proxy does not handle
        finally:
            self._forget(client, upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Vault to client: bytes as they come."""
        try:
            while chunk := source.recv(CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._forget(source, sink)

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.difference_update(sockets)
        for sock in sockets:
            _close(sock)

    def _count(self, method: str, target: str) -> None:
        key = self.route(method, target)
        with self._lock:
            self._counts[key] += 1


def _parse_head(head: bytes) -> tuple[str, str, int]:
    """Method, target and body length of a request head. ValueError for what is not handled
    (a chunked body: neither hvac nor requests sends one to Vault)."""
    request_line, *header_lines = head.split(b"\r\n")
    method, target, _ = request_line.decode("latin-1").split(" ", 2)
    length = 0
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            raise ValueError("chunked request bodies are not handled")
    return method, target, length


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
