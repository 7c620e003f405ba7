"""tests/ensure-tools.sh installs the Debian tools the tests need, or says how, before any test.

The script runs as a subprocess with PATH set to a directory of its own: symlinks to the few
basic tools it uses, stub binaries for the tools a case has, and stub `apt-get` / `sudo` scripts
that record their argv. The stubs stand in for the OS package manager (nothing here fakes hvac or
requests). Unprivileged cases run as a real unprivileged user (`nobody`, through setpriv) when
the suite runs as root; root cases run in a user namespace (`unshare --map-root-user`) when it
does not.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "ensure-tools.sh"
BASIC_TOOLS = ("bash", "env", "id")  # what the script runs besides the tools it looks for
NOBODY = 65534
UNPRIVILEGED_DEADLINE_SECONDS = 5.0
BINARY_OF = {
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus": "promtool",
    "systemd": "systemd-analyze",
}


def _which(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise AssertionError(f"{tool} is missing on this machine; the test needs it")
    return found


@dataclass
class Sandbox:
    """A world-readable directory with the script, a bin/ for PATH and the stubs' call record."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def record(self) -> Path:
        return self.root / "calls"

    def calls(self) -> list[str]:
        return self.record.read_text().splitlines()

    def tool(self, name: str) -> None:
        """A stand-in binary that is merely there, as an installed tool would be."""
        self._script(name, "exit 0\n")

    def apt_get(self, *, fail: bool = False, installs: bool = True) -> None:
        """Records `DEBIAN_FRONTEND` and argv; `install` puts the packages' binaries on PATH."""
        chmod = _which("chmod")
        lines = [f'echo "apt-get[$DEBIAN_FRONTEND] $*" >> {self.record}']
        if fail:
            lines.append('echo "E: Unable to locate package $*" >&2; exit 100')
        if installs:
            lines.append('[ "$1" = install ] || exit 0')
            lines.append('for package in "$@"; do case "$package" in')
            for package, binary in BINARY_OF.items():
                target = self.bin / binary
                lines.append(
                    f"  {package}) printf '#!/bin/sh\\n' > {target} && {chmod} 0755 {target};;"
                )
            lines.append("esac; done")
        self._script("apt-get", "\n".join(lines) + "\n")

    def sudo(self, *, passwordless: bool) -> None:
        """Records argv; passwordless, `sudo -n CMD` runs CMD (as the caller: it is a stub)."""
        body = f'echo "sudo $*" >> {self.record}\n'
        if passwordless:
            body += '[ "$1" = -n ] || exit 1\nshift\n[ "$1" = true ] && exit 0\nexec "$@"\n'
        else:
            body += 'echo "sudo: a password is required" >&2\nexit 1\n'
        self._script("sudo", body)

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def run(self, *, root: bool) -> tuple[subprocess.CompletedProcess[str], float]:
        """The script, as root or as an unprivileged user; the result and its seconds."""
        argv = [str(self.root / SCRIPT.name)]
        if root and os.geteuid() != 0:
            argv = [_which("unshare"), "--map-root-user", "--", *argv]
        elif not root and os.geteuid() == 0:
            argv = [
                _which("setpriv"),
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--",
                *argv,
            ]
        began = time.monotonic()
        result = subprocess.run(
            argv,
            env={"PATH": str(self.bin), "HOME": str(self.root), "LANG": "C"},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result, time.monotonic() - began


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Not under pytest's tmp_path: its parents are mode 0700, closed to the unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="ensure-tools-"))
    try:
        root.chmod(0o755)
        box = Sandbox(root)
        box.bin.mkdir()
        box.bin.chmod(0o777)  # the stub apt-get "installs" here, as nobody in the sudo case
        for tool in BASIC_TOOLS:
            (box.bin / tool).symlink_to(_which(tool))
        shutil.copy(SCRIPT, root / SCRIPT.name)
        (root / SCRIPT.name).chmod(0o755)
        box.record.touch()
        box.record.chmod(0o666)
        yield box
    finally:
        shutil.rmtree(root)


def test_the_script_is_executable_bash_with_strict_mode() -> None:
    text = SCRIPT.read_text()

    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text.splitlines()


@pytest.mark.parametrize("root", [True, False], ids=["root", "unprivileged"])
def test_nothing_missing_installs_nothing_and_prints_nothing(sandbox: Sandbox, root: bool) -> None:
    for tool in ("prometheus-alertmanager", "promtool", "systemd-analyze"):
        sandbox.tool(tool)
    sandbox.apt_get()

    result, _ = sandbox.run(root=root)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sandbox.calls() == []


def test_alertmanager_under_its_upstream_name_counts_as_installed(sandbox: Sandbox) -> None:
    for tool in ("alertmanager", "promtool", "systemd-analyze"):
        sandbox.tool(tool)
    sandbox.apt_get()

    result, _ = sandbox.run(root=True)

    assert result.returncode == 0, result.stderr
    assert sandbox.calls() == []


@pytest.mark.parametrize(
    ("present", "packages", "named"),
    [
        (["systemd-analyze"], "prometheus-alertmanager prometheus", "alertmanager, promtool"),
        (["promtool", "systemd-analyze"], "prometheus-alertmanager", "alertmanager"),
        (["prometheus-alertmanager", "promtool"], "systemd", "systemd-analyze"),
        (
            [],
            "prometheus-alertmanager prometheus systemd",
            "alertmanager, promtool, systemd-analyze",
        ),
    ],
    ids=["alertmanager+promtool", "alertmanager", "systemd-analyze", "all"],
)
def test_as_root_it_updates_once_and_installs_exactly_the_missing_packages(
    sandbox: Sandbox, present: list[str], packages: str, named: str
) -> None:
    for tool in present:
        sandbox.tool(tool)
    sandbox.apt_get()

    result, _ = sandbox.run(root=True)

    assert result.returncode == 0, result.stderr
    assert sandbox.calls() == [
        "apt-get[noninteractive] update -qq",
        f"apt-get[noninteractive] install -y -qq --no-install-recommends {packages}",
    ]
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"ensure-tools: installed {packages} in ")
    assert f"({named} missing; the tests run them as real servers and tools)" in line


