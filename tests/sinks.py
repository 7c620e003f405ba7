"""Real receivers for alert sinks, on loopback: a recording webhook server, a Sentry envelope sink,
and a real Alertmanager process (Debian's `prometheus-alertmanager`). A missing binary fails."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rotator.dev.devvault import free_port
from tests.waiting import stop_process


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingServer:
    """An HTTP server that records every POST and answers `status` (mutable; default 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with recorder._lock:
                    recorder.received.append(Received(self.path, dict(self.headers), body))
                    status = recorder.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [item.json() for item in self.received]

    def raw_text(self) -> str:
        with self._lock:
            return "\n".join(item.body.decode("utf-8", "replace") for item in self.received)


class EnvelopeSink(RecordingServer):
    """Receives what the real sentry-sdk sends for the DSN `self.dsn`."""

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def items(self) -> list[tuple[dict[str, Any], Any]]:
        """Every (item header, payload) of every envelope received."""
        items = []
        for received in list(self.received):
            lines = received.body.split(b"\n")
            index = 1  # line 0 is the envelope header
            while index < len(lines) and lines[index]:
                header = json.loads(lines[index])
                payload = lines[index + 1] if index + 1 < len(lines) else b""
                try:
                    items.append((header, json.loads(payload)))
                except ValueError:
                    items.append((header, payload))
                index += 2
        return items

    def events(self) -> list[dict[str, Any]]:
        return [payload for header, payload in self.items() if header.get("type") == "event"]

    def check_ins(self) -> list[dict[str, Any]]:
        return [payload for header, payload in self.items() if header.get("type") == "check_in"]


ALERTMANAGER_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1h
receivers:
  - name: blackhole
"""


class Alertmanager:
    """A real Alertmanager on a free loopback port, with throwaway storage."""

    def __init__(self) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError(
                "Alertmanager is missing: `make tools` installs it (prometheus-alertmanager)"
            )
        self._binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="alertmanager-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        config = self._dir / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG)
        with (self._dir / "log").open("wb") as log:
            self._process = self._spawn(config, log)
        return self._wait_ready()

    def _spawn(self, config: Path, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self._binary,
                f"--config.file={config}",
                f"--storage.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip: a single instance
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def _wait_ready(self) -> Self:
        assert self._process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self._dir / 'log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("alertmanager did not become ready in 30 s")

    def alerts(self, active: bool = True) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts`: active alerts (or, with active=False, resolved ones too)."""
        query = "" if active else "?active=true&inhibited=true&silenced=true&unprocessed=true"
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts{query}", timeout=5) as response:
            return list(json.loads(response.read()))

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
