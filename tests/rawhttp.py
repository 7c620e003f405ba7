"""A loopback TCP server whose answers are raw bytes: partial answers, drips, garbage. For
testing how clients bound a misbehaving peer (tests of the Vault transport and of deadlines)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Answer = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """Accepts connections on 127.0.0.1; for each, reads one HTTP request head (unless
    `read_request` is False) and hands the socket to `answer(socket, stopped)`, once per request
    for as long as the connection stays open. `connections` counts the connections accepted."""

    def __init__(self, answer: Answer, *, read_request: bool = True) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._answer = answer
        self._read_request = read_request
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            try:
                if not self._read_request:
                    self._answer(connection, self.stopped)
                    return
                received = b""
                while not self.stopped.is_set():
                    while b"\r\n\r\n" not in received:
                        chunk = connection.recv(65536)
                        if not chunk:
                            return
                        received += chunk
                    received = received.partition(b"\r\n\r\n")[2]  # requests here have no body
                    self._answer(connection, self.stopped)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self._listener.close()


def answer_with(body: bytes, content_type: str = "application/json") -> Answer:
    """A complete keep-alive answer: 200 with `body`."""

    def answer(connection: socket.socket, _stopped: threading.Event) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        connection.sendall(head.encode() + body)

    return answer


def drip(head: bytes, byte: bytes, every: float) -> Answer:
    """Send `head`, then `byte` every `every` seconds until the server stops or the client
    leaves: each read gets something well within any read timeout."""

    def answer(connection: socket.socket, stopped: threading.Event) -> None:
        connection.sendall(head)
        while not stopped.wait(every):
            connection.sendall(byte)

    return answer
