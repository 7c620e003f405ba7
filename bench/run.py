"""Fleet-scale rotation, measured side by side (issues 6 and 14). Run by `make bench`, never by
`make test`.

Against a real OpenBao dev server and the LeanIX stand-in with injected per-request latency:

1. `rotator rotate --all` as the installed command (wall clock, CPU), for N/4, N/2 and N tokens;
   beside it the same cycle timed in-process (`bench/cycle.py`: `Rotator.run_cycle` only);
2. the naive baseline (`bench/naive.py`): sequential, a new connection per request; CPU per
   rotation of both, measured the same way;
3. the latency-bound limit ceil(N/W) x latency;
4. the most exchanges the IdP saw at once (must be <= W);
   a profile of one forced in-process cycle of N tokens (`bench/cycle.py --profile`);
   Vault requests per token of `rotate --all`, twice on one output prefix (first, steady);
5. `rotator run` with 2,000 and 10,000 tokens: RSS after the first full cycle, CPU while idle;
6. the daemon's Vault requests per token per hour while idle, counted by a proxy, by route;
7. two `rotator run` instances sharing 2,000 tokens: the split, issuances, total time;
8. the daemon's steady state with short-lived access tokens: Vault requests per refresh;
9. the same with two instances, and the issuances beyond one per token and generation.

Prints a table, writes bench/results/bench.json (git-ignored; logs and configs beside it), a
copy at bench/last-run.json and the chart at bench/chart.png (matplotlib, bench/chart.py).
Targets (issue 14's) are reported, not asserted.

    .venv/bin/python bench/run.py [--tokens N] [--workers W] [--latency-ms L] [--quick]
    .venv/bin/python bench/run.py --chart-from bench/last-run.json   # redraw bench/chart.png only
    .venv/bin/python bench/run.py --profile-only [--tokens N]        # one profiled cycle only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chart
import hvac
import hvac.exceptions
from vaultproxy import CountingProxy

from rotator.dev.devvault import DevVault, free_port
from rotator.dev.standin import LeanIXStandIn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = Path(sys.executable)
ROTATOR = PYTHON.with_name("rotator")
MOUNT = "secret"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SEED_WORKERS = 8
SETTLE_SECONDS = 5.0  # scale-out: after the last output appears, for late double issues
STORED = re.compile(r"stored access token")
CLAIMED_ELSEWHERE = re.compile(r"another rotator is refreshing it|refreshed elsewhere")


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    tokens: int
    workers: int
    latency_ms: float
    quick: bool
    repeat: int
    fleet: tuple[int, ...]
    scale_out_tokens: int
    steady_tokens: int = 50
    steady_lifetime: int = 40
    steady_interval: float = 1.0
    steady_generations: int = 2
    profile_only: bool = False

    @property
    def sizes(self) -> tuple[int, ...]:
        """The N values of the chart: N/4, N/2 and N (100, 200, 400 by default)."""
        return tuple(sorted({max(1, self.tokens // 4), max(1, self.tokens // 2), self.tokens}))

    @property
    def latency(self) -> float:
        return self.latency_ms / 1000

    def limit(self, n: int) -> float:
        """The latency-bound limit: W exchanges at a time, each taking the injected latency."""
        return math.ceil(n / self.workers) * self.latency

    @property
    def steady_quiet(self) -> float:
        """Steady state: an issuance burst (a refresh generation) has ended once no access token
        was issued for this long; two check intervals and a second, so the next check's look at
        what the burst wrote falls before it."""
        return 2 * self.steady_interval + 1


def parse_options(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    """The run's options, and the saved run to redraw the chart from instead (--chart-from)."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Fleet-scale rotation, measured side by side."
    )
    parser.add_argument("--tokens", type=int, default=400, help="N for rotate --all (default 400)")
    parser.add_argument("--workers", type=int, default=8, help="W, exchange.max_workers (8)")
    parser.add_argument(
        "--latency-ms", type=float, default=25.0, help="injected IdP latency per request (25)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip the 10,000-token case; one run per figure"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per timing figure, median kept (3; quick 1)"
    )
    parser.add_argument(
        "--fleet",
        default="2000,10000",
        help="token counts for `rotator run`, comma-separated; the smallest is also the "
        "scale-out case (default 2000,10000; --quick keeps the smallest)",
    )
    parser.add_argument(
        "--steady-tokens",
        type=int,
        default=50,
        help="tokens of the daemon's steady-state runs (50; 0 skips them)",
    )
    parser.add_argument(
        "--steady-lifetime",
        type=int,
        default=40,
        help="access-token lifetime in s the stand-in announces for the steady-state runs (40)",
    )
    parser.add_argument(
        "--steady-interval",
        type=float,
        default=Options.steady_interval,
        help="schedule.check_interval_seconds of the steady-state runs (1)",
    )
    parser.add_argument(
        "--steady-generations",
        type=int,
        default=2,
        help="refresh generations in the steady-state window (2)",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="measure nothing else: profile one forced cycle of --tokens tokens and print it",
    )
    parser.add_argument(
        "--chart-from",
        type=Path,
        metavar="JSON",
        help="measure nothing: redraw bench/chart.png from a saved run (e.g. bench/last-run.json)",
    )
    args = parser.parse_args(argv)
    try:
        fleet = tuple(sorted({int(size) for size in args.fleet.split(",") if size.strip()}))
    except ValueError:
        parser.error("--fleet wants comma-separated token counts")
    if not fleet or fleet[0] < 1:
        parser.error("--fleet wants at least one positive token count")
    if args.quick:
        fleet = fleet[:1]
    if args.tokens < 1 or args.workers < 1 or args.latency_ms < 0:
        parser.error("--tokens and --workers must be >= 1, --latency-ms >= 0")
    if args.steady_tokens < 0 or args.steady_generations < 1 or args.steady_interval < 1:
        parser.error("--steady-tokens >= 0, --steady-generations >= 1, --steady-interval >= 1")
    options = Options(
        tokens=args.tokens,
        workers=args.workers,
        latency_ms=args.latency_ms,
        quick=args.quick,
        repeat=args.repeat or (1 if args.quick else 3),
        fleet=fleet,
        scale_out_tokens=fleet[0],
        steady_tokens=args.steady_tokens,
        steady_lifetime=args.steady_lifetime,
        steady_interval=args.steady_interval,
        steady_generations=args.steady_generations,
        profile_only=args.profile_only,
    )
    # Refresh generations must stay apart by more than the quiet that ends one: a token is
    # refreshed after 0.8 of the lifetime minus up to 5 % of it (policy.refresh_at), so a
    # generation's burst widens by up to 5 % of the lifetime per generation.
    lifetime = options.steady_lifetime
    spread = 0.05 * lifetime * (options.steady_generations + 2)
    if options.steady_tokens and 0.8 * lifetime - spread < options.steady_quiet + 5:
        parser.error(
            f"--steady-lifetime {lifetime} is too short for --steady-interval "
            f"{options.steady_interval:g}: refresh generations would run into each other"
        )
    return options, args.chart_from


# --- processes ----------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes, and the thread count, from /proc/<pid>/status."""
    status: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0]) * 1024
        elif key == "Threads":
            status[key] = int(value)
    return status


def machine_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Timed:
    """One subprocess run to completion: wall clock, its CPU, and where the rest of the CPU went
    meanwhile (OpenBao; this process, which hosts the IdP stand-in and the Vault proxy)."""

    wall: float
    cpu: float
    vault_cpu: float
    bench_cpu: float
    other_cpu: float  # every other process on the machine: a sign of a noisy neighbour
    returncode: int
    stdout: str = field(repr=False)


def without_vault_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "BAO_")) and key != "SENTRY_DSN"
    }


def tree_hash(package: Path) -> str:
    """sha256 over every .py file of a package: its relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git invocations
            ["git", *args],  # noqa: S607 - git from PATH, like any developer tool
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.rstrip()


def snapshot_rotator(directory: Path) -> dict[str, Any]:
    """Copy `rotator/` to `directory` so that every process of this run uses one version,
    whatever others change in the working tree meanwhile; returns where it came from."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(
        ROOT / "rotator", directory / "rotator", ignore=shutil.ignore_patterns("__pycache__")
    )
    dirty = git("status", "--porcelain", "--", "rotator")
    return {
        "path": str(directory),
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        "uncommitted_files": dirty.splitlines() if dirty else [],
        "sha256": tree_hash(directory / "rotator"),
    }


