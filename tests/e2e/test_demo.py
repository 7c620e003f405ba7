"""`rotator demo` (what `make demo` runs) shows tokens being refreshed and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess

from tests.e2e.conftest import ROTATOR


def _bao_servers_on(port: str) -> str:
    """pgrep's answer for an OpenBao server listening on `port` (empty when there is none)."""
    pattern = f"bao server -dev.*-dev-listen-address=127.0.0.1:{port}"
    result = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def test_demo_refreshes_tokens_replaces_an_api_token_shows_the_revoked_one_and_cleans_up() -> None:
    # 30 s tokens refresh after ~24 s: a 35 s run shows each healthy token issued twice.
    result = subprocess.run(
        [str(ROTATOR), "demo", "--duration", "35"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    last_table = result.stdout.rsplit("rotator demo - ", 1)[-1]
    rows = {line.split()[0]: line.split() for line in last_table.splitlines()[2:] if line.strip()}
    assert rows["acme/production"][1] == "fresh"
    assert rows["acme/production"][4] == "2", last_table  # ISSUED/1H: refreshed once
    assert rows["acme/sandbox"][4] == "2", last_table
    assert rows["legacy/old-integration"][1] == "failing"
    # The technical user's API token came due a few seconds in and was replaced at MTM once.
    assert "acme/integration's API token replaced 1x at MTM" in last_table.splitlines()[0]
    assert rows["acme/integration"][1] == "fresh"
    assert "demo stopped" in result.stdout
    port = re.search(r"OpenBao dev server: http://127\.0\.0\.1:(\d+)", result.stdout)
    assert port, result.stdout[:500]
    assert _bao_servers_on(port.group(1)) == "", "the demo left its OpenBao server running"
