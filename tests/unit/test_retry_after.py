"""`parse_retry_after`: the seconds a 429 asks to wait, from delta-seconds or an HTTP date."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotator.exchange import parse_retry_after

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0", 0.0), (" 120 ", 120.0)])
def test_delta_seconds_are_taken_as_given(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_an_http_date_in_the_future_is_the_seconds_until_then() -> None:
    assert parse_retry_after("Sun, 29 Nov 2026 12:01:30 GMT", NOW) == 90.0


def test_an_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0.0


def test_an_http_date_without_a_zone_is_read_as_utc() -> None:
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:10 -0000", NOW) == 10.0


def test_the_obsolete_asctime_date_format_is_understood() -> None:
    assert parse_retry_after("Sun Nov 29 12:00:05 2026", NOW) == 5.0


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_absent_header_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize(
    "value",
    ["soon", "-5", "1.5", "7 seconds", "Sun, 99 Nov 2026 12:00:00 GMT", "²", "\u0667"],
    ids=["word", "negative", "fraction", "with-unit", "bad-date", "superscript", "arabic-digit"],
)
def test_an_unreadable_value_is_none(value: str) -> None:
    # Non-ASCII digits arrive when a server sends latin-1 bytes; float('²') would raise.
    assert parse_retry_after(value, NOW) is None