# --- the rig: OpenBao, the stand-in, seeding, configs ---------------------------------------------


class Rig:
    """A dev Vault and a stand-in IdP, plus the secrets seeded into them and configs for them."""

    def __init__(
        self,
        vault: DevVault,
        idp: LeanIXStandIn,
        options: Options,
        workdir: Path,
        code: Path | None = None,
    ):
        """`code`: a directory holding the `rotator` package every rotator process imports."""
        self.code = code
        self.vault = vault
        self.idp = idp
        self.options = options
        self.workdir = workdir
        self.root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=30)
        self._seeded: dict[int, str] = {}
        self._serial = 0
        process = getattr(vault, "_process", None)  # DevVault keeps its Popen private
        self.vault_pid: int | None = process.pid if process is not None else None

    def env(self) -> dict[str, str]:
        env = {**without_vault_env(), "VAULT_TOKEN": self.vault.root_token}
        if self.code is not None:
            # Ahead of the venv's editable finder, which would load the live working tree.
            env["PYTHONPATH"] = str(self.code)
        return env

    def rotator_location(self) -> str:
        """Where rotator processes of this rig import the package from."""
        done = subprocess.run(  # noqa: S603 - our own interpreter
            [str(PYTHON), "-c", "import rotator; print(rotator.__file__)"],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout.strip() or done.stderr.strip()

    def vault_cpu(self) -> float:
        return proc_cpu_seconds(self.vault_pid) if self.vault_pid else 0.0

    def fresh(self, kind: str) -> str:
        """A new, unused Vault prefix (no output history, so no issuance cap carries over)."""
        self._serial += 1
        return f"bench/out/{kind}-{self._serial}"

    def sources(self, count: int) -> str:
        """The source prefix holding `count` API tokens, seeded on first use."""
        if count not in self._seeded:
            prefix = f"bench/src/n{count}"
            started = time.perf_counter()
            self._seed(prefix, count)
            log(f"seeded {count} source secrets in {time.perf_counter() - started:.1f}s")
            self._seeded[count] = prefix
        return self._seeded[count]

    def _seed(self, prefix: str, count: int) -> None:
        local = threading.local()
        token_url = self.idp.token_url

        def put(index: int) -> None:
            client: hvac.Client | None = getattr(local, "client", None)
            if client is None:
                client = local.client = hvac.Client(
                    url=self.vault.addr, token=self.vault.root_token, timeout=30
                )
            api_token = "bench-" + secrets.token_urlsafe(24)
            self.idp.add_token(api_token, workspace_name=f"ws{index}")
            client.secrets.kv.v2.create_or_update_secret(
                f"{prefix}/tok-{index:05d}",
                secret={"api_token": api_token, "token_url": token_url},
                mount_point=MOUNT,
            )

        with ThreadPoolExecutor(SEED_WORKERS, thread_name_prefix="seed") as pool:
            list(pool.map(put, range(count)))

    def config(
        self,
        source_prefix: str,
        output_prefix: str,
        *,
        addr: str | None = None,
        metrics: bool = False,
        name: str = "rotator",
        check_interval: float | None = None,
        max_issuances_per_hour: int | None = None,
    ) -> Path:
        """A rotator config file for these prefixes; Vault at `addr` (default: the dev server).
        `check_interval` and `max_issuances_per_hour` default to rotator's own defaults."""
        listen = f"127.0.0.1:{free_port()}" if metrics else ""
        schedule = "" if check_interval is None else f"check_interval_seconds = {check_interval}\n"
        alerts = (
            ""
            if max_issuances_per_hour is None
            else f"max_issuances_per_hour = {max_issuances_per_hour}\n"
        )
        text = f"""\
[vault]
addr = "{addr or self.vault.addr}"
mount = "{MOUNT}"
source_prefix = "{source_prefix}"
output_prefix = "{output_prefix}"

[vault.auth]
method = "token"

[exchange]
allowed_hosts = ["127.0.0.1"]
insecure_http_hosts = ["127.0.0.1"]
max_workers = {self.options.workers}

[metrics]
listen = "{listen}"

[schedule]
{schedule}
[alerts]
{alerts}"""
        path = self.workdir / f"{name}-{self._serial}.toml"
        path.write_text(text)
        return path

    def count_outputs(self, prefix: str) -> int:
        try:
            listing = self.root.secrets.kv.v2.list_secrets(path=prefix, mount_point=MOUNT)
        except hvac.exceptions.InvalidPath:
            return 0
        return len(listing["data"]["keys"])

    def issued(self) -> int:
        return len(self.idp.issued)

    def run(self, argv: list[str], log_path: Path, timeout: float) -> Timed:
        """Run a command to completion with this rig's environment; stderr goes to `log_path`."""
        children, vault, bench = children_cpu_seconds(), self.vault_cpu(), self_cpu_seconds()
        busy = machine_busy_seconds()
        started = time.perf_counter()
        with log_path.open("w") as stderr:
            done = subprocess.run(  # noqa: S603 - our own interpreter and scripts
                argv,
                env=self.env(),
                cwd=self.workdir,  # not the checkout: its rotator/ would shadow the snapshot
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=timeout,
                check=False,
            )
        wall = time.perf_counter() - started
        cpu, vault_cpu = children_cpu_seconds() - children, self.vault_cpu() - vault
        bench_cpu = self_cpu_seconds() - bench
        return Timed(
            wall=wall,
            cpu=cpu,
            vault_cpu=vault_cpu,
            bench_cpu=bench_cpu,
            other_cpu=max(0.0, machine_busy_seconds() - busy - cpu - vault_cpu - bench_cpu),
            returncode=done.returncode,
            stdout=done.stdout,
        )

    @contextmanager
    def daemon(self, config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
        """`rotator run` in the background; SIGTERM (then SIGKILL) on the way out."""
        with log_path.open("wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - the installed rotator command
                [str(ROTATOR), "run", "--config", str(config)],
                env=self.env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def wait_served(
        self,
        prefix: str,
        count: int,
        processes: list[subprocess.Popen[bytes]],
        timeout: float,
        issued_before: int = 0,
    ) -> float | None:
        """Seconds until all `count` outputs exist under `prefix`; None at the deadline or when
        a process died. Polls the stand-in's issuance count (free) before Vault's LIST."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if any(process.poll() is not None for process in processes):
                return None
            if self.issued() - issued_before >= count and self.count_outputs(prefix) >= count:
                return time.perf_counter() - started
            time.sleep(0.5)
        return None


# --- 1-4: rotate --all, in-process cycle, naive, limit -------------------------------------------


PROFILE_TOP = 25  # functions per printed table; the JSON keeps 15 (bench/cycle.py)


def rotation_timeout(n: int) -> float:
    return 120 + 0.5 * n


def measure_command(rig: Rig, n: int) -> dict[str, Any]:
    """`rotator rotate --all` as the installed command, wall clock."""
    output = rig.fresh(f"cmd-n{n}")
    config = rig.config(rig.sources(n), output, name=f"cmd-n{n}")
    rig.idp.reset_counters()
    run = rig.run(
        [str(ROTATOR), "rotate", "--all", "--config", str(config)],
        rig.workdir / f"cmd-n{n}-{rig._serial}.log",
        rotation_timeout(n),
    )
    return _rotation_record(rig, run, n, output)


def measure_cycle(rig: Rig, n: int) -> dict[str, Any]:
    """`Rotator.run_cycle(force=True)` timed in-process by bench/cycle.py."""
    output = rig.fresh(f"cycle-n{n}")
    config = rig.config(rig.sources(n), output, name=f"cycle-n{n}")
    rig.idp.reset_counters()
    run = rig.run(
        [str(PYTHON), str(BENCH / "cycle.py"), "--config", str(config)],
        rig.workdir / f"cycle-n{n}-{rig._serial}.log",
        rotation_timeout(n),
    )
    record = _rotation_record(rig, run, n, output)
    record.update(_last_json(run.stdout))
    return record


def measure_naive(rig: Rig, n: int) -> dict[str, Any]:
    """The naive baseline (bench/naive.py), wall clock and its own loop time."""
    output = rig.fresh(f"naive-n{n}")
    rig.idp.reset_counters()
    run = rig.run(
        [
            str(PYTHON),
            str(BENCH / "naive.py"),
            "--vault-addr",
            rig.vault.addr,
            "--source-prefix",
            rig.sources(n),
            "--output-prefix",
            output,
        ],
        rig.workdir / f"naive-n{n}-{rig._serial}.log",
        rotation_timeout(n) + n * 0.2,
    )
    record = _rotation_record(rig, run, n, output)
    record.update(_last_json(run.stdout))
    return record


def _rotation_record(rig: Rig, run: Timed, n: int, output: str) -> dict[str, Any]:
    outputs = rig.count_outputs(output)
    return {
        "wall_seconds": run.wall,
        "cpu_seconds": run.cpu,
        "vault_cpu_seconds": run.vault_cpu,
        "bench_cpu_seconds": run.bench_cpu,
        "other_processes_cpu_seconds": run.other_cpu,
        "exit": run.returncode,
        "issued": rig.issued(),
        "outputs": outputs,
        "max_in_flight": rig.idp.max_in_flight,
        "ok": run.returncode == 0 and outputs == n,
    }


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict):
            return document
    return {}


def measure_profile(rig: Rig, n: int) -> dict[str, Any]:
    """One forced in-process cycle of `n` tokens under cProfile (`bench/cycle.py --profile`):
    the stats go to bench/results/profile-n<N>.pstats, the printed tables beside them (.txt)."""
    output = rig.fresh(f"profile-n{n}")
    config = rig.config(rig.sources(n), output, name=f"profile-n{n}")
    stats, text = RESULTS / f"profile-n{n}.pstats", RESULTS / f"profile-n{n}.txt"
    rig.idp.reset_counters()
    run = rig.run(
        [
            str(PYTHON),
            str(BENCH / "cycle.py"),
            "--config",
            str(config),
            "--profile",
            str(stats),
            "--top",
            str(PROFILE_TOP),
        ],
        rig.workdir / f"profile-n{n}.log",
        2 * rotation_timeout(n),
    )
    lines = run.stdout.rstrip().splitlines()
    text.write_text("\n".join(lines[:-1] if lines and lines[-1].startswith("{") else lines) + "\n")
    record = _rotation_record(rig, run, n, output)
    document = _last_json(run.stdout)
    record.update(document)
    record["text_file"] = str(text)
    record["cpu_ms_per_rotation_profiled"] = (
        1000 * document["profile_cpu_seconds"] / n if "profile_cpu_seconds" in document else None
    )
    return record


def measure_startup(rig: Rig, repeat: int) -> float:
    """Median wall clock of `rotator --version`: interpreter start-up and importing the CLI."""
    walls = []
    for index in range(max(3, repeat)):
        walls.append(
            rig.run(
                [str(ROTATOR), "--version"], rig.workdir / f"version-{index}.log", timeout=60
            ).wall
        )
    return statistics.median(walls)


def vault_prefixes(source: str, output: str) -> dict[str, str]:
    """The counting proxy's placeholders for one source and output prefix: the sources, the
    outputs, the per-token claims and the instance registry."""
    return {
        source: "{source}",
        output: "{output}",
        f"rotator-claims/{output}": "{claims}",
        f"rotator-instances/{output}": "{instances}",
    }


def vault_requests_per_rotation(rig: Rig, n: int) -> dict[str, Any]:
    """`rotate --all` twice on one output prefix through the counting proxy: first with no
    outputs (every token is new), then with the outputs of the first run in place (the steady
    case, and the one issue 14's target is about). Vault requests per token, by route."""
    source = rig.sources(n)
    output = rig.fresh(f"requests-n{n}")
    runs: dict[str, dict[str, Any]] = {}
    with CountingProxy(rig.vault.addr, vault_prefixes(source, output)) as proxy:
        config = rig.config(source, output, addr=proxy.addr, name=f"requests-n{n}")
        for label in ("first", "second"):
            proxy.reset()
            rig.idp.reset_counters()
            run = rig.run(
                [str(ROTATOR), "rotate", "--all", "--config", str(config)],
                rig.workdir / f"requests-n{n}-{label}.log",
                rotation_timeout(n),
            )
            counts = proxy.counts()
            total = sum(counts.values())
            about_tokens = sum(count for route, count in counts.items() if is_token_route(route))
            runs[label] = {
                "exit": run.returncode,
                "issued": rig.issued(),
                "max_in_flight": rig.idp.max_in_flight,
                "wall_seconds_through_proxy": run.wall,
                "requests": total,
                "per_token": total / n,
                # The requests about one token; the rest the command makes once per run (the
                # login's lookup-self, discovery, the instance registry), whatever N is.
                "token_routes_per_token": about_tokens / n,
                "per_run": total - about_tokens,
                "per_token_by_route": {route: count / n for route, count in counts.items()},
            }
    return {
        "tokens": n,
        "first": runs["first"],
        "second": runs["second"],
        # As before this figure had two runs: the first (fresh prefix) one.
        "per_token": runs["first"]["per_token"],
        "per_token_by_route": runs["first"]["per_token_by_route"],
    }


# --- 5-6: the daemon with a fleet --------------------------------------------------------------


# What the daemon's periodic check requests: OpenBao's detailed listing of the outputs' metadata,
# or (without it) one metadata read per output.
CHECK_ROUTES = ("LIST secret/detailed-metadata/{output}", "GET secret/metadata/{output}/*")
CHECK_GAP_SECONDS = 4.0  # output-metadata reads after this long a pause start a new check
POLL_SECONDS = 0.25
MAX_WINDOWS = 5


@dataclass(frozen=True)
class Sample:
    """The daemon, the proxy and the machine at one moment."""

    at: float
    cpu: float
    counts: dict[str, int]
    issued: int
    machine_busy: float
    others: float  # OpenBao and this process (stand-in, proxy)


def take_sample(rig: Rig, proxy: CountingProxy, *pids: int) -> Sample:
    """`cpu` is the CPU of the daemons `pids` together."""
    return Sample(
        at=time.monotonic(),
        cpu=sum(proc_cpu_seconds(pid) for pid in pids),
        counts=proxy.counts(),
        issued=rig.issued(),
        machine_busy=machine_busy_seconds(),
        others=rig.vault_cpu() + self_cpu_seconds(),
    )


def until_next_check(
    rig: Rig, proxy: CountingProxy, pid: int, deadline: float
) -> tuple[Sample, Sample] | None:
    """Follow the daemon until its next check starts: output-metadata reads after a pause of at
    least CHECK_GAP_SECONDS. Returns (the last sample before those reads, the sample at the last
    read before the pause), or None at the deadline."""
    previous = last_read = take_sample(rig, proxy, pid)
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        now = take_sample(rig, proxy, pid)
        if _check_requests(now) != _check_requests(previous):
            if previous.at - last_read.at >= CHECK_GAP_SECONDS:
                return previous, last_read
            last_read = now
        previous = now
    return None


def _check_requests(sample: Sample) -> int:
    return sum(sample.counts.get(route, 0) for route in CHECK_ROUTES)


def token_job_requests(counts: dict[str, int]) -> int:
    """Requests only token jobs make: reads and writes of one token's secrets, not the check's
    listings (nor its per-output metadata reads where there is no listing)."""
    return sum(
        count
        for route, count in counts.items()
        if is_token_route(route) and route not in CHECK_ROUTES
    )


def window_record(n: int, start: Sample, check_end: Sample, end: Sample) -> dict[str, Any]:
    """One check-to-check interval: CPU, issuances and Vault requests, per token and hour."""
    seconds = end.at - start.at
    counts = {
        route: end.counts.get(route, 0) - start.counts.get(route, 0)
        for route in end.counts
        if end.counts.get(route, 0) - start.counts.get(route, 0)
    }
    total = sum(counts.values())
    daemon_cpu = end.cpu - start.cpu
    others = (end.machine_busy - start.machine_busy) - daemon_cpu - (end.others - start.others)
    return {
        "window_seconds": seconds,
        "cpu_percent_of_core": 100 * daemon_cpu / seconds,
        "check_seconds": check_end.at - start.at,
        "check_cpu_seconds": check_end.cpu - start.cpu,
        "between_checks_cpu_percent": 100
        * (end.cpu - check_end.cpu)
        / max(1e-9, end.at - check_end.at),
        "other_processes_cpu_percent": 100 * max(0.0, others) / seconds,
        "issued": end.issued - start.issued,
        "token_job_requests": token_job_requests(counts),
        "vault_requests": total,
        "vault_requests_per_token_hour": total / n * 3600 / seconds,
        "vault_by_route_per_token_hour": {
            route: count / n * 3600 / seconds for route, count in counts.items()
        },
    }


def measure_fleet(rig: Rig, n: int) -> dict[str, Any]:
    """`rotator run` with `n` long-lived tokens: first cycle, memory, idle CPU, Vault traffic.

    Idle is measured over one whole check interval (from the start of one periodic check to the
    start of the next), the first in which no token job ran: right after the first cycle, the
    daemon's next check takes one read-only look at every token it wrote, by design.
    """
    source = rig.sources(n)
    output = rig.fresh(f"run-n{n}")
    result: dict[str, Any] = {"tokens": n}
    log_path = rig.workdir / f"run-n{n}.log"
    with CountingProxy(rig.vault.addr, vault_prefixes(source, output)) as proxy:
        config = rig.config(source, output, addr=proxy.addr, metrics=True, name=f"run-n{n}")
        rig.idp.reset_counters()
        with rig.daemon(config, log_path) as process:
            pid = process.pid
            first = rig.wait_served(output, n, [process], timeout=120 + 0.1 * n)
            result["served"] = rig.count_outputs(output)
            result["first_cycle_seconds"] = first
            if first is None:
                result["error"] = "not every output appeared before the deadline"
                result["exit"] = process.poll()
                return result
            served = take_sample(rig, proxy, pid)
            result["rss_after_first_cycle"] = proc_status(pid)
            result["first_cycle_cpu_seconds"] = served.cpu
            result["first_cycle_vault_requests_per_token"] = sum(served.counts.values()) / n
            result["first_cycle_vault_by_route"] = {
                route: count / n for route, count in served.counts.items()
            }
            windows: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60 * (MAX_WINDOWS + 2)
            found = until_next_check(rig, proxy, pid, deadline)
            while found is not None and len(windows) < MAX_WINDOWS:
                start, _ = found
                found = until_next_check(rig, proxy, pid, deadline)
                if found is None:
                    break
                end, check_end = found
                windows.append(window_record(n, start, check_end, end))
                if windows[-1]["token_job_requests"] == 0:
                    result["settle"] = {
                        "seconds": start.at - served.at,
                        "cpu_seconds": start.cpu - served.cpu,
                        "vault_requests_per_token": (
                            sum(start.counts.values()) - sum(served.counts.values())
                        )
                        / n,
                    }
                    result["idle"] = windows[-1]
                    break
            result["windows"] = windows
            result["rss_after_idle"] = proc_status(pid)
        result["exit"] = process.returncode
    text = log_path.read_text(errors="replace")
    result["log"] = {
        "stored": len(STORED.findall(text)),
        "warnings": text.count(" WARNING "),
        "errors": text.count(" ERROR "),
    }
    return result


# --- 8-9: the daemon's steady state, one and two instances: Vault requests per refresh ----------

# Far above what the short lifetimes need (about 90 issuances per token and hour at 40 s), so the
# issuance cap never decides anything: in production a token is refreshed about once an hour,
# far below the default cap of 6.
STEADY_MAX_ISSUANCES = 3600
TOKEN_ROUTE = re.compile(r"\{(source|output|claims)\}/\*$")


def is_token_route(route: str) -> bool:
    """A request about one token: anything but a LIST below the source, output or claims
    prefix. Everything else (the listings, lookup-self, the instance registry) the daemon
    makes per check or per interval, whatever the number of refreshes."""
    return not route.startswith("LIST ") and TOKEN_ROUTE.search(route) is not None


@contextmanager
def idp_lifetime(idp: LeanIXStandIn, seconds: int) -> Iterator[None]:
    """The stand-in announces `seconds` as every new access token's lifetime meanwhile."""
    before = idp.lifetime_seconds
    idp.lifetime_seconds = seconds
    try:
        yield
    finally:
        idp.lifetime_seconds = before


def follow_generations(
    rig: Rig,
    proxy: CountingProxy,
    processes: list[subprocess.Popen[bytes]],
    quiet: float,
    wanted: int,
    deadline: float,
) -> list[Sample]:
    """Follow the daemons from the end of their first cycle: a sample at the end of each burst
    of issuances (no access token issued for `quiet` seconds), the first cycle's included, until
    `wanted` bursts have ended, a daemon died or the deadline passed."""
    pids = [process.pid for process in processes]
    ends: list[Sample] = []
    previous = take_sample(rig, proxy, *pids)
    last_issued_at, in_burst = previous.at, True  # the first cycle has just issued
    while len(ends) < wanted and time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(POLL_SECONDS)
        now = take_sample(rig, proxy, *pids)
        if now.issued != previous.issued:
            last_issued_at, in_burst = now.at, True
        elif in_burst and now.at - last_issued_at >= quiet:
            in_burst = False
            ends.append(now)
        previous = now
    return ends


def bursts(records: list[Any], gap: float) -> list[list[Any]]:
    """Issuance records (oldest first) split where `gap` seconds passed without one."""
    groups: list[list[Any]] = []
    for record in records:
        if groups and (record.issued_at - groups[-1][-1].issued_at).total_seconds() < gap:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def per_instance(logs: list[Path]) -> list[dict[str, int]]:
    """What each daemon's log says it did: tokens stored, claims found taken, warnings, errors."""
    counted = []
    for path in logs:
        text = path.read_text(errors="replace")
        counted.append(
            {
                "stored": len(STORED.findall(text)),
                "claimed_elsewhere": len(CLAIMED_ELSEWHERE.findall(text)),
                "warnings": text.count(" WARNING "),
                "errors": text.count(" ERROR "),
            }
        )
    return counted


def double_issued(groups: list[list[Any]]) -> int:
    """Issuances beyond one per token and generation (burst)."""
    return sum(len(group) - len({r.api_token_fingerprint for r in group}) for group in groups)


def steady_window(
    options: Options, instances: int, start: Sample, end: Sample, records: list[Any]
) -> dict[str, Any]:
    """Vault requests per refresh between two generation ends, by kind and route."""
    n = options.steady_tokens
    seconds = end.at - start.at
    counts = {
        route: end.counts.get(route, 0) - start.counts.get(route, 0)
        for route in end.counts
        if end.counts.get(route, 0) - start.counts.get(route, 0)
    }
    refreshes = end.issued - start.issued
    per = max(1, refreshes)
    token = {route: count for route, count in counts.items() if is_token_route(route)}
    fixed = {route: count for route, count in counts.items() if not is_token_route(route)}
    checks = instances * seconds / options.steady_interval
    total, token_total, fixed_total = sum(counts.values()), sum(token.values()), sum(fixed.values())
    groups = bursts(records, options.steady_quiet)
    distinct = [len({r.api_token_fingerprint for r in group}) for group in groups]
    return {
        "window_seconds": seconds,
        "refreshes": refreshes,
        "generations": len(groups),
        "tokens_refreshed_per_generation": distinct,
        "issuances_per_generation": [len(group) for group in groups],
        # Every token once per generation, and the generations apart: the window is what it
        # claims to be.
        "clean": len(groups) == options.steady_generations and all(d == n for d in distinct),
        "double_issued": double_issued(groups),
        "vault_requests": total,
        "requests_per_refresh_token_routes": token_total / per,
        "requests_per_refresh_all_routes": total / per,
        "fixed_requests": fixed_total,
        "checks_nominal": checks,
        "fixed_requests_per_check": fixed_total / checks if checks else None,
        "fixed_requests_per_refresh": fixed_total / per,
        "output_reads_per_refresh": counts.get("GET secret/data/{output}/*", 0) / per,
        "token_routes_per_refresh": {route: count / per for route, count in token.items()},
        "fixed_routes_per_check": {
            route: count / checks for route, count in fixed.items() if checks
        },
        "daemon_cpu_seconds": end.cpu - start.cpu,
        "daemon_cpu_ms_per_refresh": 1000 * (end.cpu - start.cpu) / per,
        "daemon_cpu_percent_of_core": 100 * (end.cpu - start.cpu) / seconds,
    }


def measure_steady(rig: Rig, instances: int) -> dict[str, Any]:
    """`instances` daemons on one source and output prefix with short-lived access tokens, so
    that tokens are refreshed all the time: Vault requests per refresh in the steady state.

    Access tokens live `--steady-lifetime` seconds (40), checks run every `--steady-interval`
    (5 s). A refresh generation is a burst of issuances (every token once, spread over a few
    seconds by the policy's phase); it ends once `Options.steady_quiet` seconds pass without an
    issuance, by when the next check has taken its look at what the burst wrote. The window
    runs from the end of the first refresh generation after the first cycle (so start-up
    effects are over) to the end of `--steady-generations` more."""
    options = rig.options
    n = options.steady_tokens
    source = rig.sources(n)
    output = rig.fresh(f"steady{instances}-n{n}")
    result: dict[str, Any] = {
        "tokens": n,
        "instances": instances,
        "lifetime_seconds": options.steady_lifetime,
        "check_interval_seconds": options.steady_interval,
        "quiet_seconds": options.steady_quiet,
        "max_issuances_per_hour": STEADY_MAX_ISSUANCES,
    }
    logs = [rig.workdir / f"steady{instances}-n{n}-{index}.log" for index in range(instances)]
    wanted = 2 + options.steady_generations  # the first cycle, one generation, the window's
    with (
        idp_lifetime(rig.idp, options.steady_lifetime),
        CountingProxy(rig.vault.addr, vault_prefixes(source, output)) as proxy,
    ):
        configs = [
            rig.config(
                source,
                output,
                addr=proxy.addr,
                name=f"steady{instances}-{index}",
                check_interval=options.steady_interval,
                max_issuances_per_hour=STEADY_MAX_ISSUANCES,
            )
            for index in range(instances)
        ]
        rig.idp.reset_counters()
        with _all(rig.daemon(c, path) for c, path in zip(configs, logs, strict=True)) as ps:
            first = rig.wait_served(output, n, ps, timeout=120 + 0.1 * n)
            result["first_cycle_seconds"] = first
            if first is None:
                result["error"] = "not every output appeared before the deadline"
                result["exit"] = [process.poll() for process in ps]
                return result
            deadline = time.monotonic() + (wanted + 2) * options.steady_lifetime + 60
            ends = follow_generations(rig, proxy, ps, options.steady_quiet, wanted, deadline)
            records = rig.idp.issued
            result["max_in_flight"] = rig.idp.max_in_flight
            result["exit"] = [process.poll() for process in ps]
        if len(ends) < wanted:
            result["error"] = f"{len(ends)} of {wanted} generations ended before the deadline"
        else:
            start, end = ends[1], ends[-1]
            result["window"] = steady_window(
                options, instances, start, end, records[start.issued : end.issued]
            )
    groups = bursts(records, options.steady_quiet)
    result["issued_total"] = len(records)
    result["generations_total"] = len(groups)
    result["double_issued_whole_run"] = double_issued(groups)
    result["per_instance"] = per_instance(logs)
    return result


# --- 7: two instances sharing the tokens ------------------------------------------------------


def measure_scale_out(rig: Rig, n: int, instances: int = 2) -> dict[str, Any]:
    """`instances` daemons on the same prefixes: who exchanged what, and how long it took."""
    source = rig.sources(n)
    output = rig.fresh(f"scale-n{n}")
    configs = [
        rig.config(source, output, metrics=True, name=f"scale-{index}")
        for index in range(instances)
    ]
    logs = [rig.workdir / f"scale-n{n}-{index}.log" for index in range(instances)]
    rig.idp.reset_counters()
    result: dict[str, Any] = {"tokens": n, "instances": instances}
    with _all(rig.daemon(config, path) for config, path in zip(configs, logs, strict=True)) as ps:
        served = rig.wait_served(output, n, ps, timeout=120 + 0.1 * n)
        result["seconds_to_all_outputs"] = served
        result["served"] = rig.count_outputs(output)
        time.sleep(SETTLE_SECONDS)
        issued = rig.idp.issued
        result["issued_total"] = len(issued)
        result["distinct_tokens_issued"] = len({record.api_token_fingerprint for record in issued})
        result["max_in_flight"] = rig.idp.max_in_flight
        result["cpu_seconds"] = [proc_cpu_seconds(process.pid) for process in ps]
    result["per_instance"] = per_instance(logs)
    result["double_issued"] = result["issued_total"] - result["distinct_tokens_issued"]
    return result


@contextmanager
def _all(
    managers: Iterator[Any],
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Enter several context managers, exit them all (in reverse) on the way out."""
    with ExitStack() as stack:
        yield [stack.enter_context(manager) for manager in managers]


# --- summary, table, chart --------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get("ok") and run.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def per_rotation_ms(cpu_seconds: float | None, n: int) -> float | None:
    return None if cpu_seconds is None else 1000 * cpu_seconds / n


def summarise(
    options: Options, rotation: dict[int, dict[str, list[dict[str, Any]]]]
) -> dict[int, dict[str, Any]]:
    summary: dict[int, dict[str, Any]] = {}
    for n, runs in rotation.items():
        command = median_of(runs["rotator_command"], "wall_seconds")
        cycle = median_of(runs["rotator_cycle"], "cycle_seconds")
        cycle_wall = median_of(runs["rotator_cycle"], "wall_seconds")
        naive = median_of(runs["naive"], "wall_seconds")
        naive_loop = median_of(runs["naive"], "loop_seconds")
        limit = options.limit(n)
        command_cpu = median_of(runs["rotator_command"], "cpu_seconds")
        naive_cpu = median_of(runs["naive"], "cpu_seconds")
        in_flight = [
            run["max_in_flight"] for run in runs["rotator_command"] + runs["rotator_cycle"]
        ]
        summary[n] = {
            "limit_seconds": limit,
            "rotator_command_seconds": command,
            "rotator_command_cpu_seconds": command_cpu,
            # CPU per rotation: user+sys of the whole process (start-up included) over N, for
            # the command and the naive loop alike (RUSAGE_CHILDREN of each subprocess).
            "rotator_command_cpu_ms_per_rotation": per_rotation_ms(command_cpu, n),
            "naive_cpu_seconds": naive_cpu,
            "naive_cpu_ms_per_rotation": per_rotation_ms(naive_cpu, n),
            "cpu_per_rotation_rotator_over_naive": ratio(command_cpu, naive_cpu),
            # The same without start-up: process_time() around the cycle and the loop.
            "rotator_cycle_cpu_ms_per_rotation": per_rotation_ms(
                median_of(runs["rotator_cycle"], "cycle_cpu_seconds"), n
            ),
            "naive_loop_cpu_ms_per_rotation": per_rotation_ms(
                median_of(runs["naive"], "loop_cpu_seconds"), n
            ),
            "rotator_cycle_seconds": cycle,
            "rotator_cycle_process_seconds": cycle_wall,
            "naive_seconds": naive,
            "naive_loop_seconds": naive_loop,
            "limit_over_command": ratio(limit, command),
            "limit_over_cycle": ratio(limit, cycle),
            "speedup_command_vs_naive": ratio(naive, command),
            "speedup_cycle_vs_naive_loop": ratio(naive_loop, cycle),
            "max_in_flight": max(in_flight) if in_flight else None,
            "other_processes_cpu_seconds": median_of(
                runs["rotator_command"], "other_processes_cpu_seconds"
            ),
            "all_ok": all(run["ok"] for kind in runs.values() for run in kind),
        }
    return summary


def targets(
    options: Options,
    summary: dict[int, dict[str, Any]],
    fleet: dict[int, dict[str, Any]],
    requests: dict[str, Any] | None = None,
    steady: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Issue 14's targets, each with the measured value and whether it was met (None: the run
    did not measure it)."""
    n = options.tokens
    top = summary[n]
    steady = steady or {}
    at = f"N={n}, W={options.workers}, {options.latency_ms:g} ms"

    def per_refresh(key: str) -> float | None:
        window = steady.get(key, {}).get("window")
        return window["requests_per_refresh_token_routes"] if window else None

    in_flight = [s["max_in_flight"] or 0 for s in summary.values()]
    in_flight.append(steady.get("one", {}).get("max_in_flight") or 0)
    if requests:
        in_flight += [requests[run]["max_in_flight"] or 0 for run in ("first", "second")]
    rss = cpu = None
    if 2000 in fleet and "idle" in fleet[2000]:
        rss = fleet[2000]["rss_after_first_cycle"]["VmRSS"] / MIB
        cpu = fleet[2000]["idle"]["cpu_percent_of_core"]
    return [
        _target(
            "daemon steady state, 1 instance: Vault requests per refresh (token routes) <= 3",
            per_refresh("one"),
            3,
            "<=",
        ),
        _target(
            "daemon steady state, 2 instances: Vault requests per refresh (token routes) <= 5",
            per_refresh("two"),
            5,
            "<=",
        ),
        _target(
            "rotate --all, outputs in place: Vault requests per token (token routes) <= 4",
            requests["second"]["token_routes_per_token"] if requests else None,
            4,
            "<=",
        ),
        _target(
            f"N={n}: rotator CPU per rotation / naive's <= 1 (whole processes)",
            top["cpu_per_rotation_rotator_over_naive"],
            1.0,
            "<=",
        ),
        _target(f"{at}: limit / command time >= 0.75", top["limit_over_command"], 0.75, ">="),
        _target(f"{at}: naive / command time >= 6", top["speedup_command_vs_naive"], 6, ">="),
        _target(
            f"peak exchanges in flight <= W={options.workers} (one instance, every run)",
            max(in_flight),
            options.workers,
            "<=",
        ),
        _target("2,000 tokens: RSS after first cycle <= 80 MiB", rss, 80, "<="),
        _target("2,000 tokens: idle CPU <= 1% of a core", cpu, 1.0, "<="),
    ]


def sanity(
    summary: dict[int, dict[str, Any]],
    fleet: dict[int, dict[str, Any]],
    requests: dict[str, Any] | None,
    steady: dict[str, dict[str, Any]],
    profile: dict[str, Any] | None,
) -> list[tuple[str, bool]]:
    """Whether each part measured what it says (not targets): every run ran to completion."""
    checks = [
        (
            "every rotate --all / cycle / naive run exited 0 and stored N outputs",
            all(s["all_ok"] for s in summary.values()),
        )
    ]
    if requests:
        exits = [requests[run]["exit"] for run in ("first", "second")]
        checks.append(("both counted rotate --all runs exited 0", exits == [0, 0]))
    if profile:
        checks.append(("the profiled cycle exited 0 and stored N outputs", bool(profile["ok"])))
    for record in steady.values():
        window = record.get("window")
        checks.append(
            (
                f"steady state, {record['instances']} instance(s): a clean window (every token "
                "once per generation)",
                bool(window and window["clean"]),
            )
        )
    for n, record in sorted(fleet.items()):
        checks.append((f"{n:,} tokens served", record.get("served", 0) >= n))
    return checks


def _target(name: str, value: float | None, bound: float, op: str) -> dict[str, Any]:
    met = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"target": name, "value": value, "bound": bound, "op": op, "met": met}


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


Getter = Callable[[dict[str, Any]], float | None]
LABEL_WIDTH = 48


def _rows(columns: list[dict[str, Any]], spec: list[tuple[str, Getter, str, str]]) -> list[str]:
    """One line per (label, getter, format, unit), one cell per column."""
    return [
        f"{label:<{LABEL_WIDTH}}" + "".join(f"{fmt(get(c), fs, unit):>12}" for c in columns)
        for label, get, fs, unit in spec
    ]


def _header(names: list[str]) -> str:
    return " " * LABEL_WIDTH + "".join(f"{name:>12}" for name in names)


def rotation_table(result: dict[str, Any]) -> list[str]:
    options = result["options"]
    summary: dict[int, dict[str, Any]] = result["summary"]
    sizes = sorted(summary)
    columns = [summary[n] for n in sizes]

    def key(name: str) -> Getter:
        return lambda column: column[name]

    lines = [
        f"rotate --all, W={options['workers']}, IdP latency {options['latency_ms']:g} ms, "
        f"median of {options['repeat']} run(s)",
        _header([f"N={n}" for n in sizes]),
        *_rows(
            columns,
            [
                ("latency-bound limit ceil(N/W) x L (s)", key("limit_seconds"), ".2f", ""),
                (
                    "rotator rotate --all, whole command (s)",
                    key("rotator_command_seconds"),
                    ".2f",
                    "",
                ),
                ("  its CPU, user+sys (s)", key("rotator_command_cpu_seconds"), ".2f", ""),
                (
                    "  CPU per rotation, whole process (ms)",
                    key("rotator_command_cpu_ms_per_rotation"),
                    ".2f",
                    "",
                ),
                ("rotator run_cycle, in-process (s)", key("rotator_cycle_seconds"), ".2f", ""),
                (
                    "  CPU per rotation, the cycle alone (ms)",
                    key("rotator_cycle_cpu_ms_per_rotation"),
                    ".2f",
                    "",
                ),
                ("naive, whole process (s)", key("naive_seconds"), ".2f", ""),
                ("  its CPU, user+sys (s)", key("naive_cpu_seconds"), ".2f", ""),
                (
                    "  CPU per rotation, whole process (ms)",
                    key("naive_cpu_ms_per_rotation"),
                    ".2f",
                    "",
                ),
                ("naive, its loop only (s)", key("naive_loop_seconds"), ".2f", ""),
                (
                    "  CPU per rotation, the loop alone (ms)",
                    key("naive_loop_cpu_ms_per_rotation"),
                    ".2f",
                    "",
                ),
                (
                    "rotator CPU / naive CPU per rotation",
                    key("cpu_per_rotation_rotator_over_naive"),
                    ".2f",
                    "",
                ),
                ("limit / command", key("limit_over_command"), ".2f", ""),
                ("limit / in-process cycle", key("limit_over_cycle"), ".2f", ""),
                ("naive / command (speed-up)", key("speedup_command_vs_naive"), ".2f", "x"),
                ("naive loop / in-process cycle", key("speedup_cycle_vs_naive_loop"), ".2f", "x"),
                ("peak exchanges in flight at the IdP", key("max_in_flight"), "d", ""),
                (
                    "other processes' CPU during command (s)",
                    key("other_processes_cpu_seconds"),
                    ".2f",
                    "",
                ),
            ],
        ),
        f"{'every run exited 0 and stored N outputs':<{LABEL_WIDTH}}"
        + "".join(f"{c['all_ok']!s:>12}" for c in columns),
        f"command start-up, rotator --version: {fmt(result['startup_seconds'], '.2f', ' s')}",
    ]
    requests = result.get("vault_requests_per_rotation")
    if requests:
        lines += ["", *requests_table(requests)]
    return lines


def requests_table(requests: dict[str, Any]) -> list[str]:
    """Vault requests per token of the two counted `rotate --all` runs, by route."""
    runs = [requests.get("first") or {}, requests.get("second") or {}]
    routes = sorted(
        {route for run in runs for route in run.get("per_token_by_route", {})},
        key=lambda route: -sum(run.get("per_token_by_route", {}).get(route, 0) for run in runs),
    )
    lines = [
        f"Vault requests per token, rotate --all of N={requests['tokens']} through the counting "
        "proxy, twice on one output prefix",
        _header(["first", "second"]) + "   (first: no outputs yet; second: outputs in place)",
        *_rows(
            runs,
            [
                ("all routes", lambda run: run.get("per_token"), ".2f", ""),
                ("token routes", lambda run: run.get("token_routes_per_token"), ".2f", ""),
                ("once per run (not per token)", lambda run: run.get("per_run"), ".0f", ""),
                *[
                    (
                        f"  {route}"[:LABEL_WIDTH],
                        lambda run, route=route: run.get("per_token_by_route", {}).get(route, 0),
                        ".2f",
                        "",
                    )
                    for route in routes
                ],
            ],
        ),
    ]
    return lines


def steady_table(steady: dict[str, dict[str, Any]]) -> list[str]:
    """The daemon's steady state: Vault requests per refresh, one and two instances."""
    records = list(steady.values())
    first = records[0]
    columns = [record.get("window") or {} for record in records]

    def key(name: str) -> Getter:
        return lambda column: column.get(name)

    token_routes = sorted(
        {route for c in columns for route in c.get("token_routes_per_refresh", {})},
        key=lambda route: (
            -sum(c.get("token_routes_per_refresh", {}).get(route, 0) for c in columns)
        ),
    )
    fixed_routes = sorted({route for c in columns for route in c.get("fixed_routes_per_check", {})})
    lines = [
        f"rotator run, steady state: {first['tokens']} tokens, access tokens valid "
        f"{first['lifetime_seconds']} s, a check every {first['check_interval_seconds']:g} s; "
        f"window: {records[0].get('window', {}).get('generations', '?')} refresh generations, "
        "after the first cycle and one more generation",
        _header([f"{r['instances']} inst." for r in records]),
        *_rows(
            columns,
            [
                ("window (s)", key("window_seconds"), ".1f", ""),
                ("refreshes (access tokens issued)", key("refreshes"), "d", ""),
                ("  issued beyond one per token and generation", key("double_issued"), "d", ""),
                (
                    "Vault requests per refresh (token routes)",
                    key("requests_per_refresh_token_routes"),
                    ".2f",
                    "",
                ),
                *[
                    (
                        f"  {route}"[:LABEL_WIDTH],
                        lambda c, route=route: c.get("token_routes_per_refresh", {}).get(route),
                        ".2f",
                        "",
                    )
                    for route in token_routes
                ],
                (
                    "  of which output reads (GET data/{output}/*)",
                    key("output_reads_per_refresh"),
                    ".2f",
                    "",
                ),
                ("fixed requests per check", key("fixed_requests_per_check"), ".2f", ""),
                *[
                    (
                        f"  {route}"[:LABEL_WIDTH],
                        lambda c, route=route: c.get("fixed_routes_per_check", {}).get(route),
                        ".2f",
                        "",
                    )
                    for route in fixed_routes
                ],
                ("fixed requests per refresh", key("fixed_requests_per_refresh"), ".2f", ""),
                (
                    "Vault requests per refresh (all routes)",
                    key("requests_per_refresh_all_routes"),
                    ".2f",
                    "",
                ),
                (
                    "daemon CPU per refresh, checks incl. (ms)",
                    key("daemon_cpu_ms_per_refresh"),
                    ".1f",
                    "",
                ),
            ],
        ),
    ]
    for record in records:
        if record.get("error"):
            lines.append(f"  {record['instances']} instance(s): {record['error']}")
        if record["instances"] > 1:
            split = " / ".join(str(p["stored"]) for p in record["per_instance"])
            lines.append(
                f"  {record['instances']} instances: access tokens stored by instance {split}; "
                f"issued beyond one per token and generation over the whole run "
                f"{record.get('double_issued_whole_run')} (of {record.get('issued_total')})"
            )
    return lines


def profile_table(profile: dict[str, Any], count: int = 15) -> list[str]:
    """The profiled cycle's top functions by own CPU time."""
    n, total = profile["tokens"], profile.get("profile_cpu_seconds")
    lines = [
        f"profile: one forced cycle of N={n} in-process, W={profile.get('workers')}, cProfile on "
        f"each thread's CPU clock: {fmt(total, '.2f', ' CPU s')} "
        f"({fmt(profile.get('cpu_ms_per_rotation_profiled'), '.2f', ' ms')} per rotation "
        f"with the profiler's overhead; {fmt(profile.get('cycle_cpu_seconds'), '.2f', ' s')} "
        "process CPU)",
        f"  {'tottime':>8} {'cumtime':>8}  function (top {count} by own time; "
        f"{profile.get('text_file')} has more)",
    ]
    for row in (profile.get("profile_top_tottime") or [])[:count]:
        lines.append(f"  {row['tottime']:>8.3f} {row['cumtime']:>8.3f}  {row['function']}")
    return lines


def fleet_table(fleet: dict[int, dict[str, Any]]) -> list[str]:
    sizes = sorted(fleet)
    columns = [fleet[n] for n in sizes]

    def at(*path: str) -> Getter:
        def get(column: dict[str, Any]) -> float | None:
            value: Any = column
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            return value if isinstance(value, int | float) else None

        return get

    def mib(*path: str) -> Getter:
        return lambda column: (v / MIB) if (v := at(*path)(column)) is not None else None

    spec: list[tuple[str, Getter, str, str]] = [
        ("outputs served", at("served"), "d", ""),
        ("first full cycle, from start (s)", at("first_cycle_seconds"), ".1f", ""),
        ("  daemon CPU until then (s)", at("first_cycle_cpu_seconds"), ".1f", ""),
        ("  Vault requests per token", at("first_cycle_vault_requests_per_token"), ".1f", ""),
        ("RSS after first cycle (MiB)", mib("rss_after_first_cycle", "VmRSS"), ".1f", ""),
        ("steady state from, s after the first cycle", at("settle", "seconds"), ".1f", ""),
        (
            "  Vault requests per token until then",
            at("settle", "vault_requests_per_token"),
            ".1f",
            "",
        ),
        ("idle window, check start to check start (s)", at("idle", "window_seconds"), ".1f", ""),
        ("idle CPU, % of one core", at("idle", "cpu_percent_of_core"), ".2f", ""),
        ("  one check: seconds", at("idle", "check_seconds"), ".1f", ""),
        ("  one check: CPU seconds", at("idle", "check_cpu_seconds"), ".2f", ""),
        ("  between checks, % of one core", at("idle", "between_checks_cpu_percent"), ".2f", ""),
        ("  other processes, % of one core", at("idle", "other_processes_cpu_percent"), ".1f", ""),
        ("issuances while idle", at("idle", "issued"), "d", ""),
        ("RSS after the idle window (MiB)", mib("rss_after_idle", "VmRSS"), ".1f", ""),
        ("peak RSS, VmHWM (MiB)", mib("rss_after_idle", "VmHWM"), ".1f", ""),
        (
            "Vault requests / token / hour, idle",
            at("idle", "vault_requests_per_token_hour"),
            ".1f",
            "",
        ),
    ]
    routes = sorted(
        {r for c in columns for r in c.get("idle", {}).get("vault_by_route_per_token_hour", {})}
    )
    spec += [
        (f"  {route}"[:LABEL_WIDTH], at("idle", "vault_by_route_per_token_hour", route), ".2f", "")
        for route in routes
    ]
    return [
        "rotator run, access tokens valid 3599 s (so steady state is idle), default schedule",
        _header([f"{n} tok" for n in sizes]),
        *_rows(columns, spec),
    ]


def scale_out_table(scale: dict[str, Any], single: float | None) -> list[str]:
    split = " / ".join(str(p["stored"]) for p in scale["per_instance"])
    elsewhere = " / ".join(str(p["claimed_elsewhere"]) for p in scale["per_instance"])
    return [
        f"scale-out: {scale['instances']} x rotator run sharing {scale['tokens']} tokens",
        f"  time to all outputs: {fmt(scale['seconds_to_all_outputs'], '.1f', ' s')}"
        f" (one instance: {fmt(single, '.1f', ' s')})",
        f"  access tokens stored, by instance: {split}",
        f"  'claimed elsewhere' log lines, by instance: {elsewhere}",
        f"  issuances at the IdP: {scale['issued_total']} for "
        f"{scale['distinct_tokens_issued']} tokens ({scale['double_issued']} double)",
        f"  peak exchanges in flight at the IdP: {scale['max_in_flight']}",
    ]


def provenance(result: dict[str, Any]) -> list[str]:
    code = result["rotator"]
    machine = result["machine"]
    dirty = len(code["uncommitted_files"])
    lines = [
        f"rotator {str(code['git_head'])[:12]} ({code['git_head_subject']})"
        + (f" + {dirty} uncommitted file(s)" if dirty else "")
        + f", run from a snapshot, sha256 {code['sha256'][:12]}",
        f"{machine['cpus']} cores, load average {machine['load_average_at_start'][0]:.2f} at "
        f"start, {machine['load_average_at_end'][0]:.2f} at the end; "
        f"{result['duration_seconds']:.0f} s in all",
    ]
    if code.get("working_tree_changed_during_run"):
        lines.append("note: rotator/ changed in the working tree during the run (not measured)")
    return [*lines, ""]


def render_table(result: dict[str, Any]) -> str:
    lines = [*provenance(result), *rotation_table(result)]
    if result.get("profile"):
        lines += ["", *profile_table(result["profile"])]
    steady: dict[str, dict[str, Any]] = result.get("steady_state") or {}
    if steady:
        lines += ["", *steady_table(steady)]
    fleet: dict[int, dict[str, Any]] = result["fleet"]
    if fleet:
        lines += ["", *fleet_table(fleet)]
    scale = result.get("scale_out")
    if scale:
        single = fleet.get(scale["tokens"], {}).get("first_cycle_seconds")
        lines += ["", *scale_out_table(scale, single)]
    lines += ["", "targets of issue 14 (reported, not asserted)"]
    for target in result["targets"]:
        mark = {True: "MET ", False: "MISS", None: "n/a "}[target["met"]]
        lines.append(f"  [{mark}] {target['target']}: {fmt(target['value'], '.2f')}")
    lines += ["", "sanity (each part ran to completion)"]
    for name, ok in result.get("sanity", []):
        lines.append(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return "\n".join(lines)


def draw_chart(options: Options, summary: dict[int, dict[str, Any]], path: Path) -> None:
    by_size: dict[int | str, dict[str, Any]] = dict(summary.items())
    chart.draw(path, by_size, options.workers, options.latency_ms)


def redraw_chart(saved: Path, path: Path) -> int:
    """The chart of a saved run (bench.json or last-run.json), drawn again to `path`."""
    try:
        result = json.loads(saved.read_text())
        summary, options = result["summary"], result["options"]
        chart.draw(path, summary, int(options["workers"]), float(options["latency_ms"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"bench: cannot draw the chart from {saved}: {error!r}", file=sys.stderr)
        return 2
    print(f"wrote {path} from {saved} (run of {result.get('started_at', '?')})")
    return 0


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options, chart_from = parse_options(argv)
    if chart_from is not None:
        return redraw_chart(chart_from, BENCH / "chart.png")
    if options.profile_only:
        return profile_only(options)
    return measure(options)


def profile_only(options: Options) -> int:
    """`--profile-only`: OpenBao, the stand-in, N sources and one profiled forced cycle; prints
    the profile. Writes bench/results/profile-n<N>.{pstats,txt}, nothing else of the bench's."""
    if not ROTATOR.exists():
        print(f"bench: {ROTATOR} is missing; run `make bench` first", file=sys.stderr)
        return 2
    workdir = RESULTS / "profile-logs"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    code = snapshot_rotator(workdir / "snapshot")
    with DevVault() as vault, LeanIXStandIn() as idp:
        idp.latency_seconds = options.latency
        rig = Rig(vault, idp, options, workdir, Path(code["path"]))
        log(f"rotator {code['git_head']} from {rig.rotator_location()}")
        profile = measure_profile(rig, options.tokens)
        rig.root.adapter.close()
    print(Path(profile["text_file"]).read_text(), end="")
    print("\n".join(profile_table(profile)))
    print(f"\nwrote {profile.get('profile_stats_file')} and {profile['text_file']}")
    return 0 if profile["ok"] else 1


def measure_rotations(rig: Rig) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Figures 1-4: every N, `--repeat` times: the command, the in-process cycle, naive."""
    options = rig.options
    rotation: dict[int, dict[str, list[dict[str, Any]]]] = {
        n: {"rotator_command": [], "rotator_cycle": [], "naive": []} for n in options.sizes
    }
    measures: list[tuple[str, Callable[[Rig, int], dict[str, Any]]]] = [
        ("rotator_command", measure_command),
        ("rotator_cycle", measure_cycle),
        ("naive", measure_naive),
    ]
    for attempt in range(options.repeat):
        for n in options.sizes:
            for kind, measure in measures:
                record = measure(rig, n)
                rotation[n][kind].append(record)
                log(
                    f"run {attempt + 1}/{options.repeat} N={n} {kind}: "
                    f"{record['wall_seconds']:.2f}s wall, ok={record['ok']}, "
                    f"in flight {record['max_in_flight']}"
                )
    return rotation


def measure_steady_states(rig: Rig) -> dict[str, dict[str, Any]]:
    """The daemon's steady state with one instance ("one") and two ("two")."""
    steady: dict[str, dict[str, Any]] = {}
    if not rig.options.steady_tokens:
        return steady
    for key, instances in (("one", 1), ("two", 2)):
        log(f"steady state: {instances} x rotator run, {rig.options.steady_tokens} tokens ...")
        steady[key] = measure_steady(rig, instances)
        window = steady[key].get("window") or {}
        log(
            f"  requests per refresh (token routes) "
            f"{fmt(window.get('requests_per_refresh_token_routes'))}, "
            f"(all routes) {fmt(window.get('requests_per_refresh_all_routes'))}"
            + (f"; {steady[key]['error']}" if steady[key].get("error") else "")
        )
    return steady


def measure(options: Options) -> int:
    """The whole bench: every figure, the table, the JSON files and the chart."""
    if not ROTATOR.exists():
        print(
            f"bench: {ROTATOR} is missing; run `make bench` (it installs the venv)", file=sys.stderr
        )
        return 2
    if RESULTS.exists():
        shutil.rmtree(RESULTS / "logs", ignore_errors=True)
    workdir = RESULTS / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    code = snapshot_rotator(workdir / "snapshot")
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()
    began = time.monotonic()
    log(f"options: {options}")

    with DevVault() as vault, LeanIXStandIn() as idp:
        idp.latency_seconds = options.latency
        rig = Rig(vault, idp, options, workdir, Path(code["path"]))
        code["imported_from"] = rig.rotator_location()
        log(f"rotator {code['git_head']} from {code['imported_from']}")
        for n in options.sizes:
            rig.sources(n)

        startup = measure_startup(rig, options.repeat)
        log(f"rotator --version: {startup:.2f}s")
        rotation = measure_rotations(rig)
        profile = measure_profile(rig, options.tokens)
        log(
            f"profiled cycle N={options.tokens}: {fmt(profile.get('profile_cpu_seconds'))} CPU s,"
            f" ok={profile['ok']}"
        )
        requests = vault_requests_per_rotation(rig, options.sizes[0])
        log(
            "Vault requests per forced rotation (token routes): "
            f"{requests['first']['token_routes_per_token']:.2f} first, "
            f"{requests['second']['token_routes_per_token']:.2f} second"
        )
        steady = measure_steady_states(rig)
        fleet: dict[int, dict[str, Any]] = {}
        scale_out: dict[str, Any] | None = None
        for n in options.fleet:  # smallest first, then the scale-out on the same tokens
            log(f"rotator run with {n} tokens ...")
            fleet[n] = measure_fleet(rig, n)
            first, served = fleet[n].get("first_cycle_seconds"), fleet[n].get("served")
            log(f"  first cycle {first}, served {served}")
            if n == options.scale_out_tokens:
                log(f"scale-out: 2 x rotator run sharing {n} tokens ...")
                scale_out = measure_scale_out(rig, n)
                log(f"  all outputs after {scale_out['seconds_to_all_outputs']}")
        rig.root.adapter.close()

    summary = summarise(options, rotation)
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_seconds": time.monotonic() - began,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "options": {**asdict(options), "sizes": list(options.sizes)},
        "rotator": code,
        "startup_seconds": startup,
        "summary": summary,
        "rotation_runs": rotation,
        "vault_requests_per_rotation": requests,
        "profile": profile,
        "steady_state": steady,
        "fleet": fleet,
        "scale_out": scale_out,
    }
    result["targets"] = targets(options, summary, fleet, requests, steady)
    result["sanity"] = sanity(summary, fleet, requests, steady, profile)
    code["working_tree_changed_during_run"] = tree_hash(ROOT / "rotator") != code["sha256"]

    RESULTS.mkdir(exist_ok=True)
    document = json.dumps(result, indent=2, default=str)
    (RESULTS / "bench.json").write_text(document + "\n")
    (BENCH / "last-run.json").write_text(document + "\n")
    draw_chart(options, summary, BENCH / "chart.png")
    print(render_table(result))
    print(f"\nwrote {RESULTS / 'bench.json'}, {BENCH / 'last-run.json'}, {BENCH / 'chart.png'}")
    log(f"done in {result['duration_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
