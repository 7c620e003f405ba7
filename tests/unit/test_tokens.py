"""Access tokens: rotator.tokens, parsing the IdP's answer and the output secret. Pure."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import InvalidResponse
from rotator.tokens import (
    AccessToken,
    Principal,
    decode_jwt_claims,
    format_time,
    issuance_log_add,
    issuance_log_times,
    parse_output,
    parse_time,
    parse_token_response,
    principal_of,
)

ISSUED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
ISSUED_TS = int(ISSUED.timestamp())

LEANIX_CLAIMS = {
    "sub": "technical-user",
    "exp": ISSUED_TS + 3600,
    "instanceUrl": "https://acme.leanix.net",
    "principal": {
        "role": "ADMIN",
        "permission": {"workspaceId": "ws-123", "workspaceName": "acme-prod"},
    },
}


def b64url(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: Any = None, header: Any = None) -> str:
    """An unsigned but well-formed compact JWS: header.claims.signature."""
    header = {"alg": "RS256", "typ": "JWT"} if header is None else header
    claims = LEANIX_CLAIMS if claims is None else claims
    return f"{b64url(header)}.{b64url(claims)}.c2lnbmF0dXJl"


ACCESS_TOKEN = jwt()
NOT_UTF8 = base64.urlsafe_b64encode(b"\xff\xfe").decode()


def answer(**overrides: Any) -> bytes:
    """A LeanIX-shaped 200 body; a value of `...` removes the field."""
    document: dict[str, Any] = {
        "scope": "",
        "expired": False,
        "access_token": ACCESS_TOKEN,
        "token_type": "bearer",
        "expires_in": 3599,
    }
    document.update(overrides)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def parse(body: bytes, *, require_jwt: bool = True) -> AccessToken:
    return parse_token_response(body, issued_at=ISSUED, source_version=7, require_jwt=require_jwt)


def invalid(body: bytes, *, require_jwt: bool = True, secret: str = ACCESS_TOKEN) -> str:
    with pytest.raises(InvalidResponse) as excinfo:
        parse(body, require_jwt=require_jwt)
    message = str(excinfo.value)
    assert secret not in message
    assert secret not in repr(excinfo.value)
    return message


# --- parse_token_response: a good answer ---


def test_leanix_answer_becomes_an_access_token() -> None:
    token = parse(answer())
    assert token.access_token == ACCESS_TOKEN
    assert token.token_type == "bearer"
    assert token.expires_in == 3599
    assert token.issued_at == ISSUED
    assert token.source_version == 7


def test_expires_at_is_issued_plus_expires_in_when_the_jwt_lasts_longer() -> None:
    token = parse(answer(expires_in=1800))
    assert token.expires_at == ISSUED + timedelta(seconds=1800)


def test_expires_at_is_the_jwt_exp_when_earlier() -> None:
    token = parse(answer(access_token=jwt({**LEANIX_CLAIMS, "exp": ISSUED_TS + 600})))
    assert token.expires_at == ISSUED + timedelta(seconds=600)


def test_principal_is_decoded_from_the_jwt() -> None:
    assert parse(answer()).principal == Principal(
        workspace_id="ws-123", workspace_name="acme-prod", role="ADMIN"
    )


def test_token_type_defaults_to_bearer() -> None:
    assert parse(answer(token_type=...)).token_type == "bearer"


def test_integral_float_expires_in_is_accepted() -> None:
    assert parse(answer(expires_in=3599.0)).expires_in == 3599


def test_absurd_expires_in_is_capped_at_a_year_and_a_day() -> None:
    no_exp = jwt({"sub": "x"})
    token = parse(answer(access_token=no_exp, expires_in=10**12), require_jwt=False)
    assert token.expires_in == 366 * 86400


def test_opaque_token_is_accepted_when_a_jwt_is_not_required() -> None:
    token = parse(answer(access_token="opaque-token-123"), require_jwt=False)
    assert token.access_token == "opaque-token-123"
    assert token.expires_at == ISSUED + timedelta(seconds=3599)
    assert token.principal == Principal()


def test_jwt_without_exp_is_accepted_when_a_jwt_is_not_required() -> None:
    token = parse(answer(access_token=jwt({"sub": "x"})), require_jwt=False)
    assert token.expires_at == ISSUED + timedelta(seconds=3599)


def test_repr_of_an_access_token_hides_the_secret() -> None:
    token = parse(answer())
    assert ACCESS_TOKEN not in repr(token)
    assert ACCESS_TOKEN not in str(token)
    assert "access_token=" not in repr(token)


# --- parse_token_response: failures, never quoting the token ---


def test_expired_true_is_invalid() -> None:
    assert "expired" in invalid(answer(expired=True))


@pytest.mark.parametrize("value", [..., None, "", "   ", 42, ["a.b.c"], {"t": "a.b.c"}])
def test_missing_or_empty_access_token_is_invalid(value: Any) -> None:
    assert "no access_token" in invalid(answer(access_token=value))


@pytest.mark.parametrize(
    "body", [b"", b"<html>502 Bad Gateway</html>", b"\xff\xfe\x00garbage", b"{", b"[" * 100_000]
)
def test_body_that_is_not_json_is_invalid(body: bytes) -> None:
    assert "not JSON" in invalid(body)


@pytest.mark.parametrize("body", [b"[]", b'["access_token"]', b'"token"', b"null", b"3599"])
def test_json_that_is_not_an_object_is_invalid(body: bytes) -> None:
    assert "not an object" in invalid(body)


@pytest.mark.parametrize("value", [0, -1, "3599", True, False, 1.5, None, ..., [3599], 1e400])
def test_expires_in_that_is_not_a_positive_integer_is_invalid(value: Any) -> None:
    assert "expires_in" in invalid(answer(expires_in=value))


@pytest.mark.parametrize(
    "token",
    [f"{ACCESS_TOKEN} ", f" {ACCESS_TOKEN}", f"{ACCESS_TOKEN}\n", "abc def", "abc\tdef"],
    ids=["trailing-space", "leading-space", "newline", "inner-space", "tab"],
)
def test_access_token_with_whitespace_is_invalid(token: str) -> None:
    invalid(answer(access_token=token), secret=token.strip())


@pytest.mark.parametrize(
    "token",
    ["abc\x00def", "abc\x1bdef", "abc\x7fdef", "abc\u00e9def"],
    ids=["nul", "escape", "del", "non-ascii"],
)
def test_access_token_with_unprintable_characters_is_invalid(token: str) -> None:
    invalid(answer(access_token=token), require_jwt=False, secret=token)


def test_jwt_with_a_control_character_in_its_signature_is_invalid() -> None:
    # Only header and claims are decoded, so the signature part must be checked on its own.
    token = f"{ACCESS_TOKEN}\x00"
    invalid(answer(access_token=token), secret=token)


def test_oversized_access_token_is_invalid() -> None:
    huge = "a" * 20_000
    invalid(answer(access_token=huge), require_jwt=False, secret=huge)


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token-123",
        "a.b",
        "a.b.c.d",
        f".{b64url(LEANIX_CLAIMS)}.sig",
        f"{b64url({'typ': 'JWT'})}.{b64url(LEANIX_CLAIMS)}.sig",
        f"{b64url({'alg': 'RS256'})}.{b64url([1, 2])}.sig",
        f"{b64url({'alg': 'RS256'})}.not-base64-json.sig",
    ],
    ids=["opaque", "two-parts", "four-parts", "empty-header", "no-alg", "array-claims", "junk"],
)
def test_non_jwt_is_invalid_when_a_jwt_is_required(token: str) -> None:
    assert "not a JWT" in invalid(answer(access_token=token), secret=token)


def test_jwt_whose_exp_has_passed_is_invalid() -> None:
    stale = jwt({**LEANIX_CLAIMS, "exp": ISSUED_TS - 1})
    assert "already past" in invalid(answer(access_token=stale), secret=stale)


def test_jwt_whose_exp_is_the_issue_time_is_invalid() -> None:
    stale = jwt({**LEANIX_CLAIMS, "exp": ISSUED_TS})
    invalid(answer(access_token=stale), secret=stale)


def test_jwt_whose_exp_has_passed_is_invalid_even_when_not_required() -> None:
    stale = jwt({**LEANIX_CLAIMS, "exp": ISSUED_TS - 1})
    invalid(answer(access_token=stale), require_jwt=False, secret=stale)


@pytest.mark.parametrize("exp", [..., None, "1893456000", True, [1], float("nan")])
def test_jwt_without_a_numeric_exp_is_invalid_when_required(exp: Any) -> None:
    claims = {k: v for k, v in LEANIX_CLAIMS.items() if k != "exp"}
    if exp is not ...:
        claims["exp"] = exp
    token = jwt(claims)
    assert "no numeric 'exp'" in invalid(answer(access_token=token), secret=token)


@pytest.mark.parametrize(
    "token_type", ["", "bear er", "bearer\n", 1, None, ["bearer"], "x" * 33, "b\u00e9arer"]
)
def test_odd_token_type_is_invalid(token_type: Any) -> None:
    assert "token_type" in invalid(answer(token_type=token_type))


# --- decode_jwt_claims / principal_of ---


def test_decode_jwt_claims_returns_the_payload() -> None:
    assert decode_jwt_claims(jwt({"sub": "x", "n": 1})) == {"sub": "x", "n": 1}


def test_decode_jwt_claims_accepts_an_empty_signature() -> None:
    assert decode_jwt_claims(f"{b64url({'alg': 'none'})}.{b64url({'a': 1})}.") == {"a": 1}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        f"{b64url({'alg': 'RS256'})}..sig",
        f"{b64url({'alg': 7})}.{b64url({})}.sig",
        f"{b64url(['alg'])}.{b64url({})}.sig",
        f"{b64url({'alg': 'RS256'})}.{b64url('claims')}.sig",
        f"{b64url({'alg': 'RS256'})}.%%%.sig",
        f"{b64url({'alg': 'RS256'})}.{NOT_UTF8}.sig",
        f"{b64url({'alg': 'RS256'})}.\u00e9\u00e9.sig",
    ],
)
def test_decode_jwt_claims_raises_value_error_for_a_non_jwt(token: str) -> None:
    with pytest.raises(ValueError):
        decode_jwt_claims(token)


def test_principal_of_claims_without_principal_is_empty() -> None:
    assert principal_of({"sub": "x"}) == Principal()


def test_principal_of_a_principal_that_is_not_an_object_is_empty() -> None:
    assert principal_of({"principal": "admin"}) == Principal()


def test_principal_of_without_permission_keeps_the_role() -> None:
    assert principal_of({"principal": {"role": "MEMBER"}}) == Principal(role="MEMBER")


def test_principal_of_ignores_non_string_values() -> None:
    claims = {"principal": {"role": 1, "permission": {"workspaceId": 5, "workspaceName": "ws"}}}
    assert principal_of(claims) == Principal(workspace_name="ws")


def test_principal_of_a_permission_that_is_not_an_object_keeps_the_role() -> None:
    claims = {"principal": {"role": "ADMIN", "permission": ["ws-1"]}}
    assert principal_of(claims) == Principal(role="ADMIN")


# --- the output secret ---


def stored_token() -> AccessToken:
    return parse(answer())


def test_fields_are_exactly_the_output_fields_of_the_spec() -> None:
    assert set(stored_token().fields()) == {
        "access_token",
        "token_type",
        "expires_in",
        "issued_at",
        "expires_at",
        "source_version",
    }


def test_fields_carry_rfc3339_utc_times_with_z() -> None:
    fields = stored_token().fields()
    assert fields["issued_at"] == "2026-05-01T12:00:00Z"
    assert fields["expires_at"] == "2026-05-01T12:59:59Z"


def test_fields_carry_the_token_as_received_and_integers() -> None:
    fields = stored_token().fields()
    assert fields["access_token"] == ACCESS_TOKEN
    assert (fields["token_type"], fields["expires_in"], fields["source_version"]) == (
        "bearer",
        3599,
        7,
    )


def test_fields_survive_a_json_round_trip() -> None:
    fields = stored_token().fields()
    assert json.loads(json.dumps(fields)) == fields


def test_parse_output_reads_back_what_fields_wrote() -> None:
    token = stored_token()
    assert parse_output(token.fields()) == token


def test_parse_output_accepts_an_opaque_token() -> None:
    token = parse(answer(access_token="opaque-1"), require_jwt=False)
    assert parse_output(token.fields()) == token


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"access_token": ""}, "access_token"),
        ({"access_token": None}, "access_token"),
        ({"issued_at": None}, "issued_at"),
        ({"expires_at": 5}, "expires_at"),
        ({"expires_in": "3599"}, "expires_in"),
        ({"source_version": "7"}, "source_version"),
    ],
)
def test_parse_output_names_the_field_that_is_off(change: dict[str, Any], field: str) -> None:
    data = {**stored_token().fields(), **change}
    with pytest.raises(ValueError, match=field):
        parse_output(data)


@pytest.mark.parametrize("value", ["yesterday", "2026-05-01T12:00:00"])
def test_parse_output_refuses_a_bad_time(value: str) -> None:
    with pytest.raises(ValueError):
        parse_output({**stored_token().fields(), "expires_at": value})


def test_parse_output_error_does_not_quote_the_token() -> None:
    data = {**stored_token().fields(), "expires_in": None}
    with pytest.raises(ValueError) as excinfo:
        parse_output(data)
    assert ACCESS_TOKEN not in str(excinfo.value)


# --- format_time / parse_time ---


def test_format_time_is_utc_with_z_to_the_second() -> None:
    moment = datetime(2026, 5, 1, 14, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-05-01T12:00:00Z"


def test_parse_time_reads_z() -> None:
    assert parse_time("2026-05-01T12:00:00Z") == ISSUED


def test_parse_time_converts_offsets_to_utc() -> None:
    parsed = parse_time("2026-05-01T14:00:00+02:00")
    assert parsed == ISSUED
    assert parsed.tzinfo is UTC


def test_parse_time_refuses_a_time_without_zone() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2026-05-01T12:00:00")


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(8999, 12, 31)))
def test_parse_time_inverts_format_time_to_the_second(moment: datetime) -> None:
    aware = moment.replace(tzinfo=UTC)
    assert parse_time(format_time(aware)) == aware.replace(microsecond=0)


# --- properties: only ever InvalidResponse ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
token_like = st.sampled_from([ACCESS_TOKEN, jwt({"exp": 0}), jwt({"exp": 1e300}), "a.b.c", ""])
response_objects = st.fixed_dictionaries(
    {},
    optional={
        "access_token": token_like | json_values,
        "expires_in": st.integers(-5, 10**6) | json_values,
        "token_type": st.sampled_from(["bearer", "Bearer", ""]) | json_values,
        "expired": st.booleans() | json_values,
    },
)


@given(body=st.binary(max_size=200), require_jwt=st.booleans())
def test_arbitrary_bytes_only_ever_raise_invalid_response(body: bytes, require_jwt: bool) -> None:
    with contextlib.suppress(InvalidResponse):
        parse(body, require_jwt=require_jwt)


@given(document=json_values | response_objects, require_jwt=st.booleans())
def test_arbitrary_json_only_ever_raises_invalid_response(document: Any, require_jwt: bool) -> None:
    body = json.dumps(document).encode()
    try:
        token = parse(body, require_jwt=require_jwt)
    except InvalidResponse:
        return
    assert token.access_token
    assert token.expires_at > token.issued_at


# --- the issuance log ---------------------------------------------------------------------------

LOG_START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _log_of(moments: list[datetime]) -> str | None:
    log = None
    for moment in moments:
        log = issuance_log_add(log, moment)
    return log


@given(st.lists(st.integers(0, 3599), min_size=1, max_size=300))
def test_the_issuance_log_keeps_every_issuance_of_the_hour_a_little_late(
    offsets: list[int],
) -> None:
    moments = [LOG_START + timedelta(seconds=offset) for offset in sorted(offsets)]

    times = issuance_log_times(_log_of(moments), moments[-1])

    # Every issuance is there, never early (the cap errs strict) and under two minutes late
    # (the end of its minute, plus the clock skew allowed between rotators).
    assert times is not None and len(times) == len(moments)
    for logged, actual in zip(times, moments, strict=True):
        assert actual < logged <= actual + timedelta(seconds=60 + 60)


def test_the_issuance_log_forgets_what_is_over_an_hour_old() -> None:
    log = _log_of([LOG_START, LOG_START + timedelta(minutes=30), LOG_START + timedelta(minutes=62)])

    times = issuance_log_times(log, LOG_START + timedelta(minutes=62))

    assert times == (LOG_START + timedelta(minutes=32), LOG_START + timedelta(minutes=64))


def test_the_issuance_log_fits_vaults_value_limit_at_any_rate() -> None:
    # One issuance a second for an hour: far beyond any sane cap.
    log = _log_of([LOG_START + timedelta(seconds=second) for second in range(3600)])

    assert log is not None and len(log) <= 512
    assert len(issuance_log_times(log, LOG_START + timedelta(seconds=3599)) or ()) == 3600


@pytest.mark.parametrize(
    "log",
    ["", "garbage", "29932560", "29932560 0:x", "29932560 64:1", "29932560 0:0", "-5 0:1", "1 2 3"],
)
def test_an_unreadable_issuance_log_is_none(log: str) -> None:
    assert issuance_log_times(log, LOG_START) is None


# --- times from outside stay within a window no arithmetic can overflow -------------------------

TIME_WINDOW = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC))

EXTREME_TIMES = [
    "0001-01-01T00:00:00+14:00",  # before datetime.min once converted to UTC
    "9999-12-31T23:59:59-14:00",  # after datetime.max once converted to UTC
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z",
    "9000-01-01T00:00:00Z",
]


@pytest.mark.parametrize("text", EXTREME_TIMES)
def test_parse_time_refuses_an_instant_outside_the_sane_window(text: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        parse_time(text)


def test_parse_time_accepts_both_ends_of_the_window() -> None:
    assert parse_time("1970-01-01T00:00:00Z") == TIME_WINDOW[0]
    assert parse_time("8999-12-31T23:59:59Z") < TIME_WINDOW[1]


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
@pytest.mark.parametrize("text", EXTREME_TIMES[:2])
def test_parse_output_refuses_an_out_of_range_time_as_bad_input(field: str, text: str) -> None:
    data = {**parse(answer()).fields(), field: text}

    with pytest.raises(ValueError):  # not OverflowError: callers treat ValueError as bad data
        parse_output(data)


offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@given(moment=st.datetimes(), offset=offsets)
def test_a_parsed_time_survives_any_arithmetic_rotator_does(
    moment: datetime, offset: timezone
) -> None:
    text = moment.replace(tzinfo=offset).isoformat()
    try:
        parsed = parse_time(text)
    except ValueError:
        return
    assert TIME_WINDOW[0] <= parsed < TIME_WINDOW[1]
    # A year and more either way (lifetimes, backoffs, warning steps), and formatting.
    for shift in (timedelta(days=800), -timedelta(days=800)):
        format_time(parsed + shift)
    assert parsed.tzinfo is UTC


# --- the issuance log under clock skew and forgery -----------------------------------------------

SKEW = 60  # seconds any two rotators' clocks may disagree by


def test_a_forged_future_entry_caps_nothing() -> None:
    # Minute 143165575 is in the year 2242: it must not keep the token capped until then.
    now = LOG_START

    assert issuance_log_times("143165575 0:6", now) is None


def test_a_forged_future_entry_is_not_copied_forward() -> None:
    log = issuance_log_add("143165575 0:6", LOG_START)

    assert issuance_log_times(log, LOG_START) == (LOG_START + timedelta(seconds=60 + SKEW),)


def test_a_log_with_nothing_in_the_last_hour_counts_another_way() -> None:
    # "1 0:1" is an issuance in 1970: as good as no log, so the caller counts the versions.
    assert issuance_log_times("1 0:1", LOG_START) is None


def test_entries_within_a_minutes_skew_ahead_are_kept() -> None:
    ahead = issuance_log_add(None, LOG_START + timedelta(seconds=SKEW))  # a clock a minute fast

    log = issuance_log_add(ahead, LOG_START)

    assert len(issuance_log_times(log, LOG_START) or ()) == 2


def test_a_writer_whose_clock_runs_ahead_makes_no_later_issuance_vanish() -> None:
    """One issuance logged by an instance whose clock is two hours ahead, then twenty real ones:
    all twenty are counted (anchored on the newest entry, each of them used to be dropped at
    once for being two hours older than it), and the one from the future is gone."""
    log = issuance_log_add(None, LOG_START + timedelta(hours=2))  # a clock far ahead
    for minute in range(20):
        log = issuance_log_add(log, LOG_START + timedelta(minutes=minute))

    times = issuance_log_times(log, LOG_START + timedelta(minutes=20))

    assert times is not None and len(times) == 20
    assert max(times) < LOG_START + timedelta(minutes=22)


def test_an_absurd_count_in_one_minute_is_unreadable() -> None:
    assert issuance_log_times(f"{int(LOG_START.timestamp()) // 60} 0:100000", LOG_START) is None


# Each clock within half a minute of true time: any two disagree by up to a minute.
clock_offsets = st.sampled_from([-SKEW // 2, SKEW // 2]) | st.integers(-SKEW // 2, SKEW // 2)


@settings(max_examples=300)
@given(
    skews=st.lists(clock_offsets, min_size=1, max_size=3),
    events=st.lists(
        st.tuples(st.integers(0, 3 * 3600), st.integers(0, 2)), min_size=1, max_size=90
    ),
    reader=clock_offsets,
    pivot=st.integers(0, 10**6),
    edge=st.integers(1, 180),
)
def test_the_log_never_loses_a_real_issuance_of_the_last_hour_whatever_the_skew(
    skews: list[int], events: list[tuple[int, int]], reader: int, pivot: int, edge: int
) -> None:
    """Writers whose clocks disagree by up to a minute take turns (claims serialise them); a
    reader, another such clock, reading just before some issuance leaves the hour, counts every
    issuance of the real last hour, never more than really happened, and the log stays under
    Vault's 512-byte limit."""
    events.sort()
    now = LOG_START + timedelta(seconds=events[pivot % len(events)][0] + 3600 - edge)
    log = None
    real: list[datetime] = []
    for offset, who in events:
        moment = LOG_START + timedelta(seconds=offset)
        if moment > now:
            break
        real.append(moment)
        log = issuance_log_add(log, moment + timedelta(seconds=skews[who % len(skews)]))
        assert len(log) <= 512
    reader_now = now + timedelta(seconds=reader)

    times = issuance_log_times(log, reader_now) or ()

    counted = sum(1 for moment in times if moment > reader_now - timedelta(hours=1))
    assert counted >= sum(1 for moment in real if moment > now - timedelta(hours=1))
    assert len(times) <= len(real)
