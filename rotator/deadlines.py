"""Overall deadlines for HTTP requests: one watchdog thread cuts the connections of requests that
run past theirs.

A socket timeout bounds each read, not a request: a peer that sends its status line and then one
header byte just inside every read timeout holds the caller for as long as it likes. Here a
request runs inside `WATCHDOG.deadline(seconds)`; the connections it opens or reuses meanwhile
register with that deadline (a context variable carries it from the caller down to urllib3's
connection objects), and once the deadline passes the watchdog shuts their sockets down
(`socket.socket.shutdown(sock, SHUT_RDWR)`, which also wakes a blocked TLS read). The blocked
read then fails at once, or ends: cut in the middle of the headers, http.client takes the end
of the stream for the end of the headers and returns an "answer". So callers look at
`Deadline.expired` after the request, whatever it returned or raised, and report "did not answer
within the deadline" instead.

Covered: the TCP connect's aftermath (TLS handshake, proxy CONNECT), sending the request, the
status line, the headers and the body, on connections from pools built here:
`install(session)` for requests, `watch_pools(manager)` for a urllib3 PoolManager. A connection
a deadline cut is never handed out again (`is_connected` is False). SOCKS proxies keep their own
pool classes and are not covered. One thread serves every deadline of the process.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "rotator_deadline", default=None
)


class Deadline:
    """One request's deadline. `expired` turns True when the watchdog cut its connections."""

    __slots__ = ("_connections", "_done", "at", "expired", "seconds")

    def __init__(self, at: float, seconds: float) -> None:
        self.at = at
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._connections: set[_WatchedHTTPConnection] = set()


class Watchdog:
    """A heap of deadlines and the one daemon thread that enforces them, started on first use.

    Thread-safe. Deadlines that ended before their time stay in the heap until it comes (bounded
    by the request rate times the longest deadline) and are then dropped unseen.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[Deadline]:
        """Run the block under a deadline `seconds` from now; the connections used in it are
        cut once it passes. Deadlines nest: the innermost one applies."""
        deadline = Deadline(self._clock() + seconds, seconds)
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is deadline:
                # The soonest now: the thread sleeps until a later one, wake it. Otherwise it
                # wakes in time anyway, and a wake-up per request would cost a thread switch.
                self._wake.notify()
        token = _CURRENT.set(deadline)
        try:
            yield deadline
        finally:
            _CURRENT.reset(token)
            with self._wake:
                deadline._done = True
                for connection in deadline._connections:
                    connection._rotator_deadline = None
                deadline._connections.clear()

    def _attach(self, connection: _WatchedHTTPConnection) -> None:
        """Make the current deadline (if any) responsible for `connection`: the one in use now."""
        deadline = _CURRENT.get()
        with self._wake:
            previous = connection._rotator_deadline
            if previous is not None and previous is not deadline:
                previous._connections.discard(connection)
            connection._rotator_deadline = deadline
            if deadline is None or deadline._done:
                connection._rotator_deadline = None
                return
            deadline._connections.add(connection)
            if deadline.expired:  # a retry or a second request after the cut: cut it at once
                _cut(connection)

    def _detach(self, connection: _WatchedHTTPConnection) -> None:
        """`connection` went back to its pool: no deadline may cut it any more."""
        with self._wake:
            deadline = connection._rotator_deadline
            if deadline is not None:
                deadline._connections.discard(connection)
            connection._rotator_deadline = None

    def _run(self) -> None:
        with self._wake:
            while True:
                if not self._heap:
                    self._wake.wait()
                    continue
                at, _, deadline = self._heap[0]
                left = at - self._clock()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._heap)
                if deadline._done:
                    continue
                deadline.expired = True
                for connection in deadline._connections:
                    _cut(connection)


WATCHDOG = Watchdog()


def _cut(connection: _WatchedHTTPConnection) -> None:
    """Shut the connection's socket down (under the watchdog's lock). During a TLS handshake the
    socket object is being re-wrapped, so the duplicate taken at connect time is cut instead."""
    connection._rotator_cut = True
    for sock in (connection._rotator_connecting, connection.sock):
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """urllib3's connection, registering with the deadline of whoever uses it."""

    _rotator_deadline: Deadline | None = None
    _rotator_cut = False
    _rotator_connecting: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        if _CURRENT.get() is not None:
            # TLS wrapping detaches `sock`; a duplicate of the descriptor still reaches the
            # connection while the handshake runs. Closed as soon as connect() is done.
            self._rotator_connecting = sock.dup()
        return sock

    def connect(self) -> None:
        self._rotator_cut = False
        WATCHDOG._attach(self)
        try:
            super().connect()
        finally:
            with WATCHDOG._wake:
                dup, self._rotator_connecting = self._rotator_connecting, None
            if dup is not None:
                dup.close()

    def request(self, *args: Any, **kwargs: Any) -> None:
        WATCHDOG._attach(self)  # a reused connection: connect() is not called again
        super().request(*args, **kwargs)

    @property
    def is_connected(self) -> bool:
        return not self._rotator_cut and super().is_connected


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _WatchedHTTPConnection):
            WATCHDOG._detach(conn)
        super()._put_conn(conn)


class _WatchedHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _WatchedHTTPConnection):
            WATCHDOG._detach(conn)
        super()._put_conn(conn)


_POOL_CLASSES = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


def watch_pools(manager: urllib3.PoolManager) -> None:
    """Make the pools `manager` creates from now on use connections that deadlines can cut.
    A manager with pool classes of its own (SOCKS) is left alone."""
    if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
        manager.pool_classes_by_scheme = _POOL_CLASSES


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter over pools whose connections deadlines can cut (proxied ones too)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager):
            watch_pools(manager)
        return manager


def install(session: requests.Session, **adapter_options: Any) -> None:
    """Mount one `WatchedAdapter` (`adapter_options` as for `HTTPAdapter`) for http:// and
    https:// on `session`, unless both have one already."""
    prefixes = ("https://", "http://")
    if all(isinstance(session.adapters.get(p), WatchedAdapter) for p in prefixes):
        return
    adapter = WatchedAdapter(**adapter_options)
    for prefix in prefixes:
        session.mount(prefix, adapter)
