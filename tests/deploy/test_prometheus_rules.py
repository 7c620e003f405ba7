"""The Prometheus alerting rules in deploy/ are valid and behave as their tests say (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise AssertionError("promtool is missing: `make tools` installs it (Debian: prometheus)")
    return found


def test_rules_file_is_valid() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", "rotator-rules.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", "rotator-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
