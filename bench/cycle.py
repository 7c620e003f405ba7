"""rotator's own cycle, timed in-process: what `rotator rotate --all` does minus the command's
start-up and its report. Prints one JSON line; run by `bench/run.py` as a subprocess.

    VAULT_TOKEN=... python bench/cycle.py --config rotator.toml
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - the start time is taken before any import
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from rotator import config as config_module  # noqa: E402
from rotator.cli import configure_logging  # noqa: E402
from rotator.service import build_rotator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    configure_logging("INFO")  # the same logging (and redaction) as the command
    imported = time.perf_counter()
    config = config_module.load(args.config, os.environ)
    rotator = build_rotator(config)  # connects and looks up its Vault token
    connected = time.perf_counter()
    names = rotator.discover()
    discovered = time.perf_counter()
    outcomes = rotator.run_cycle(names, force=True)
    done = time.perf_counter()
    rotator.exchanger.close()
    print(
        json.dumps(
            {
                "tokens": len(outcomes),
                "healthy": sum(1 for outcome in outcomes if outcome.healthy),
                "import_seconds": imported - STARTED,
                "connect_seconds": connected - imported,
                "discover_seconds": discovered - connected,
                "cycle_seconds": done - discovered,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
