"""The reports of check, status and rotate: rotator.report, pure (outcomes and counts in, text
out), so the table and the JSON document are pinned without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rotator.outcome import FailureKind, Outcome, Reason, State
from rotator.redact import SECRETS
from rotator.report import duration, render
from rotator.tokens import AccessToken

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
LEAKED = "api-token-that-a-bug-put-into-a-message-0123456789"


def token(issued_at: datetime = NOW) -> AccessToken:
    return AccessToken(
        access_token="header.claims.signature-of-a-report-test",
        token_type="bearer",
        expires_in=3599,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=3599),
        source_version=1,
    )


def refreshed(name: str = "acme/production") -> Outcome:
    return Outcome(name, State.REFRESHED, token(), NOW + timedelta(minutes=47), Reason.MISSING)


def rejected(name: str = "legacy/old-integration") -> Outcome:
    return Outcome(
        name,
        State.FAILING,
        None,
        NOW + timedelta(minutes=1),
        Reason.MISSING,
        f"token endpoint answered 401 for {name!r}: the API token is invalid or revoked",
        FailureKind.REJECTED,
        failures=1,
    )


def test_json_is_the_documented_document() -> None:
    document = json.loads(render([refreshed()], [1], NOW, as_json=True))

    assert document == {
        "checked_at": "2026-11-29T10:00:00Z",
        "healthy": True,
        "tokens": [
            {
                "name": "acme/production",
                "state": "refreshed",
                "healthy": True,
                "issued_at": "2026-11-29T10:00:00Z",
                "expires_at": "2026-11-29T10:59:59Z",
                "expires_in_seconds": 3599,
                "issuances_last_hour": 1,
                "reason": "missing",
                "error": None,
                "error_kind": None,
                "api_token_expires_at": None,
                "api_token_next": None,
                "api_token_replacement": None,
                "api_token_error": None,
                "api_token_waits": None,
            }
        ],
    }


def test_json_is_unhealthy_when_any_token_fails() -> None:
    document = json.loads(render([refreshed(), rejected()], [1, 0], NOW, as_json=True))

    assert document["healthy"] is False
    assert [row["error_kind"] for row in document["tokens"]] == [None, "rejected"]


def test_the_table_has_a_row_per_token_with_the_error_as_detail() -> None:
    lines = render([refreshed(), rejected()], [1, None], NOW, as_json=False).splitlines()

    assert lines[0].split() == [
        "TOKEN",
        "STATE",
        "EXPIRES",
        "IN",
        "LAST",
        "ISSUED",
        "ISSUED/1H",
        "DETAIL",
    ]
    assert lines[1].split()[:5] == [
        "acme/production",
        "refreshed",
        "59m59s",
        "2026-11-29T10:00:00Z",
        "1",
    ]
    assert lines[2].split()[:5] == ["legacy/old-integration", "failing", "-", "-", "-"]
    assert lines[2].endswith("the API token is invalid or revoked")


def test_an_empty_prefix_says_so() -> None:
    assert (
        render([], [], NOW, as_json=False).splitlines()[-1] == "(no tokens under the source prefix)"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "expired"), (-5, "expired"), (61, "1m01s"), (3900, "1h05m")],
)
def test_durations_read_as_on_a_wall_clock(seconds: int | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_a_secret_in_an_outcome_never_reaches_the_report(as_json: bool) -> None:
    SECRETS.register(LEAKED)
    outcome = Outcome(
        "acme/prod",
        State.FAILING,
        None,
        NOW,
        error=f"exchange failed for {LEAKED}",
        issuances_last_hour=0,
    )

    text = render([outcome], [0], NOW, as_json=as_json)

    assert LEAKED not in text
    assert "[REDACTED:" in text and "acme/prod" in text
    if as_json:
        assert json.loads(text)["tokens"][0]["error"].startswith("exchange failed for [REDACTED:")
