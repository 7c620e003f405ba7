"""rotator.mtm.parse_expiry: an `apiTokenData.expiry` as MTM may send it. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.mtm import parse_expiry
from rotator.tokens import TIME_WINDOW

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WHEN = datetime(2027, 12, 1, 10, 0, 0, tzinfo=UTC)
WHEN_MS = 1_827_655_200_000  # WHEN in epoch milliseconds
FIRST_MS = 0
LAST_MS = (TIME_WINDOW[1] - EPOCH) // timedelta(milliseconds=1) - 1


def test_the_epoch_constant_is_right() -> None:
    assert EPOCH + timedelta(milliseconds=WHEN_MS) == WHEN


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-12-01T10:00:00Z", WHEN),
        ("2027-12-01T10:00:00.250Z", WHEN.replace(microsecond=250_000)),
        ("2027-12-01T10:00:00.123456Z", WHEN.replace(microsecond=123_456)),
        ("2027-12-01T12:00:00+02:00", WHEN),
        ("2027-12-01T10:00:00+00:00", WHEN),
        (" 2027-12-01T10:00:00Z\n", WHEN),
        (WHEN_MS, WHEN),
        (WHEN_MS + 250, WHEN.replace(microsecond=250_000)),
        (str(WHEN_MS), WHEN),
        (f" {WHEN_MS} ", WHEN),
        (float(WHEN_MS), WHEN),
        (0, EPOCH),
        ("0", EPOCH),
    ],
    ids=["iso-z", "iso-millis", "iso-micros", "iso-offset", "iso-utc-offset", "iso-blanks",
         "epoch-ms", "epoch-ms-fraction", "epoch-ms-string", "epoch-ms-string-blanks",
         "epoch-ms-float", "epoch", "epoch-string"],
)  # fmt: skip
def test_reads_iso_8601_and_epoch_milliseconds(value: Any, expected: datetime) -> None:
    parsed = parse_expiry(value)

    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        "   ",
        "soon",
        "2027-12-01",  # a date has no time zone
        "2027-12-01T10:00:00",  # no time zone
        "2027-13-01T10:00:00Z",
        [],
        {},
        [WHEN_MS],
        {"epochMillis": WHEN_MS},
        "-5",
        -1,  # before 1970
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9000-01-01T00:00:00Z",  # past the window
        "9999-12-31T23:59:59Z",
        LAST_MS + 1,
        10**20,
        10**400,
        "9" * 30,
        "1" * 5000,  # past int()'s digit limit
        float("nan"),
        float("inf"),
        -float("inf"),
        1e300,
        "²",  # isdigit(), and int() refuses it
        "\u0661\u0662\u0663",  # Arabic-Indic digits: int() takes them, MTM never sends them
        "\uff11\uff12\uff13",  # fullwidth digits
        "0x10",
        "1_000",
        "+1000",
        "1e12",
    ],
)
def test_anything_else_is_none(value: Any) -> None:
    assert parse_expiry(value) is None


def test_the_window_bounds_are_inclusive_below_and_exclusive_above() -> None:
    assert parse_expiry(FIRST_MS) == TIME_WINDOW[0]
    assert parse_expiry(LAST_MS) == TIME_WINDOW[1] - timedelta(milliseconds=1)
    assert parse_expiry(LAST_MS + 1) is None


@given(st.integers(min_value=FIRST_MS, max_value=LAST_MS))
def test_every_epoch_millisecond_in_the_window_is_read_exactly(millis: int) -> None:
    expected = EPOCH + timedelta(milliseconds=millis)

    assert parse_expiry(millis) == expected
    assert parse_expiry(str(millis)) == expected


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(8999, 12, 30), timezones=st.just(UTC)
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_iso_time_in_the_window_is_read_in_utc(when: datetime, offset: int) -> None:
    zone = timezone(timedelta(minutes=offset))

    parsed = parse_expiry(when.astimezone(zone).isoformat())

    assert parsed == when
    assert parsed is not None
    assert parsed.tzinfo is UTC


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


DIGITISH = "0123456789 \t\u00b2\u00b3\u00b9\u0661\u0662\uff10\uff11"  # ASCII, superscript, others


@given(JSON_VALUES | st.text(alphabet=DIGITISH, min_size=1))
def test_never_raises_and_answers_none_or_an_aware_time_in_the_window(value: Any) -> None:
    parsed = parse_expiry(value)

    assert parsed is None or (parsed.tzinfo is UTC and TIME_WINDOW[0] <= parsed < TIME_WINDOW[1])
