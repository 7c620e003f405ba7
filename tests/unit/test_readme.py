"""The README's lists of states, error kinds and reasons are the code's enums, word for word, so
the documentation of `--json` cannot drift from what rotator emits."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from rotator.outcome import FailureKind, Reason, State

README = Path(__file__).resolve().parents[2] / "README.md"


def documented(field: str) -> set[str]:
    """The backticked words of the README paragraph that explains `field`, other than the
    field's own name (and `healthy`, which the state paragraph defines too)."""
    text = README.read_text()
    start = text.index(f"`{field}` ")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph)) - {field, "healthy"}


@pytest.mark.parametrize(
    ("field", "enum"),
    [("state", State), ("error_kind", FailureKind), ("reason", Reason)],
)
def test_the_readme_lists_exactly_the_enums_values(field: str, enum: type[StrEnum]) -> None:
    assert documented(field) == {member.value for member in enum}
