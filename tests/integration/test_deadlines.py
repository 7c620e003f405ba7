"""rotator.deadlines: overall request deadlines enforced by cutting sockets, against real
loopback servers that drip their answers (raw bytes, over TCP and in the middle of TLS)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from rotator.deadlines import WATCHDOG, install
from tests.rawhttp import RawServer, answer_with, drip

SLACK = 1.0  # for a loaded 2-core machine


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        install(http, max_retries=0)
        yield http


def wait_until_expired(seconds: float) -> None:
    """Return once a deadline of `seconds` from now has been handled: the watchdog handles
    deadlines in order, so every earlier one has been too."""
    with WATCHDOG.deadline(seconds) as marker:
        limit = time.monotonic() + seconds + 5
        while not marker.expired:
            assert time.monotonic() < limit, "the watchdog never handled the deadline"
            time.sleep(0.01)


def test_a_peer_dripping_headers_is_cut_at_the_deadline(
    servers: list[RawServer], session: requests.Session
) -> None:
    server = RawServer(drip(b"HTTP/1.1 200 OK\r\n", b"X", every=0.05))
    servers.append(server)
    started = time.monotonic()

    # Cut mid-headers, http.client may take the end of the stream for the end of the headers
    # and return an "answer": hence callers look at `expired`, not at what came back.
    with (
        WATCHDOG.deadline(0.5) as deadline,
        contextlib.suppress(requests.exceptions.RequestException),
    ):
        session.get(server.url, timeout=5)

    assert deadline.expired
    assert 0.45 < time.monotonic() - started < 0.5 + SLACK


def test_a_tls_handshake_that_never_completes_is_cut_at_the_deadline(
    servers: list[RawServer], session: requests.Session
) -> None:
    # A TLS record header announcing 16 KiB, then its bytes one by one: OpenSSL keeps waiting
    # inside the handshake, where the socket object is being re-wrapped.
    server = RawServer(drip(b"\x16\x03\x03\x40\x00", b"\x02", every=0.05), read_request=False)
    servers.append(server)
    started = time.monotonic()

    with WATCHDOG.deadline(0.5) as deadline, pytest.raises(requests.exceptions.RequestException):
        session.get(f"https://127.0.0.1:{server.port}/", timeout=5)

    assert deadline.expired
    assert time.monotonic() - started < 0.5 + SLACK


def test_a_connection_back_in_its_pool_is_not_cut_when_its_old_deadline_passes(
    servers: list[RawServer], session: requests.Session
) -> None:
    server = RawServer(answer_with(b"{}"))
    servers.append(server)
    with WATCHDOG.deadline(0.3) as first:
        assert session.get(server.url, timeout=5).status_code == 200
    wait_until_expired(0.4)

    with WATCHDOG.deadline(5) as second:
        assert session.get(server.url, timeout=5).status_code == 200

    assert not first.expired and not second.expired
    assert server.connections == 1


def test_a_connection_cut_at_its_deadline_is_not_handed_out_again(
    servers: list[RawServer], session: requests.Session
) -> None:
    slow_once = threading.Event()

    def answer(connection: socket.socket, stopped: threading.Event) -> None:
        if not slow_once.is_set():
            slow_once.set()
            drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b" ", every=0.05)(
                connection, stopped
            )
            return
        answer_with(b"{}")(connection, stopped)

    server = RawServer(answer)
    servers.append(server)
    with WATCHDOG.deadline(0.3), pytest.raises(requests.exceptions.RequestException):
        session.get(server.url, timeout=5).content  # noqa: B018 - the body is what drips

    assert session.get(server.url, timeout=5).status_code == 200
    assert server.connections == 2


def test_requests_outside_any_deadline_are_left_alone(
    servers: list[RawServer], session: requests.Session
) -> None:
    server = RawServer(answer_with(b"{}"))
    servers.append(server)

    assert session.get(server.url, timeout=5).status_code == 200


def test_install_keeps_an_adapter_that_is_already_watched() -> None:
    with requests.Session() as http:
        install(http)
        adapter = http.get_adapter("https://example.com/")

        install(http)

        assert http.get_adapter("https://example.com/") is adapter
        assert http.get_adapter("http://example.com/") is adapter
