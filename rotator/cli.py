"""The `rotator` command: argument parsing, wiring, output and exit codes (SPEC, "Command line").

Exit codes: 0 healthy, 1 some token failing, 2 usage or configuration error, 3 Vault unreachable
or refusing rotator's credentials.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from rotator import __version__, audit, inventory, report
from rotator import config as config_module
from rotator.config import Config
from rotator.errors import ConfigError, VaultAuthError, VaultError
from rotator.outcome import ApiTokenOutcome, Replacement
from rotator.redact import install_filter
from rotator.replacement import ApiTokens
from rotator.rotation import Rotator
from rotator.sources import is_valid_name
from rotator.vault import VaultStore
from rotator.wiring import build_api_tokens, build_rotator

logger = logging.getLogger("rotator")

EXIT_OK, EXIT_FAILING, EXIT_USAGE, EXIT_VAULT = 0, 1, 2, 3
_T = TypeVar("_T")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=config_module.DEFAULT_PATH,
        help=f"TOML configuration file (default: {config_module.DEFAULT_PATH})",
    )
    common.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    common.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object per line, for log shippers",
    )
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Exchange long-lived API tokens in Vault for short-lived access tokens.",
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("run", parents=[common], help="the daemon, in the foreground")
    check = verbs.add_parser("check", parents=[common], help="one full cycle; exit 1 if failing")
    check.add_argument("--json", action="store_true", help="machine-readable report")
    status = verbs.add_parser("status", parents=[common], help="read-only report from Vault")
    status.add_argument("--json", action="store_true", help="machine-readable report")
    rotate = verbs.add_parser(
        "rotate", parents=[common], help="exchange now, regardless of validity"
    )
    rotate.add_argument("names", nargs="*", metavar="NAME")
    rotate.add_argument("--all", action="store_true", help="every token under the source prefix")
    rotate.add_argument("--json", action="store_true", help="machine-readable report")
    plan = verbs.add_parser(
        "plan", parents=[common], help="read-only: every token's next action, when and why"
    )
    plan.add_argument("--json", action="store_true", help="machine-readable report")
    inventory_verb = verbs.add_parser(
        "inventory",
        parents=[common],
        help="technical users at MTM against the sources in Vault: managed, unmanaged, missing",
    )
    inventory_verb.add_argument("--json", action="store_true", help="machine-readable report")
    replace = verbs.add_parser(
        "replace-api-token",
        parents=[common],
        help="replace the long-lived API token at LeanIX MTM now (staged; see the README)",
    )
    replace.add_argument("names", nargs="+", metavar="NAME")
    replace.add_argument(
        "--dry-run", action="store_true", help="only prove every step would be allowed"
    )
    verbs.add_parser("validate-config", parents=[common], help="load and check the config file")
    audit_verb = verbs.add_parser(
        "audit", parents=[common], help="who reads the output secrets, from a Vault audit log"
    )
    audit_verb.add_argument(
        "--log",
        required=True,
        metavar="PATH",
        help="the file audit device's log (JSON lines; '-' reads stdin, *.gz is decompressed)",
    )
    audit_verb.add_argument("--json", action="store_true", help="machine-readable report")
    audit_verb.add_argument(
        "--unused-days",
        type=int,
        default=audit.DEFAULT_UNUSED_DAYS,
        metavar="N",
        help=f"unused: no consumer read in N days (default {audit.DEFAULT_UNUSED_DAYS})",
    )
    demo = verbs.add_parser("demo", parents=[common], help="everything local, with live status")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: Ctrl-C)",
    )
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr through the redacting filter; quiet APScheduler's per-job chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    install_filter(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.verb == "demo":
            from rotator.dev.demo import run_demo  # noqa: PLC0415 - needs the optional demo extra

            return run_demo(duration=args.duration)
        config = config_module.load(args.config, os.environ)
        if args.verb == "validate-config":
            print(f"{args.config}: OK")
            return EXIT_OK
        return _dispatch(args, config)
    except ConfigError as exc:
        print(f"rotator: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VaultAuthError as exc:
        print(f"rotator: Vault refused rotator's credentials: {exc}", file=sys.stderr)
        return EXIT_VAULT
    except VaultError as exc:
        print(f"rotator: Vault is unavailable: {exc}", file=sys.stderr)
        return EXIT_VAULT


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.verb == "audit":
        return _audit(args, config)
    rotator = build_rotator(config)
    if args.verb == "run":
        from rotator.service import run_service  # noqa: PLC0415 (the daemon's stack: `run` alone)

        return run_service(config, rotator)
    keeper = build_api_tokens(rotator)
    if args.verb in ("check", "rotate", "replace-api-token"):
        rotator.join_once()  # claim only if a daemon is live
    try:
        if args.verb == "plan":
            return _plan(rotator, keeper, args.json)
        if args.verb == "inventory":
            found = keeper.survey(rotator.discover(), exchange=True)
            sys.stdout.write(inventory.render(found, datetime.now(UTC), as_json=args.json))
            return EXIT_OK if found.healthy else EXIT_FAILING
        if args.verb == "replace-api-token":
            return _replace(keeper, args.names, dry_run=args.dry_run)
        return _report(args, rotator, keeper)
    finally:
        keeper.mtm.close()
        rotator.exchanger.close()


def _report(args: argparse.Namespace, rotator: Rotator, keeper: ApiTokens) -> int:
    """`check`, `status` and `rotate`: one row per token."""
    lifecycles: list[ApiTokenOutcome | None] | None = None
    if args.verb == "check":
        names = rotator.discover()
        keeper.record_expiries(keeper.survey(names))  # the daemon's lookup, once
        pairs = _each(rotator, names, keeper.pass_over)
        outcomes = [outcome for outcome, _ in pairs]
        lifecycles = [lifecycle for _, lifecycle in pairs]
    elif args.verb == "status":
        outcomes = _each(rotator, rotator.discover(), rotator.inspect)
    else:  # rotate
        if bool(args.names) == bool(args.all):
            print("rotator rotate: give token NAMEs or --all, not both", file=sys.stderr)
            return EXIT_USAGE
        for name in args.names:
            if not is_valid_name(name):
                print(f"rotator rotate: {name!r} is not a token name", file=sys.stderr)
                return EXIT_USAGE
        outcomes = rotator.run_cycle(None if args.all else args.names, force=True)
    counts = rotator.issuance_counts(outcomes)
    now = datetime.now(UTC)
    sys.stdout.write(report.render(outcomes, counts, now, as_json=args.json, api_tokens=lifecycles))
    failed = any(
        item is not None and item.result is Replacement.FAILED for item in lifecycles or ()
    )
    return EXIT_OK if all(o.healthy for o in outcomes) and not failed else EXIT_FAILING


def _plan(rotator: Rotator, keeper: ApiTokens, as_json: bool) -> int:
    """`plan`: every token's next actions, read-only."""
    names = rotator.discover()
    planned = _each(rotator, names, lambda n: [rotator.planned(n), *keeper.planned(n)])
    flat = [item for items in planned for item in items]
    sys.stdout.write(report.render_plan(flat, datetime.now(UTC), as_json=as_json))
    unhealthy = {"fix the source secret", "wait for the issuance cap"}
    return EXIT_FAILING if any(item.action in unhealthy for item in flat) else EXIT_OK


