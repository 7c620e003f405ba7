"""The CLI's report redacts every known secret, even one a bug put into an outcome."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from rotator.cli import report
from rotator.exchange import TokenExchanger
from rotator.redact import SECRETS
from rotator.rotation import Outcome, Rotator
from tests.conftest import VaultSpace

LEAKED = "api-token-that-a-bug-put-into-a-message-0123456789"


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_a_secret_in_an_outcome_never_reaches_the_report(
    vault_space: VaultSpace, as_json: bool
) -> None:
    SECRETS.register(LEAKED)
    rotator = Rotator(
        vault_space.config(),
        vault_space.store(),
        TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5),
    )
    outcome = Outcome(
        "acme/prod",
        "failing",
        None,
        datetime.now(UTC),
        error=f"exchange failed for {LEAKED}",
        issuances_last_hour=0,
    )
    out = io.StringIO()

    report(rotator, [outcome], as_json=as_json, out=out)

    text = out.getvalue()
    assert LEAKED not in text
    assert "[REDACTED:" in text and "acme/prod" in text
    if as_json:
        assert json.loads(text)["tokens"][0]["error"].startswith("exchange failed for [REDACTED:")
    rotator.exchanger.close()
