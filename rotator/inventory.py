"""Which technical users exist, which rotator manages, which are gone (SPEC, `rotator inventory`,
the alerts `unmanaged_technical_user` and `technical_user_missing`). Pure: the caller lists the
technical users of every workspace reachable through an admin source (`replacement.ApiTokens.
survey`); this module compares them with the sources in Vault and renders the report.

- **managed**: a source's `technical_user_id` names the user;
- **unmanaged**: no source does: an API token nobody under rotator's care holds, a candidate to
  retire (LeanIX: "delete unnecessary API tokens by deleting technical users"); rotator never
  deletes anything, the report says what an admin could;
- **missing**: a source names an id its admin's workspace does not know (deleted, or the source's
  `admin_source` is in another workspace).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from rotator.mtm import TechnicalUser
from rotator.redact import SECRETS
from rotator.tokens import format_time


class Standing(StrEnum):
    MANAGED = "managed"
    UNMANAGED = "unmanaged"
    MISSING = "missing"


@dataclass(frozen=True)
class ManagedSource:
    """A source that names a technical user: its name, the user's id, its admin source."""

    name: str
    technical_user_id: str
    admin: str


@dataclass(frozen=True)
class Workspace:
    """The technical users of one workspace as MTM listed them through `admin`'s access token;
    `error` instead when they could not be listed."""

    id: str
    name: str | None
    admin: str
    users: tuple[TechnicalUser, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Entry:
    """One technical user (or one source whose user is missing) in the inventory."""

    workspace: str  # the workspace's name, else its id
    standing: Standing
    user_id: str
    user_name: str | None
    role: str | None
    expires_at: datetime | None
    source: str | None  # the source holding its API token; None when unmanaged
    admin: str  # the admin source whose access token listed its workspace

    @property
    def key(self) -> str:
        """How alerts name it: the source for managed and missing users, else workspace/user."""
        return self.source or f"{self.workspace}/{self.user_name or self.user_id}"


@dataclass(frozen=True)
class Inventory:
    entries: tuple[Entry, ...]
    unreachable: tuple[Workspace, ...]  # workspaces whose users could not be listed

    def of(self, standing: Standing) -> list[Entry]:
        return [entry for entry in self.entries if entry.standing is standing]

    @property
    def healthy(self) -> bool:
        """Nothing unmanaged, nothing missing, every workspace listed."""
        return not self.unreachable and all(e.standing is Standing.MANAGED for e in self.entries)


def compare(workspaces: Iterable[Workspace], sources: Iterable[ManagedSource]) -> Inventory:
    """The inventory of `workspaces` against `sources`. A source is checked against the
    workspace its admin source listed; sources whose admin's workspace could not be listed are
    left out (neither managed nor missing is known)."""
    listed = [w for w in workspaces if w.error is None]
    unreachable = tuple(w for w in workspaces if w.error is not None)
    by_admin = {w.admin: w for w in listed}
    named: dict[tuple[str, str], str] = {}  # (workspace id, user id) -> source
    entries: list[Entry] = []
    for source in sorted(sources, key=lambda s: s.name):
        workspace = by_admin.get(source.admin)
        if workspace is None:
            continue
        named[(workspace.id, source.technical_user_id)] = source.name
        if not any(user.id == source.technical_user_id for user in workspace.users):
            entries.append(
                Entry(
                    _label(workspace),
                    Standing.MISSING,
                    source.technical_user_id,
                    None,
                    None,
                    None,
                    source.name,
                    workspace.admin,
                )
            )
    seen: set[str] = set()
    for workspace in sorted(listed, key=_label):
        if workspace.id in seen:  # two admin sources of one workspace list it twice
            continue
        seen.add(workspace.id)
        for user in sorted(workspace.users, key=lambda u: (u.user_name.lower(), u.id)):
            source_name = named.get((workspace.id, user.id))
            entries.append(
                Entry(
                    _label(workspace),
                    Standing.MANAGED if source_name else Standing.UNMANAGED,
                    user.id,
                    user.user_name,
                    user.role,
                    user.expires_at,
                    source_name,
                    workspace.admin,
                )
            )
    order = {Standing.MISSING: 0, Standing.UNMANAGED: 1, Standing.MANAGED: 2}
    entries.sort(key=lambda e: (e.workspace, order[e.standing], e.user_name or "", e.user_id))
    return Inventory(tuple(entries), unreachable)


def _label(workspace: Workspace) -> str:
    return workspace.name or workspace.id


# --- the report -----------------------------------------------------------------------------------

HEADERS = ("WORKSPACE", "STANDING", "TECHNICAL USER", "ROLE", "API TOKEN EXPIRES", "SOURCE")


def render(inventory: Inventory, now: datetime, *, as_json: bool) -> str:
    """`rotator inventory`'s report: a table, or one JSON document."""
    if as_json:
        document: dict[str, Any] = {
            "checked_at": format_time(now),
            "healthy": inventory.healthy,
            "technical_users": [_row(entry) for entry in inventory.entries],
            "unreachable": [
                {"workspace": _label(w), "admin_source": w.admin, "error": w.error}
                for w in inventory.unreachable
            ],
        }
        return SECRETS.redact(json.dumps(document, indent=2) + "\n")
    cells = [
        (
            entry.workspace,
            entry.standing.value,
            entry.user_name or entry.user_id,
            entry.role or "-",
            format_time(entry.expires_at) if entry.expires_at else "-",
            entry.source or "-",
        )
        for entry in inventory.entries
    ]
    widths = [max(len(c) for c in column) for column in zip(HEADERS, *cells, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (HEADERS, *cells)
    ]
    if not cells:
        lines.append("(no workspace reachable through an admin source)")
    if inventory.of(Standing.UNMANAGED):
        lines.append(
            "unmanaged: no source in Vault holds its API token; if nobody uses it, an admin "
            "could retire it by deleting the technical user (rotator deletes nothing)"
        )
    for workspace in inventory.unreachable:
        lines.append(
            f"workspace {_label(workspace)} (admin source {workspace.admin}): {workspace.error}"
        )
    return SECRETS.redact("\n".join(lines) + "\n")


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "workspace": entry.workspace,
        "standing": entry.standing.value,
        "technical_user_id": entry.user_id,
        "user_name": entry.user_name,
        "role": entry.role,
        "api_token_expires_at": format_time(entry.expires_at) if entry.expires_at else None,
        "source": entry.source,
    }
