"""`rotator demo`: the whole system on one laptop, nothing to configure.

Starts an OpenBao dev server and the LeanIX stand-in on free loopback ports, seeds four API
tokens (one of them revoked at the stand-in, one a technical user's whose API token comes due for
replacement a few seconds in and is replaced at the stand-in's MTM), runs the daemon with
30-second access tokens so refreshes are visible within a minute, and redraws a status table
until Ctrl-C (or `--duration`). Everything it started is stopped on the way out.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from rotator import config as config_module
from rotator import report
from rotator.daemon import Daemon
from rotator.dev.devvault import DevVault, free_port
from rotator.dev.standin import LeanIXStandIn
from rotator.outcome import State
from rotator.redact import install_filter
from rotator.service import run_service
from rotator.tokens import format_time
from rotator.wiring import build_rotator

logger = logging.getLogger(__name__)

DEMO_LIFETIME_SECONDS = 30
SOURCE_PREFIX = "leanix/api-tokens"
OUTPUT_PREFIX = "leanix/access-tokens"
MANAGED = "acme/integration"  # a technical user whose API token rotator replaces at MTM
REPLACED_AFTER_SECONDS = 12
TOKENS = {
    # name in Vault: (workspace, revoked at the stand-in?)
    "acme/production": ("acme-prod", False),
    "acme/sandbox": ("acme-sandbox", False),
    "legacy/old-integration": ("legacy", True),
}


class _RecentLog(logging.Handler):
    """Keeps the last few log lines for the live table instead of scrolling them away."""

    def __init__(self, size: int = 8) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def run_demo(duration: float | None = None) -> int:
    """Run the demo until Ctrl-C or `duration` seconds; returns 0."""
    interactive = sys.stdout.isatty()
    recent = _RecentLog()
    root = logging.getLogger()
    if interactive:
        # The table is redrawn in place; log lines go under it rather than scrolling it away.
        for handler in list(root.handlers):
            root.removeHandler(handler)
    install_filter(recent)
    root.addHandler(recent)

    metrics_port = free_port()
    with DevVault() as vault, LeanIXStandIn(lifetime_seconds=DEMO_LIFETIME_SECONDS) as standin:
        config = config_module.parse(
            {
                "vault": {
                    "addr": vault.addr,
                    "source_prefix": SOURCE_PREFIX,
                    "output_prefix": OUTPUT_PREFIX,
                },
                "exchange": {
                    "allowed_hosts": ["127.0.0.1"],
                    "insecure_http_hosts": ["127.0.0.1"],
                    "max_backoff_seconds": 20,
                },
                "schedule": {"check_interval_seconds": 10, "discovery_interval_seconds": 15},
                # 30 s tokens refresh ~150 times an hour; the production default (6) would
                # cap them after a few minutes.
                "alerts": {"max_issuances_per_hour": 200},
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "api_tokens": {"lookup_interval_seconds": 10},
            },
            {"VAULT_TOKEN": vault.root_token},
        )
        rotator = build_rotator(config)
        for name, (workspace, revoked) in TOKENS.items():
            api_token = "demo-" + secrets.token_urlsafe(24)
            standin.add_token(api_token, workspace_name=workspace)
            if revoked:
                standin.revoke(api_token)
            source = {"api_token": api_token, "token_url": standin.token_url}
            rotator.store.write_source(name, source)
        # One technical user whose API token comes due for replacement a few seconds in: its
        # expiry lies just past the 14-day margin of api_tokens.replace_before_expiry_days.
        expiry = datetime.now(UTC) + timedelta(days=14, seconds=REPLACED_AFTER_SECONDS)
        api_token = "demo-" + secrets.token_urlsafe(24)
        user_id = standin.add_token(api_token, workspace_name="acme-integration", expiry=expiry)
        managed = {
            "api_token": api_token,
            "token_url": standin.token_url,
            "technical_user_id": user_id,
            "api_token_expires_at": format_time(expiry),
        }
        rotator.store.write_source(MANAGED, managed)

        print(_banner(vault, standin.token_url, metrics_port), flush=True)
        stop = threading.Event()
        if duration is not None:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True
            timer.start()

        code = run_service(
            config,
            rotator,
            stop,
            on_idle=lambda daemon: _draw(daemon, recent, interactive, standin, user_id),
            idle_seconds=2.0,
        )
        print("demo stopped; OpenBao and the stand-in are shut down.")
        return code


def _draw(
    daemon: Daemon, recent: _RecentLog, interactive: bool, standin: LeanIXStandIn, user_id: str
) -> None:
    rotator = daemon.rotator
    names = sorted(daemon.names)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(rotator.inspect, names))
    for index, outcome in enumerate(outcomes):
        last = daemon.last_outcomes.get(outcome.name)
        if last is not None and last.state is State.FAILING:
            outcomes[index] = last  # show why a token is failing, not only that it is
    if interactive:
        sys.stdout.write("\x1b[H\x1b[J")
    now = datetime.now(UTC).strftime("%H:%M:%S")
    replaced = standin.replacements(user_id)
    print(
        f"rotator demo - {now} UTC - {standin.requests_total} requests at the stand-in - "
        f"{MANAGED}'s API token replaced {replaced}x at MTM"
    )
    counts = rotator.issuance_counts(outcomes)
    sys.stdout.write(report.render(outcomes, counts, datetime.now(UTC), as_json=False))
    if interactive:
        print("\nrecent events:")
        for line in recent.lines:
            print("  " + line)
        print("\nCtrl-C stops everything.")
    sys.stdout.flush()


def _banner(vault: DevVault, token_url: str, metrics_port: int) -> str:
    return (
        f"OpenBao dev server: {vault.addr}  (root token: {vault.root_token}; dev only)\n"
        f"LeanIX stand-in:    {token_url}  (access tokens live {DEMO_LIFETIME_SECONDS}s)\n"
        f"Metrics:            http://127.0.0.1:{metrics_port}/metrics\n"
        f"Read a token as a consumer would:\n"
        f"  BAO_ADDR={vault.addr} BAO_TOKEN={vault.root_token} \\\n"
        f"    bao kv get -field=access_token secret/{OUTPUT_PREFIX}/acme/production\n"
    )