@pytest.mark.parametrize("sudo", [None, "password required"], ids=["no-sudo", "sudo-with-password"])
def test_unprivileged_without_passwordless_sudo_stops_at_once_with_the_command(
    sandbox: Sandbox, sudo: str | None
) -> None:
    sandbox.tool("systemd-analyze")
    sandbox.apt_get()
    if sudo is not None:
        sandbox.sudo(passwordless=False)

    result, seconds = sandbox.run(root=False)

    assert result.returncode == 2
    assert seconds < UNPRIVILEGED_DEADLINE_SECONDS
    assert result.stdout == ""
    assert (
        "  sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        "prometheus-alertmanager prometheus"
    ) in result.stderr.splitlines()
    assert "alertmanager, promtool missing" in result.stderr
    assert sandbox.calls() == ([] if sudo is None else ["sudo -n true"])


def test_unprivileged_with_passwordless_sudo_installs_through_sudo(sandbox: Sandbox) -> None:
    sandbox.tool("systemd-analyze")
    sandbox.apt_get()
    sandbox.sudo(passwordless=True)

    result, _ = sandbox.run(root=False)

    assert result.returncode == 0, result.stderr
    assert sandbox.calls() == [
        "sudo -n true",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get[noninteractive] update -qq",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends prometheus-alertmanager prometheus",
        "apt-get[noninteractive] install -y -qq --no-install-recommends "
        "prometheus-alertmanager prometheus",
    ]
    assert result.stdout.startswith("ensure-tools: installed prometheus-alertmanager prometheus ")
    assert len(result.stdout.splitlines()) == 1


def test_a_failing_apt_get_fails_the_script_and_shows_its_output(sandbox: Sandbox) -> None:
    sandbox.tool("promtool")
    sandbox.tool("systemd-analyze")
    sandbox.apt_get(fail=True)

    result, _ = sandbox.run(root=True)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "E: Unable to locate package update -qq" in result.stderr
    assert "ensure-tools: apt-get update failed" in result.stderr
    assert sandbox.calls() == ["apt-get[noninteractive] update -qq"]


def test_a_tool_still_missing_after_the_install_fails_the_script(sandbox: Sandbox) -> None:
    sandbox.tool("prometheus-alertmanager")
    sandbox.tool("systemd-analyze")
    sandbox.apt_get(installs=False)

    result, _ = sandbox.run(root=True)

    assert result.returncode == 1
    assert "promtool still not on PATH" in result.stderr


def test_without_apt_get_it_names_the_packages(sandbox: Sandbox) -> None:
    sandbox.tool("prometheus-alertmanager")
    sandbox.tool("promtool")

    result, _ = sandbox.run(root=True)

    assert result.returncode == 2
    assert "no apt-get here: install the Debian packages systemd" in result.stderr


def _make_dry_run(target: str) -> list[str]:
    # Not the outer make's flags and jobserver (`make test` runs this very test).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        [_which("make"), "-n", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


def test_make_test_runs_the_script_before_anything_else() -> None:
    assert _make_dry_run("test")[0] == "tests/ensure-tools.sh"


@pytest.mark.parametrize("target", ["integration", "e2e"])
def test_the_layers_with_real_servers_run_the_script(target: str) -> None:
    assert "tests/ensure-tools.sh" in _make_dry_run(target)


@pytest.mark.parametrize("target", ["unit", "lint"])
def test_unit_and_lint_do_not_need_the_tools(target: str) -> None:
    assert "tests/ensure-tools.sh" not in _make_dry_run(target)


def test_ci_installs_nothing_that_make_test_does_not() -> None:
    commands = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    assert not any("apt-get" in line for line in commands), commands
    assert "make test" in commands
