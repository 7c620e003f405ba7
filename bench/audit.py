"""`rotator audit` on large audit logs: throughput and peak memory (issue 13). Run by hand,
never by `make test`.

Writes a synthetic Vault/OpenBao file audit log of about `--mb` MB (default 200) shaped like the
real one (request/response pairs as OpenBao writes them: consumers reading a few hundred outputs,
rotator's own reads, writes and metadata traffic, other mounts, refused reads, a few garbage
lines, spread over 45 days), its gzip copy, and a `--small-mb` (default 20) log of the same shape.
Against an OpenBao dev server holding the sources, runs the installed `rotator audit --json` on
each as a subprocess and prints wall time, MB/s, lines/s and peak RSS (the child's own
`ru_maxrss`, from wait4). Equal peak RSS for the small and the large log is what "memory bounded
by outputs x readers, not by the log" looks like. Figures go to bench/results/audit.json too.

    .venv/bin/python bench/audit.py [--mb 200] [--small-mb 20] [--outputs 300] [--readers 40]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac

from rotator.dev.devvault import DevVault

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROTATOR = Path(sys.executable).with_name("rotator")
MB = 1_000_000
MOUNT, SOURCES, OUTPUTS = "secret", "leanix/api-tokens", "leanix/access-tokens"
SPAN = timedelta(days=45)
GARBAGE_EVERY = 50_000  # one unparsable line per this many


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- the synthetic log ----------------------------------------------------------------------------


def _hmac(rng: random.Random) -> str:
    return "hmac-sha256:" + rng.randbytes(32).hex()


@dataclass(frozen=True)
class Consumer:
    display_name: str
    entity_id: str
    policies: tuple[str, ...]
    address: str
    outputs: tuple[str, ...]  # what it reads
    forbidden: tuple[str, ...]  # what it tries to read and is refused
    client_token: str


class Traffic:
    """Audit entries as OpenBao's file device writes them, chosen at random with a fixed seed."""

    def __init__(self, outputs: list[str], readers: int, seed: int = 13) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, reproducible on purpose
        self.outputs = outputs
        read = outputs[: int(len(outputs) * 0.9)]  # a tenth is never read by a consumer
        self.consumers = [
            Consumer(
                display_name=self.rng.choice(["approle", f"kubernetes-apps-{i}", f"token-ci-{i}"]),
                entity_id=str(uuid.UUID(bytes=self.rng.randbytes(16))),
                policies=("default", f"consumer-{i}"),
                address=f"10.{i % 7}.{i % 251}.{10 + i % 200}",
                outputs=tuple(self.rng.sample(read, k=min(len(read), self.rng.randint(3, 12)))),
                forbidden=tuple(self.rng.sample(outputs, k=min(len(outputs), 2))),
                client_token=_hmac(self.rng),
            )
            for i in range(readers)
        ]
        self.rotator_token = _hmac(self.rng)
        self.other_paths = [
            "pki/issue/web-servers",
            "database/creds/app-readonly",
            "auth/token/lookup-self",
            "auth/token/renew-self",
            "sys/internal/ui/mounts/secret/apps",
            "secret/data/apps/payments/config",
            "secret/metadata/apps/payments/config",
            "transit/encrypt/orders",
        ]

    def pair(self, moment: datetime) -> Iterator[dict[str, Any]]:
        """One request and its response: 70 % consumer reads of their outputs, 15 % rotator's
        own traffic on outputs, 13 % other paths, 2 % refused reads (each consumer tries two
        outputs it may not read). The same consumers and outputs whatever the log's size, so
        that logs of different sizes differ in length only."""
        roll = self.rng.random()
        if roll < 0.70:
            consumer = self.rng.choice(self.consumers)
            name = self.rng.choice(consumer.outputs)
            yield from self._pair(moment, consumer, "read", f"{MOUNT}/data/{OUTPUTS}/{name}")
        elif roll < 0.85:
            name = self.rng.choice(self.outputs)
            operation, section = self.rng.choice(
                [("read", "data"), ("update", "data"), ("read", "metadata"), ("update", "metadata")]
            )
            yield from self._pair(moment, None, operation, f"{MOUNT}/{section}/{OUTPUTS}/{name}")
        elif roll < 0.98:
            consumer = self.rng.choice(self.consumers)
            yield from self._pair(moment, consumer, "read", self.rng.choice(self.other_paths))
        else:
            consumer = self.rng.choice(self.consumers)
            name = self.rng.choice(consumer.forbidden)
            yield from self._pair(
                moment, consumer, "read", f"{MOUNT}/data/{OUTPUTS}/{name}", "permission denied"
            )

    def _pair(
        self,
        moment: datetime,
        consumer: Consumer | None,
        operation: str,
        path: str,
        error: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        token = consumer.client_token if consumer else self.rotator_token
        auth: dict[str, Any] = {
            "client_token": token,
            "accessor": _hmac(self.rng),
            "display_name": consumer.display_name if consumer else "token",
            "policies": list(consumer.policies) if consumer else ["root"],
            "token_policies": list(consumer.policies) if consumer else ["root"],
            "policy_results": {"allowed": error is None},
            "token_type": "service",
            "token_issue_time": "2026-10-01T00:00:00Z",
        }
        if consumer:
            auth["entity_id"] = consumer.entity_id
        request = {
            "id": str(uuid.UUID(bytes=self.rng.randbytes(16))),
            "client_id": self.rng.randbytes(32).hex(),
            "operation": operation,
            "mount_point": path.split("/", 1)[0] + "/",
            "mount_type": "kv",
            "mount_running_version": "v2.7.2+builtin.bao",
            "mount_class": "secret",
            "client_token": token,
            "client_token_accessor": auth["accessor"],
            "namespace": {"id": "root"},
            "path": path,
            "remote_address": consumer.address if consumer else "10.0.0.2",
            "remote_port": self.rng.randint(30000, 60000),
        }
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        yield {"time": stamp, "type": "request", "auth": auth, "request": request}
        response: dict[str, Any] = {
            "time": stamp,
            "type": "response",
            "auth": auth,
            "request": request,
            "response": {"mount_point": request["mount_point"], "mount_type": "kv"},
        }
        if error:
            response["error"] = error
        elif operation == "read":
            response["response"]["data"] = {
                "data": {
                    key: _hmac(self.rng)
                    for key in ("access_token", "token_type", "issued_at", "expires_at")
                },
                "metadata": {"created_time": stamp, "version": self.rng.randint(1, 900)},
            }
        yield response


def write_log(path: Path, size: int, traffic: Traffic, end: datetime) -> int:
    """About `size` bytes of audit log at `path`, ending at `end`; returns the garbage lines."""
    start = end - SPAN
    written = lines = garbage = 0
    with path.open("wb") as out:
        while written < size:
            moment = start + SPAN * (written / size)
            for entry in traffic.pair(moment):
                data = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
                out.write(data)
                written += len(data)
                lines += 1
                if lines % GARBAGE_EVERY == 0:
                    out.write(b"}{ not an audit entry\n")
                    garbage += 1
    return garbage


def gzip_copy(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=6) as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    return target


# --- measuring ------------------------------------------------------------------------------------


def run_audit(log_path: Path, config: Path, env: dict[str, str], size: int) -> dict[str, Any]:
    """`rotator audit --json --log log_path`, timed, with its own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as stdout:
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - our own command, fixed argv
            [str(ROTATOR), "audit", "--json", "--log", str(log_path), "--config", str(config)],
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode() if process.stderr else ""
        stdout.seek(0)
        text = stdout.read()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"rotator audit exited {process.returncode}: {stderr}")
    document = json.loads(text)
    lines = document["log"]["lines"]
    return {
        "log": log_path.name,
        "bytes_read": size,
        "file_bytes": log_path.stat().st_size,
        "lines": lines,
        "unparsable": document["log"]["unparsable"],
        "outputs": len(document["outputs"]),
        "unused": len(document["unused"]),
        "reader_rows": sum(len(output["readers"]) for output in document["outputs"]),
        "exit": process.returncode,
        "seconds": round(seconds, 2),
        "mb_per_second": round(size / MB / seconds, 1),
        "lines_per_second": round(lines / seconds),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "user_cpu_seconds": round(usage.ru_utime, 2),
    }


def seed(vault: DevVault, names: list[str]) -> None:
    def put(name: str) -> None:
        client = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
        client.secrets.kv.v2.create_or_update_secret(
            f"{SOURCES}/{name}",
            secret={"api_token": "bench-not-a-token-" + name, "host": "bench.leanix.net"},
            mount_point=MOUNT,
        )
        client.adapter.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="size of the large log (MB)")
    parser.add_argument("--small-mb", type=float, default=20, help="size of the small log (MB)")
    parser.add_argument("--outputs", type=int, default=300)
    parser.add_argument("--readers", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the logs in bench/results/")
    options = parser.parse_args(argv)
    if not ROTATOR.exists():
        raise SystemExit(f"the rotator command is not installed at {ROTATOR}")

    directory = RESULTS / "audit"
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"ws-{i // 10:02d}/integration-{i % 10}" for i in range(options.outputs)]
    end = datetime.now(UTC)
    logs = {
        "empty": (directory / "empty.log", 0),
        "small": (directory / f"audit-{options.small_mb:g}mb.log", int(options.small_mb * MB)),
        "large": (directory / f"audit-{options.mb:g}mb.log", int(options.mb * MB)),
    }
    for label, (path, size) in logs.items():
        started = time.monotonic()
        garbage = write_log(path, size, Traffic(names, options.readers), end)
        took = time.monotonic() - started
        log(f"wrote {label} log {path.name} ({garbage} garbage lines, {took:.1f} s)")
    started = time.monotonic()
    compressed = gzip_copy(logs["large"][0])
    log(f"compressed it to {compressed.name} ({time.monotonic() - started:.1f} s)")

    results: list[dict[str, Any]] = []
    with DevVault() as vault:
        seed(vault, names)
        config = directory / "rotator.toml"
        config.write_text(f'[vault]\naddr = "{vault.addr}"\n[metrics]\nlisten = ""\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["VAULT_TOKEN"] = vault.root_token
        runs = [
            (logs["empty"][0], 0),
            (logs["small"][0], logs["small"][0].stat().st_size),
            (logs["large"][0], logs["large"][0].stat().st_size),
            (compressed, logs["large"][0].stat().st_size),
        ]
        for path, size in runs:
            log(f"rotator audit --log {path.name}")
            results.append(run_audit(path, config, env, size))

    fixed = results[0]["seconds"]  # start-up, Vault login and listing, the report: no log
    for r in results[1:]:
        r["mb_per_second_net"] = round(r["bytes_read"] / MB / max(r["seconds"] - fixed, 1e-9), 1)
    print()
    header = (
        "log",
        "MB",
        "lines",
        "seconds",
        "MB/s",
        "MB/s net",
        "lines/s",
        "peak RSS MiB",
        "outputs",
        "exit",
    )
    rows = [
        (
            r["log"],
            f"{r['bytes_read'] / MB:.0f}",
            str(r["lines"]),
            f"{r['seconds']:.2f}",
            f"{r['mb_per_second']:.1f}",
            f"{r['mb_per_second_net']:.1f}" if "mb_per_second_net" in r else "-",
            str(r["lines_per_second"]),
            f"{r['peak_rss_mib']:.1f}",
            str(r["outputs"]),
            str(r["exit"]),
        )
        for r in results
    ]
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    small, large = results[1]["peak_rss_mib"], results[2]["peak_rss_mib"]
    print(
        f"\npeak RSS, {options.small_mb:g} MB log vs {options.mb:g} MB log: {small} vs {large} MiB"
    )
    record = {
        "when": end.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "outputs": options.outputs,
        "readers": options.readers,
        "runs": results,
    }
    (RESULTS / "audit.json").write_text(json.dumps(record, indent=2) + "\n")
    if not options.keep:
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
