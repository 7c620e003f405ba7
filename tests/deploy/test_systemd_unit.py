"""systemd/rotator.service passes `systemd-analyze verify`, scores 1.2 or lower on
`systemd-analyze security --offline=yes`, and bounds what a compromised or runaway process can
take: no core dumps, a task and a memory limit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "rotator.service"
MAX_EXPOSURE = 1.2


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        raise AssertionError("systemd-analyze is missing: `make tools` installs it (systemd)")
    return found


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's rotator: verify checks it exists."""
    rotator = Path(sys.executable).with_name("rotator")
    text = UNIT.read_text().replace("/opt/rotator/venv/bin/rotator", str(rotator))
    copy = tmp_path / "rotator.service"
    copy.write_text(text)
    return copy


def test_unit_verifies(tmp_path: Path) -> None:
    result = subprocess.run(
        [_analyze(), "verify", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "rotator.service" not in result.stderr, result.stderr


def test_unit_exposure_score_is_at_most_1_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [_analyze(), "security", "--offline=yes", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    match = re.search(r"Overall exposure level for rotator\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_unit_runs_rotator_as_a_notify_service_with_a_watchdog() -> None:
    text = UNIT.read_text()

    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "DynamicUser=yes",
        "LoadCredential=secret-id:/etc/rotator/secret-id",
    ):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)


def _setting(name: str) -> str:
    values = re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)
    assert len(values) == 1, f"{name}= is set {len(values)} times"
    return values[0].strip()


def test_the_unit_never_dumps_core() -> None:
    # A core dump holds every token in memory at the time.
    assert _setting("LimitCORE") == "0"


def test_the_unit_bounds_its_tasks_with_headroom_over_the_default_threads() -> None:
    # About 34 threads at the default max_workers = 8 (see the comment in the unit).
    assert 64 <= int(_setting("TasksMax")) <= 256


def test_the_unit_bounds_its_memory_with_headroom_over_the_benchmark() -> None:
    # bench: 169 MiB resident at 10,000 tokens.
    value = _setting("MemoryMax")
    assert value.endswith("M")
    assert 2 * 169 <= int(value[:-1]) <= 2048
