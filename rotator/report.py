"""The reports of `check`, `status` and `rotate` (and the demo's table): outcomes in, text out.

Pure: no Vault, no clock (`now` is an argument). One row per token; JSON with `as_json`, in the
stable shape the README documents. No row holds a token value, and every known secret is
redacted from the text on its way out all the same (`redact.SECRETS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rotator.lifecycle import WHY_TEXT, Step
from rotator.outcome import ApiTokenOutcome, Check, Outcome, Planned, Replacement
from rotator.redact import SECRETS
from rotator.tokens import format_time

HEADERS = ("TOKEN", "STATE", "EXPIRES IN", "LAST ISSUED", "ISSUED/1H", "DETAIL")


def render(
    outcomes: Sequence[Outcome],
    issuances: Sequence[int | None],
    now: datetime,
    *,
    as_json: bool,
    api_tokens: Sequence[ApiTokenOutcome | None] | None = None,
) -> str:
    """The report of `outcomes`; `issuances[i]` is the issuances-last-hour count of the i-th
    (None: unknown), `api_tokens[i]` what its API-token lifecycle did (`check`)."""
    table = rows(outcomes, issuances, now, api_tokens)
    text = _json(table, now) if as_json else _table(table)
    return SECRETS.redact(text)


def rows(
    outcomes: Sequence[Outcome],
    issuances: Sequence[int | None],
    now: datetime,
    api_tokens: Sequence[ApiTokenOutcome | None] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready row per outcome."""
    lifecycles = list(api_tokens) if api_tokens is not None else [None] * len(outcomes)
    return [
        _row(outcome, count, now, lifecycle)
        for outcome, count, lifecycle in zip(outcomes, issuances, lifecycles, strict=True)
    ]


def _row(
    outcome: Outcome, issuances: int | None, now: datetime, lifecycle: ApiTokenOutcome | None
) -> dict[str, Any]:
    token = outcome.output
    expiry = outcome.api_token_expires_at
    if lifecycle is not None and lifecycle.api_token_expires_at is not None:
        expiry = lifecycle.api_token_expires_at
    next_token = lifecycle.next_token if lifecycle is not None else None
    replacement = lifecycle.result if lifecycle is not None else None
    return {
        "name": outcome.name,
        "state": outcome.state.value,
        "healthy": outcome.healthy,
        "issued_at": format_time(token.issued_at) if token else None,
        "expires_at": format_time(token.expires_at) if token else None,
        "expires_in_seconds": int((token.expires_at - now).total_seconds()) if token else None,
        "issuances_last_hour": issuances,
        "reason": outcome.reason.value if outcome.reason else None,
        "error": outcome.error,
        "error_kind": outcome.error_kind.value if outcome.error_kind else None,
        "api_token_expires_at": format_time(expiry) if expiry else None,
        "api_token_next": next_token.value if next_token is not None else None,
        "api_token_replacement": (
            replacement.value if replacement not in (None, Replacement.NOTHING) else None
        ),
        "api_token_error": lifecycle.error if lifecycle is not None else None,
        "api_token_waits": _waits(lifecycle),
    }


def _json(table: list[dict[str, Any]], now: datetime) -> str:
    document = {
        "checked_at": format_time(now),
        "healthy": all(row["healthy"] for row in table),
        "tokens": table,
    }
    return json.dumps(SECRETS.redact_data(document), indent=2) + "\n"


def _table(table: list[dict[str, Any]]) -> str:
    cells = [
        (
            row["name"],
            row["state"],
            duration(row["expires_in_seconds"]),
            row["issued_at"] or "-",
            str(row["issuances_last_hour"]) if row["issuances_last_hour"] is not None else "-",
            _detail(row),
        )
        for row in table
    ]
    return _columns(HEADERS, cells, "(no tokens under the source prefix)")


def _waits(lifecycle: ApiTokenOutcome | None) -> str | None:
    """Why a wanted replacement waits, and until when (None: it does not wait)."""
    if lifecycle is None or lifecycle.plan is not Step.WAIT:
        return None
    until = f" until {format_time(lifecycle.next_at)}" if lifecycle.next_at else ""
    return f"{WHY_TEXT[lifecycle.why]}{until}"


def _detail(row: dict[str, Any]) -> str:
    detail = row["error"] or row["reason"] or ""
    if row["api_token_replacement"]:
        detail += f"; API token {row['api_token_replacement']}"
    if row["api_token_waits"]:
        detail += f"; API token replacement waits: {row['api_token_waits']}"
    if row["api_token_error"]:
        detail += f" ({row['api_token_error']})"
    if row["api_token_next"]:
        detail += f"; api_token_next {row['api_token_next']}"
    return detail


# --- `rotator plan` -------------------------------------------------------------------------------

PLAN_HEADERS = ("TOKEN", "ACTION", "AT", "WHY")


def render_plan(planned: Sequence[Planned], now: datetime, *, as_json: bool) -> str:
    """What `rotator plan` prints: one row per planned action, in token order."""
    if as_json:
        tokens: dict[str, list[dict[str, Any]]] = {}
        for item in planned:
            tokens.setdefault(item.name, []).append(
                {
                    "action": item.action,
                    "at": format_time(item.at) if item.at else None,
                    "why": item.why,
                }
            )
        document = {
            "planned_at": format_time(now),
            "tokens": [{"name": name, "actions": actions} for name, actions in tokens.items()],
        }
        return SECRETS.redact(json.dumps(document, indent=2) + "\n")
    cells = [
        (item.name, item.action, format_time(item.at) if item.at else "-", item.why)
        for item in planned
    ]
    return SECRETS.redact(_columns(PLAN_HEADERS, cells, "(no tokens under the source prefix)"))


def render_checks(checks: Sequence[tuple[str, Sequence[Check]]]) -> str:
    """What `rotator replace-api-token --dry-run` prints: every check per token."""
    cells = [
        (name, check.what, "ok" if check.ok else "FAILED", check.detail)
        for name, found in checks
        for check in found
    ]
    return SECRETS.redact(_columns(("TOKEN", "CHECK", "RESULT", "DETAIL"), cells, "(no tokens)"))


def _columns(headers: tuple[str, ...], cells: Sequence[tuple[str, ...]], empty: str) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *cells, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *cells)
    ]
    if not cells:
        lines.append(empty)
    return "\n".join(lines) + "\n"


def duration(seconds: int | None) -> str:
    """`59m59s`, `1h05m`, `expired` or `-`."""
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
