"""`rotator inventory` and the daemon's survey of technical users against the stand-in's MTM
with several workspaces and paged listings: managed, unmanaged and missing users, and the
alerts `unmanaged_technical_user` and `technical_user_missing` firing and resolving."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Rig
from tests.sinks import RecordingServer
from tests.waiting import alive, wait_for

LATER = timedelta(days=300)


def _configure(rig: Rig, webhook: RecordingServer | None = None) -> None:
    alerts: dict[str, Any] = {"max_issuances_per_hour": 1000}
    if webhook is not None:
        alerts["webhook_urls"] = [webhook.url]
    rig.write_config(
        schedule={"check_interval_seconds": 1, "discovery_interval_seconds": 1},
        alerts=alerts,
        api_tokens={"lookup_interval_seconds": 1},
    )


def _events(webhook: RecordingServer, kind: str, status: str) -> list[dict[str, Any]]:
    return [b for b in webhook.bodies() if b.get("alert") == kind and b.get("status") == status]


def test_inventory_lists_every_workspace_reachable_through_an_admin_source(rig: Rig) -> None:
    _configure(rig)
    rig.add_managed_token("acme/admin", expires_in=LATER, workspace="acme")
    rig.add_managed_token(
        "acme/integration",
        expires_in=LATER,
        workspace="acme",
        role="MEMBER",
        admin_source="acme/admin",
    )
    # 104 more technical users in acme nobody holds a source for: two pages at MTM's maximum.
    for index in range(104):
        rig.idp.add_token(
            f"api-unmanaged-{index}-{secrets.token_hex(8)}",
            workspace_id=rig.workspace("acme"),
            role="MEMBER",
            user_name=f"shadow-{index:03d}",
        )
    rig.add_managed_token("globex/admin", expires_in=LATER, workspace="globex")
    gone = rig.add_managed_token(
        "globex/old", expires_in=LATER, workspace="globex", admin_source="globex/admin"
    )
    rig.idp.delete_technical_user(gone)
    rig.add_token("plain/not-managed")  # no technical_user_id: not in the inventory

    result = rig.rotator("inventory", "--json")

    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    rows = document["technical_users"]
    by_standing: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_standing.setdefault(row["standing"], []).append(row)
    managed = {row["source"] for row in by_standing["managed"]}
    assert managed == {"acme/admin", "acme/integration", "globex/admin"}
    assert len(by_standing["unmanaged"]) == 104
    assert {row["workspace"] for row in by_standing["unmanaged"]} == {"acme"}
    (missing,) = by_standing["missing"]
    assert (missing["source"], missing["technical_user_id"], missing["workspace"]) == (
        "globex/old",
        gone,
        "globex",
    )
    assert all(row["api_token_expires_at"] for row in by_standing["managed"])
    assert document["unreachable"] == []
    # Each workspace listed once, page by page (100 at a time): acme has 106 users.
    lists = [
        r for r in rig.idp.mtm_requests if r.method == "GET" and r.path.endswith("/technicalusers")
    ]
    assert len(lists) == 3
    for secret in rig.secrets():
        assert secret not in result.stdout + result.stderr


def test_the_daemon_alerts_on_unmanaged_and_missing_technical_users_and_resolves_them(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    _configure(rig, webhook)
    rig.add_managed_token("acme/admin", expires_in=LATER)
    shadow = "api-shadow-" + secrets.token_hex(12)
    shadow_id = rig.idp.add_token(
        shadow, workspace_id=rig.workspace("acme"), role="MEMBER", user_name="shadow"
    )
    rig.api_tokens["shadow"] = shadow
    doomed = rig.add_managed_token(
        "acme/doomed", expires_in=LATER, role="MEMBER", admin_source="acme/admin"
    )
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(
            alive(process, lambda: _events(webhook, "unmanaged_technical_user", "firing")),
            30,
            "unmanaged_technical_user",
        )
        (event,) = _events(webhook, "unmanaged_technical_user", "firing")
        assert event["token"] == "acme/shadow" and event["severity"] == "warning"

        # Taken under rotator's care: the next survey resolves it.
        rig.space.write_source(
            "acme/shadow",
            {
                "api_token": shadow,
                "token_url": rig.idp.token_url,
                "technical_user_id": shadow_id,
                "admin_source": "acme/admin",
            },
        )
        wait_for(
            alive(process, lambda: _events(webhook, "unmanaged_technical_user", "resolved")),
            30,
            "unmanaged_technical_user resolved",
        )

        rig.idp.delete_technical_user(doomed)
        wait_for(
            alive(process, lambda: _events(webhook, "technical_user_missing", "firing")),
            30,
            "technical_user_missing",
        )
        (missing,) = _events(webhook, "technical_user_missing", "firing")
        assert missing["token"] == "acme/doomed" and missing["severity"] == "critical"

        # The source removed too: the token is no longer managed, its alerts resolve.
        rig.space.root.secrets.kv.v2.delete_metadata_and_all_versions(
            f"{rig.space.source_prefix}/acme/doomed", mount_point="secret"
        )
        wait_for(
            alive(process, lambda: _events(webhook, "technical_user_missing", "resolved")),
            30,
            "technical_user_missing resolved",
        )

    text = log.read_text() + json.dumps(webhook.bodies())
    for secret in rig.secrets():
        assert secret not in text
