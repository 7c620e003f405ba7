"""rotator's own cycle, timed in-process: what `rotator rotate --all` does minus the command's
start-up and its report. Prints one JSON line; run by `bench/run.py` as a subprocess.

    VAULT_TOKEN=... python bench/cycle.py --config rotator.toml
    VAULT_TOKEN=... python bench/cycle.py --config rotator.toml --profile out.pstats [--top 25]

With `--profile`, the cycle (`Rotator.run_cycle(force=True)`) runs under cProfile with a CPU
clock: one `cProfile.Profile(time.thread_time)` per thread (the main thread and every thread the
cycle starts, its worker pool included), merged into one `pstats.Stats`. cProfile sees only the
thread that enabled it, hence one profiler per thread; and the clock is each thread's own CPU
time, because with `time.process_time` a thread blocked in a lock would be charged the CPU the
other threads burn meanwhile. The merged total is the CPU the cycle's threads used (compare
`cycle_cpu_seconds`, the process's CPU over the same call), inflated by the profiler's own
overhead. It prints the top functions by cumulative and by own time (tottime), writes the stats
to the `--profile` path (read them with `python -m pstats PATH`), and puts the top 15 of each in
the JSON line. (This is a mode of cycle.py rather than a bench/profile.py: a script named
profile.py in the script's directory would shadow the standard library's `profile` module,
which cProfile imports.)
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - the start time is taken before any import
import cProfile  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

from rotator import config as config_module  # noqa: E402
from rotator.cli import configure_logging  # noqa: E402
from rotator.wiring import build_rotator  # noqa: E402

JSON_TOP = 15


class ThreadProfiles:
    """One cProfile profiler per thread, on each thread's own CPU clock, while active."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles: list[cProfile.Profile] = []
        self._main = self._new()

    def _new(self) -> cProfile.Profile:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        return profile

    def _start_in_new_thread(self, frame: FrameType, event: str, arg: Any) -> None:
        """threading's profile hook: the first event of a new thread swaps in a profiler."""
        sys.setprofile(None)
        self._new().enable()

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start_in_new_thread)
        self._main.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self._main.disable()
        threading.setprofile(None)

    def stats(self) -> pstats.Stats:
        """Every thread's profile merged. Call after the profiled threads have ended."""
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        return stats


def function_name(key: tuple[str, int, str]) -> str:
    """`rotator/vault.py:308(read_output)`: the path from the package (or stdlib) down."""
    filename, line, name = key
    if filename == "~":
        return name  # a built-in: "<method 'recv_into' of '_socket.socket' objects>"
    for marker in ("site-packages/", "/snapshot/", "/lib/python3."):
        at = filename.rfind(marker)
        if at >= 0:
            filename = filename[at + len(marker) :]
            if marker == "/lib/python3.":
                filename = filename.partition("/")[2]
            break
    else:
        filename = Path(filename).name
    return f"{filename}:{line}({name})"


def top_functions(stats: pstats.Stats, key: str, count: int) -> list[dict[str, Any]]:
    """The `count` functions with the most `key` ("tottime" or "cumtime"), as plain records."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = {"tottime": 2, "cumtime": 3}[key]
    rows = sorted(table.items(), key=lambda item: -item[1][index])[:count]
    return [
        {
            "function": function_name(func),
            "ncalls": calls,
            "tottime": round(tottime, 4),
            "cumtime": round(cumtime, 4),
        }
        for func, (_primitive, calls, tottime, cumtime, _callers) in rows
    ]


def print_top(title: str, rows: list[dict[str, Any]], total: float) -> None:
    print(title)
    print(f"  {'ncalls':>9} {'tottime':>8} {'cumtime':>8} {'cum %':>6}  function")
    for row in rows:
        share = 100 * row["cumtime"] / total if total else 0.0
        print(
            f"  {row['ncalls']:>9} {row['tottime']:>8.3f} {row['cumtime']:>8.3f} "
            f"{share:>5.1f}%  {row['function']}"
        )
    print()


def profiled(
    run: Callable[[], list[Any]], stats_path: Path, top: int
) -> tuple[list[Any], dict[str, Any]]:
    """Run `run()` under per-thread CPU profilers; print and save the profile."""
    with ThreadProfiles() as profiles:
        outcomes = run()
    stats = profiles.stats()
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(stats_path)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    by_cumulative = top_functions(stats, "cumtime", max(top, JSON_TOP))
    by_tottime = top_functions(stats, "tottime", max(top, JSON_TOP))
    print(f"profile: {total:.3f} CPU seconds in {len(profiles.profiles)} thread(s)\n")
    print_top(f"top {top} by cumulative time (CPU s, all threads)", by_cumulative[:top], total)
    print_top(f"top {top} by own time, tottime (CPU s, all threads)", by_tottime[:top], total)
    return outcomes, {
        "profile_cpu_seconds": total,
        "profile_threads": len(profiles.profiles),
        "profile_stats_file": str(stats_path),
        "profile_top_tottime": by_tottime[:JSON_TOP],
        "profile_top_cumulative": by_cumulative[:JSON_TOP],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--profile", type=Path, metavar="STATS", help="profile the cycle; write pstats here"
    )
    parser.add_argument("--top", type=int, default=25, help="functions printed per table (25)")
    args = parser.parse_args()
    configure_logging("INFO")  # the same logging (and redaction) as the command
    imported = time.perf_counter()
    config = config_module.load(args.config, os.environ)
    rotator = build_rotator(config)  # connects and looks up its Vault token
    rotator.join_once()  # as `rotator rotate` does: claims only if a daemon is live
    connected = time.perf_counter()
    names = rotator.discover()
    discovered = time.perf_counter()
    timing: dict[str, float] = {}

    def cycle() -> list[Any]:
        cpu_before, started = time.process_time(), time.perf_counter()
        outcomes = rotator.run_cycle(names, force=True)
        timing["cycle_seconds"] = time.perf_counter() - started
        timing["cycle_cpu_seconds"] = time.process_time() - cpu_before  # every thread's
        return outcomes

    extra: dict[str, Any] = {}
    if args.profile is None:
        outcomes = cycle()
    else:
        outcomes, extra = profiled(cycle, args.profile, args.top)
    rotator.exchanger.close()
    print(
        json.dumps(
            {
                "tokens": len(outcomes),
                "healthy": sum(1 for outcome in outcomes if outcome.healthy),
                "workers": config.exchange.max_workers,
                "import_seconds": imported - STARTED,
                "connect_seconds": connected - imported,
                "discover_seconds": discovered - connected,
                **timing,
                "profiled": args.profile is not None,
                **extra,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
