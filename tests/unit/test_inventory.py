"""Which technical users rotator manages: rotator.inventory (the comparison and the report) and
the alerts a survey settles (alerting.inventory_observations), pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rotator.alerting import Kind, Severity, inventory_observations
from rotator.inventory import Inventory, ManagedSource, Standing, Workspace, compare, render
from rotator.mtm import TechnicalUser

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
EXPIRY = NOW + timedelta(days=200)


def user(user_id: str, name: str, role: str = "MEMBER") -> TechnicalUser:
    return TechnicalUser(user_id, name, role, "ws-acme", EXPIRY)


ACME = Workspace(
    "ws-acme",
    "acme",
    "acme/admin",
    (
        user("u-admin", "acme-admin", "ADMIN"),
        user("u-int", "acme-integration"),
        user("u-old", "old-export"),
    ),
)
SOURCES = [
    ManagedSource("acme/admin", "u-admin", "acme/admin"),
    ManagedSource("acme/integration", "u-int", "acme/admin"),
    ManagedSource("acme/gone", "u-deleted", "acme/admin"),
]


def standing(inventory: Inventory) -> dict[str, Standing]:
    return {entry.user_name or entry.user_id: entry.standing for entry in inventory.entries}


def test_users_named_by_a_source_are_managed_the_others_unmanaged_and_the_unknown_missing() -> None:
    found = compare([ACME], SOURCES)

    assert standing(found) == {
        "acme-admin": Standing.MANAGED,
        "acme-integration": Standing.MANAGED,
        "old-export": Standing.UNMANAGED,
        "u-deleted": Standing.MISSING,
    }
    (missing,) = found.of(Standing.MISSING)
    assert (missing.source, missing.user_id, missing.workspace) == (
        "acme/gone",
        "u-deleted",
        "acme",
    )
    managed = {e.user_name: e.source for e in found.of(Standing.MANAGED)}
    assert managed == {"acme-admin": "acme/admin", "acme-integration": "acme/integration"}
    assert not found.healthy


def test_every_user_managed_is_healthy() -> None:
    workspace = Workspace("ws-acme", "acme", "acme/admin", (user("u-admin", "acme-admin"),))

    found = compare([workspace], [SOURCES[0]])

    assert found.healthy and [e.standing for e in found.entries] == [Standing.MANAGED]


def test_a_workspace_listed_through_two_admins_appears_once() -> None:
    second = Workspace("ws-acme", "acme", "acme/admin2", ACME.users)
    sources = [*SOURCES[:2], ManagedSource("acme/admin2", "u-old", "acme/admin2")]

    found = compare([ACME, second], sources)

    assert len(found.entries) == 3
    assert standing(found)["old-export"] is Standing.MANAGED


def test_a_workspace_that_could_not_be_listed_decides_nothing_about_its_sources() -> None:
    down = Workspace("acme/admin", None, "acme/admin", error="MTM answered 503")

    found = compare([down], SOURCES)

    assert found.entries == () and found.unreachable == (down,)
    assert not found.healthy


def test_users_of_other_workspaces_are_listed_under_theirs() -> None:
    other = Workspace("ws-globex", "globex", "globex/admin", (user("g-1", "globex-admin"),))
    sources = [*SOURCES, ManagedSource("globex/admin", "g-1", "globex/admin")]

    found = compare([other, ACME], sources)

    assert [e.workspace for e in found.entries] == ["acme"] * 4 + ["globex"]
    assert found.entries[0].standing is Standing.MISSING  # problems first within a workspace


def test_the_report_says_what_an_admin_could_retire() -> None:
    text = render(compare([ACME], SOURCES), NOW, as_json=False)

    lines = text.splitlines()
    assert lines[0].split()[:2] == ["WORKSPACE", "STANDING"]
    assert any(line.split()[:3] == ["acme", "unmanaged", "old-export"] for line in lines)
    assert any(line.split()[:2] == ["acme", "missing"] and "acme/gone" in line for line in lines)
    assert "an admin could retire it by deleting the technical user" in text


def test_the_json_report_has_every_user_and_the_unreachable_workspaces() -> None:
    down = Workspace("globex/admin", None, "globex/admin", error="no valid access token")
    document = json.loads(render(compare([ACME, down], SOURCES), NOW, as_json=True))

    assert document["healthy"] is False
    assert {row["standing"] for row in document["technical_users"]} == {
        "managed",
        "unmanaged",
        "missing",
    }
    old = next(r for r in document["technical_users"] if r["user_name"] == "old-export")
    assert old == {
        "workspace": "acme",
        "standing": "unmanaged",
        "technical_user_id": "u-old",
        "user_name": "old-export",
        "role": "MEMBER",
        "api_token_expires_at": "2027-06-19T12:00:00Z",
        "source": None,
    }
    assert document["unreachable"] == [
        {
            "workspace": "globex/admin",
            "admin_source": "globex/admin",
            "error": "no valid access token",
        }
    ]


# --- the alerts a survey settles ------------------------------------------------------------------


def test_a_survey_fires_missing_per_source_and_unmanaged_per_user() -> None:
    seen = inventory_observations(compare([ACME], SOURCES), {})

    active = {(o.kind, o.token): o for o in seen if o.active}
    assert set(active) == {
        (Kind.TECHNICAL_USER_MISSING, "acme/gone"),
        (Kind.UNMANAGED_TECHNICAL_USER, "acme/old-export"),
    }
    assert active[(Kind.TECHNICAL_USER_MISSING, "acme/gone")].severity is Severity.CRITICAL
    unmanaged = active[(Kind.UNMANAGED_TECHNICAL_USER, "acme/old-export")]
    assert unmanaged.severity is Severity.WARNING and "old-export" in unmanaged.summary
    resolved = {(o.kind, o.token) for o in seen if not o.active}
    assert (Kind.TECHNICAL_USER_MISSING, "acme/integration") in resolved


def test_an_unmanaged_user_that_is_gone_or_managed_now_is_resolved() -> None:
    managed_now = [*SOURCES, ManagedSource("acme/export", "u-old", "acme/admin")]

    seen = inventory_observations(compare([ACME], managed_now), {"acme/old-export": "acme/admin"})

    (resolution,) = [o for o in seen if o.kind is Kind.UNMANAGED_TECHNICAL_USER]
    assert (resolution.token, resolution.active) == ("acme/old-export", False)


def test_an_unreachable_workspace_resolves_none_of_its_unmanaged_users() -> None:
    down = Workspace("acme/admin", None, "acme/admin", error="MTM answered 503")

    seen = inventory_observations(compare([down], SOURCES), {"acme/old-export": "acme/admin"})

    assert [o for o in seen if o.kind is Kind.UNMANAGED_TECHNICAL_USER] == []
