"""rotator's HTTP transport to Vault (vaulthttp.py under hvac): redirects, proxies, timeouts and
unreachable servers, against real loopback listeners. The happy path is every other Vault test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rotator import config as config_module
from rotator import vault as vault_module
from rotator import vaulthttp
from rotator.dev.devvault import DevVault, free_port
from rotator.errors import VaultError, VaultUnavailable
from rotator.vault import VaultStore
from rotator.vaulthttp import VaultHTTP
from tests.rawhttp import RawServer, answer_with, drip

TOKEN = "hvs.transport-test-token-value"


@dataclass
class Listener:
    """A loopback HTTP server that records each request line and headers, then answers
    `status` with `headers` (or never answers when `hang` is set)."""

    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    hang: threading.Event | None = None
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                listener.seen.append((self.command, self.path, dict(self.headers)))
                if listener.hang is not None:
                    listener.hang.wait(30)
                    return
                self.send_response(listener.status)
                for key, value in listener.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_CONNECT = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.close()


def _connect(addr: str) -> VaultStore:
    config = config_module.parse({"vault": {"addr": addr}}, {"VAULT_TOKEN": TOKEN})
    return VaultStore.connect(config.vault)


def test_a_redirect_from_vault_is_not_followed(listeners: list[Listener]) -> None:
    target = Listener(status=200)
    redirecting = Listener(status=307, headers={"Location": f"{target.url}/v1/elsewhere"})
    listeners += [target, redirecting]

    with pytest.raises(VaultError) as caught:
        _connect(redirecting.url)

    assert [seen[:2] for seen in redirecting.seen] == [("GET", "/v1/auth/token/lookup-self")]
    assert target.seen == []
    assert TOKEN not in str(caught.value)


def test_vault_requests_go_through_the_environments_proxy(
    listeners: list[Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = Listener(status=502)
    listeners.append(proxy)
    vault_host = f"vault.internal.example:{free_port()}"
    vault_addr = f"https://{vault_host}"  # plain http is refused for a Vault off this host
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    with pytest.raises(VaultError):
        _connect(vault_addr)

    # The proxy was asked for a tunnel to Vault: the request was routed through it.
    assert [seen[:2] for seen in proxy.seen] == [("CONNECT", vault_host)]


def test_no_proxy_sends_vault_requests_directly(
    dev_vault: DevVault, listeners: list[Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = Listener(status=502)
    listeners.append(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    config = config_module.parse(
        {"vault": {"addr": dev_vault.addr}}, {"VAULT_TOKEN": dev_vault.root_token}
    )

    VaultStore.connect(config.vault).list_sources()

    assert proxy.seen == []


def test_a_vault_that_refuses_connections_is_unavailable() -> None:
    with pytest.raises(VaultUnavailable, match="cannot connect to Vault"):
        _connect(f"http://127.0.0.1:{free_port()}")


def test_a_vault_that_never_answers_times_out(
    listeners: list[Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = Listener(hang=threading.Event())
    listeners.append(silent)
    monkeypatch.setattr(vault_module, "VAULT_TIMEOUT_SECONDS", 0.5)

    with pytest.raises(VaultUnavailable, match="did not answer in time"):
        _connect(silent.url)
    assert len(silent.seen) == 1


def test_a_vault_that_closes_the_connection_is_unavailable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def close_each() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        with pytest.raises(VaultUnavailable, match="cannot reach Vault"):
            _connect(f"http://127.0.0.1:{server.getsockname()[1]}")
    finally:
        server.close()


def test_the_transport_refuses_a_request_without_a_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        VaultHTTP().request("GET", "http://127.0.0.1:9/v1/sys/health")


def test_a_vault_without_the_detailed_listing_is_read_one_by_one(
    listeners: list[Listener],
) -> None:
    """HashiCorp Vault's KV v2 has no `detailed-metadata` route and answers 404 "unsupported
    path"; stood in for here, as it cannot run in this suite."""
    seen: list[str] = []

    class HashiCorpLike(BaseHTTPRequestHandler):
        def _json(self, status: int, body: str) -> None:
            seen.append(f"{self.command} {self.path.split('?')[0]}")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self) -> None:
            self._json(200, '{"data": {"ttl": 0, "creation_ttl": 0, "renewable": false}}')

        def do_LIST(self) -> None:
            self._json(404, '{"errors": ["1 error occurred:\\n\\t* unsupported path\\n\\n"]}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), HashiCorpLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = _connect(f"http://127.0.0.1:{server.server_address[1]}")

        assert store.list_output_metadata() is None
        assert store.list_output_metadata() is None
    finally:
        server.shutdown()
        server.server_close()

    # Asked once; after "unsupported path" the store does not ask again.
    assert seen.count("LIST /v1/secret/detailed-metadata/leanix/access-tokens") == 1


@pytest.fixture
def raw_servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


def test_a_200_answer_that_is_not_json_is_a_vault_error(raw_servers: list[RawServer]) -> None:
    server = RawServer(answer_with(b"<html>502 Bad Gateway</html>"))
    raw_servers.append(server)

    with pytest.raises(VaultError, match="not JSON"):
        _connect(server.url)


def test_an_answer_over_the_size_cap_is_refused(
    raw_servers: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vaulthttp, "MAX_BODY_BYTES", 64 * 1024)
    server = RawServer(answer_with(b'{"data": "' + b"x" * (1024 * 1024) + b'"}'))
    raw_servers.append(server)

    with pytest.raises(VaultError, match="larger than 64 KiB"):
        _connect(server.url)


def test_the_size_cap_is_32_mib() -> None:
    assert vaulthttp.MAX_BODY_BYTES == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("head", "byte"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X"),  # the headers never end
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b" "),  # the body never ends
    ],
    ids=["headers", "body"],
)
def test_a_vault_dripping_its_answer_is_cut_off_at_the_deadline(
    raw_servers: list[RawServer], monkeypatch: pytest.MonkeyPatch, head: bytes, byte: bytes
) -> None:
    monkeypatch.setattr(vault_module, "VAULT_TIMEOUT_SECONDS", 0.5)
    server = RawServer(drip(head, byte, every=0.1))
    raw_servers.append(server)
    started = time.monotonic()

    with pytest.raises(VaultUnavailable, match="within the deadline"):
        _connect(server.url)

    # The deadline is twice the timeout; the slack is for a loaded 2-core machine.
    assert time.monotonic() - started < 2 * 0.5 + 1.0
