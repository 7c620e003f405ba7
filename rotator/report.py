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

from rotator.outcome import Outcome
from rotator.redact import SECRETS
from rotator.tokens import format_time

HEADERS = ("TOKEN", "STATE", "EXPIRES IN", "LAST ISSUED", "ISSUED/1H", "DETAIL")


def render(
    outcomes: Sequence[Outcome],
    issuances: Sequence[int | None],
    now: datetime,
    *,
    as_json: bool,
) -> str:
    """The report of `outcomes`; `issuances[i]` is the issuances-last-hour count of the i-th
    (None: unknown)."""
    table = rows(outcomes, issuances, now)
    text = _json(table, now) if as_json else _table(table)
    return SECRETS.redact(text)


def rows(
    outcomes: Sequence[Outcome], issuances: Sequence[int | None], now: datetime
) -> list[dict[str, Any]]:
    """One JSON-ready row per outcome."""
    return [_row(outcome, count, now) for outcome, count in zip(outcomes, issuances, strict=True)]


def _row(outcome: Outcome, issuances: int | None, now: datetime) -> dict[str, Any]:
    token = outcome.output
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
            row["error"] or row["reason"] or "",
        )
        for row in table
    ]
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(HEADERS, *cells, strict=False)
    ]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (HEADERS, *cells)
    ]
    if not cells:
        lines.append("(no tokens under the source prefix)")
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