def _replace(keeper: ApiTokens, names: list[str], *, dry_run: bool) -> int:
    """`replace-api-token`: replace each token's API token now, or prove it would work."""
    for name in names:
        if not is_valid_name(name):
            print(f"rotator replace-api-token: {name!r} is not a token name", file=sys.stderr)
            return EXIT_USAGE
    if dry_run:
        checks = [(name, keeper.dry_run(name)) for name in names]
        sys.stdout.write(report.render_checks(checks))
        passed = all(check.ok for _, found in checks for check in found)
        return EXIT_OK if passed else EXIT_FAILING
    results = [keeper.pass_over(name, requested=True) for name in names]
    outcomes = [outcome for outcome, _ in results]
    lifecycles: list[ApiTokenOutcome | None] = [lifecycle for _, lifecycle in results]
    counts = keeper.rotator.issuance_counts(outcomes)
    sys.stdout.write(
        report.render(outcomes, counts, datetime.now(UTC), as_json=False, api_tokens=lifecycles)
    )
    replaced = all(item is not None and item.result is Replacement.REPLACED for item in lifecycles)
    return EXIT_OK if replaced and all(o.healthy for o in outcomes) else EXIT_FAILING


def _each(rotator: Rotator, names: list[str], work: Callable[[str], _T]) -> list[_T]:
    """`work` for every name, at most `max_workers` at once, in name order."""
    workers = max(1, min(rotator.config.exchange.max_workers, len(names)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verb") as pool:
        return list(pool.map(work, sorted(names)))


def _audit(args: argparse.Namespace, config: Config) -> int:
    """`rotator audit`: rotator's own identity and the sources from Vault, then the log,
    streamed. Exit 1 when any output is unused; 2 when the log cannot be read, also halfway (a
    verdict from part of a log could call a used token unused)."""
    if args.unused_days < 1:
        print("rotator audit: --unused-days must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    store = VaultStore.connect(config.vault, pool_size=1)
    own = store.auth.token_identity()
    sources = store.list_sources()
    try:
        with audit.open_log(args.log, sys.stdin.buffer) as stream:
            result = audit.audit(
                audit.read_lines(stream),
                mount=config.vault.mount,
                output_prefix=config.vault.output_prefix,
                own=own,
                sources=sources,
                now=datetime.now(UTC),
                unused_days=args.unused_days,
            )
    except (OSError, EOFError, zlib.error) as exc:
        # Why, never a byte of the log (BadGzipFile's message quotes the file's first bytes).
        gzip_error = isinstance(exc, gzip.BadGzipFile)
        why = "not gzip-compressed" if gzip_error else getattr(exc, "strerror", None) or exc
        print(f"rotator audit: cannot read {args.log}: {why}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(audit.render(result, as_json=args.json))
    return EXIT_FAILING if result.unused else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
