"""rotator.audit over hand-written audit-log lines: what counts as a consumer's read, whose reads
are rotator's own, what is unparsable, the verdict at the window's edge, and the rendering."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.audit import (
    MAX_FIELD_CHARS,
    AuditReport,
    LogTally,
    Unparsable,
    Usage,
    audit,
    judge,
    read_lines,
    render,
)
from rotator.redact import SECRETS
from rotator.vault import TokenIdentity

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
MOUNT, PREFIX = "secret", "leanix/access-tokens"
ROTATOR = TokenIdentity("approle", "rotator-entity", ("rotator",))
ROOT_ROTATOR = TokenIdentity("token", "", ("root",))
README = Path(__file__).resolve().parents[2] / "README.md"
CLIENT_TOKEN = "hmac-sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def at(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def entry(
    name: str = "acme/prod",
    *,
    path: str | None = None,
    operation: str = "read",
    kind: str = "response",
    when: datetime | str = NOW - timedelta(hours=1),
    reader: str = "consumer-a",
    entity: str | None = "entity-a",
    policies: tuple[str, ...] = ("default", "consumer-a"),
    address: str = "10.0.0.5",
    error: str | None = None,
) -> dict[str, Any]:
    """An audit entry shaped like OpenBao's file device writes them (fields it omits when
    empty, such as `entity_id`, are omitted here too)."""
    auth: dict[str, Any] = {
        "client_token": CLIENT_TOKEN,
        "accessor": "hmac-sha256:" + "ab" * 32,
        "display_name": reader,
        "policies": list(policies),
        "token_policies": list(policies),
        "token_type": "service",
    }
    if entity is not None:
        auth["entity_id"] = entity
    document: dict[str, Any] = {
        "time": when if isinstance(when, str) else when.isoformat().replace("+00:00", "Z"),
        "type": kind,
        "auth": auth,
        "request": {
            "id": "77438475-6277-41fb-b3b6-1f6e5e904d25",
            "operation": operation,
            "mount_point": "secret/",
            "client_token": CLIENT_TOKEN,
            "namespace": {"id": "root"},
            "path": path if path is not None else f"{MOUNT}/data/{PREFIX}/{name}",
            "remote_address": address,
            "remote_port": 45294,
        },
    }
    if error is not None:
        document["error"] = error
    return document


def line(document: object) -> bytes:
    return json.dumps(document).encode() + b"\n"


def run(
    *documents: object,
    raw: tuple[bytes, ...] = (),
    sources: tuple[str, ...] = ("acme/prod",),
    own: TokenIdentity = ROTATOR,
    days: int = 30,
    first: datetime | None = NOW - timedelta(days=40),
    last: datetime | None = NOW - timedelta(minutes=1),
) -> AuditReport:
    """The report over `documents` (and `raw` lines) between an unrelated entry at `first` and
    one at `last`, so that the log covers the whole window unless a test says otherwise."""
    opening = [line(entry(path="sys/mounts", kind="request", when=first))] if first else []
    closing = [line(entry(path="sys/mounts", kind="request", when=last))] if last else []
    lines = [*opening, *(line(d) for d in documents), *raw, *closing]
    return audit(
        lines,
        mount=MOUNT,
        output_prefix=PREFIX,
        own=own,
        sources=sources,
        now=NOW,
        unused_days=days,
    )


def output(report: AuditReport, name: str = "acme/prod") -> Any:
    (found,) = [o for o in report.outputs if o.name == name]
    return found


# --- what counts as a read ------------------------------------------------------------------------


def test_a_data_read_counts_under_its_reader_with_first_and_last() -> None:
    report = run(entry(when=at(days=3)), entry(when=at(hours=2)), entry(when=at(days=1)))

    prod = output(report)
    assert prod.state is Usage.USED
    assert prod.reads == 3 and prod.reader_count == 1 and prod.denied == 0
    (reader,) = prod.readers
    assert reader.reader == ("consumer-a", "entity-a", "10.0.0.5")
    assert (reader.first_read, reader.last_read) == (at(days=3), at(hours=2))
    assert prod.last_read == at(hours=2)


def test_readers_are_told_apart_by_display_name_entity_and_address() -> None:
    report = run(
        entry(),
        entry(),
        entry(address="10.0.0.6"),
        entry(entity="entity-b"),
        entry(reader="consumer-b", entity=None),
    )

    readers = {(r.reader, r.reads) for r in output(report).readers}
    assert readers == {
        (("consumer-a", "entity-a", "10.0.0.5"), 2),
        (("consumer-a", "entity-a", "10.0.0.6"), 1),
        (("consumer-a", "entity-b", "10.0.0.5"), 1),
        (("consumer-b", "", "10.0.0.5"), 1),
    }
    assert output(report).readers[0].reads == 2  # most reads first


@pytest.mark.parametrize(
    "document",
    [
        entry(path=f"{MOUNT}/metadata/{PREFIX}/acme/prod"),
        entry(kind="request"),
        entry(operation="list", path=f"{MOUNT}/metadata/{PREFIX}/"),
        entry(path=f"other/data/{PREFIX}/acme/prod"),
        entry(path=f"{MOUNT}/data/leanix/api-tokens/acme/prod"),
        entry(path=f"{MOUNT}/data/{PREFIX}-old/acme/prod"),
        entry(path=f"{MOUNT}/data/rotator-claims/{PREFIX}/acme/prod"),
        entry(path=f"{MOUNT}/data/{PREFIX}"),
        entry(path=f"{MOUNT}/data/{PREFIX}/acme/"),
        entry(path=f"sys/internal/ui/mounts/{MOUNT}/{PREFIX}/acme/prod"),
    ],
    ids=[
        "metadata",
        "request-half",
        "list",
        "other-mount",
        "source-prefix",
        "sibling-prefix",
        "claims",
        "prefix-itself",
        "folder",
        "ui-mounts",
    ],
)
def test_only_a_response_to_a_read_of_an_output_data_path_is_a_read(
    document: dict[str, Any],
) -> None:
    report = run(document)

    assert [o.name for o in report.outputs] == ["acme/prod"]
    assert output(report).reads == 0 and output(report).denied == 0
    assert output(report).state is Usage.UNUSED


def test_writes_are_not_reads_but_show_the_output_exists() -> None:
    report = run(
        entry("gone/old", operation="create", reader="approle", entity="rotator-entity"),
        entry("acme/prod", operation="update", reader="approle", entity="rotator-entity"),
        entry("refused/write", operation="create", error="permission denied"),
    )

    assert [(o.name, o.state, o.reads) for o in report.outputs] == [
        ("acme/prod", Usage.UNUSED, 0),
        ("gone/old", Usage.NO_SOURCE, 0),
    ]


def test_names_may_contain_slashes() -> None:
    report = run(entry("acme/eu/prod/reporting"), sources=("acme/eu/prod/reporting",))

    assert output(report, "acme/eu/prod/reporting").reads == 1


def test_an_output_read_whose_source_is_gone_shows_as_no_source() -> None:
    report = run(entry("legacy/old"), sources=("acme/prod",))

    legacy = output(report, "legacy/old")
    assert (legacy.state, legacy.has_source, legacy.reads) == (Usage.NO_SOURCE, False, 1)
    assert report.unused == ("acme/prod",)


def test_a_refused_read_counts_as_denied_and_does_not_make_the_output_used() -> None:
    report = run(
        entry(error="1 error occurred:\n\t* permission denied\n\n"),
        entry(error="permission denied", reader="", entity=None, policies=()),
    )

    prod = output(report)
    assert (prod.state, prod.reads, prod.denied, prod.reader_count) == (Usage.UNUSED, 0, 2, 0)
    assert {(r.reader, r.denied, r.last_read) for r in prod.readers} == {
        (("consumer-a", "entity-a", "10.0.0.5"), 1, None),
        (("", "", "10.0.0.5"), 1, None),
    }


# --- rotator's own reads --------------------------------------------------------------------------


def test_rotators_reads_are_recognised_by_its_entity_and_left_out() -> None:
    report = run(
        entry(reader="approle", entity="rotator-entity", policies=("rotator",)),
        entry(reader="approle", entity="rotator-entity", policies=("rotator", "extra")),
        entry(reader="approle", entity="another-approle", policies=("rotator",)),
    )

    prod = output(report)
    assert prod.rotator_reads == 2
    assert [(r.reader.entity_id, r.reads) for r in prod.readers] == [("another-approle", 1)]
    assert report.rotator_reads == 2


def test_a_rotator_without_entity_is_recognised_by_display_name_and_policies() -> None:
    report = run(
        entry(reader="token", entity=None, policies=("root",)),
        entry(reader="token", entity="", policies=("root",)),
        entry(reader="token", entity=None, policies=("default", "root")),
        entry(reader="token", entity=None, policies=("reader",)),
        entry(reader="token-other", entity=None, policies=("root",)),
        own=ROOT_ROTATOR,
    )

    prod = output(report)
    assert prod.rotator_reads == 2
    assert sorted((r.reader.display_name, r.reads) for r in prod.readers) == [
        ("token", 2),
        ("token-other", 1),
    ]


def test_policies_match_in_any_order() -> None:
    own = TokenIdentity("token-rotator", "", ("a-policy", "b-policy"))

    report = run(
        entry(reader="token-rotator", entity=None, policies=("b-policy", "a-policy")), own=own
    )

    assert output(report).rotator_reads == 1 and output(report).reads == 0


def test_an_output_only_rotator_reads_is_unused() -> None:
    report = run(entry(reader="approle", entity="rotator-entity"))

    assert output(report).state is Usage.UNUSED
    assert report.unused == ("acme/prod",)


# --- unparsable lines -----------------------------------------------------------------------------

GOOD = entry()

GARBAGE: list[tuple[bytes, Unparsable]] = [
    (b"not json at all\n", Unparsable.NOT_JSON),
    (b"\n", Unparsable.NOT_JSON),
    (b'{"time": "2026-11-29T09:00:00Z", "type": "resp', Unparsable.NOT_JSON),
    (b'{"type": "response", "display_name": "\xff\xfe"}\n', Unparsable.NOT_JSON),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", Unparsable.NOT_JSON),
    (b"9" * 5000 + b"\n", Unparsable.NOT_JSON),
    (b"[1, 2]\n", Unparsable.NOT_AN_OBJECT),
    (b'"a string"\n', Unparsable.NOT_AN_OBJECT),
    (b"null\n", Unparsable.NOT_AN_OBJECT),
    (b"42\n", Unparsable.NOT_AN_OBJECT),
    (line({k: v for k, v in GOOD.items() if k != "time"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "time": "yesterday"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "time": "2026-11-29T09:00:00"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "time": 1764403200}), Unparsable.BAD_FIELDS),
    (line({k: v for k, v in GOOD.items() if k != "type"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "type": ["response"]}), Unparsable.BAD_FIELDS),
    (line({k: v for k, v in GOOD.items() if k != "request"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "request": "secret/data/x"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "request": {**GOOD["request"], "path": 7}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "request": {**GOOD["request"], "operation": None}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "request": {**GOOD["request"], "remote_address": 1}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "auth": "consumer"}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "auth": {**GOOD["auth"], "display_name": 3}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "auth": {**GOOD["auth"], "entity_id": {}}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "auth": {**GOOD["auth"], "policies": "root"}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "auth": {**GOOD["auth"], "policies": ["a", 1]}}), Unparsable.BAD_FIELDS),
    (line({**GOOD, "error": {"permission": "denied"}}), Unparsable.BAD_FIELDS),
]


@pytest.mark.parametrize(
    ("garbage", "kind"), GARBAGE, ids=[f"{k}-{i}" for i, (_, k) in enumerate(GARBAGE)]
)
def test_every_kind_of_garbage_line_is_counted_and_skipped(
    garbage: bytes, kind: Unparsable
) -> None:
    report = run(entry(), raw=(garbage,))

    assert report.unparsable == {k: int(k is kind) for k in Unparsable}
    assert output(report).reads == 1
    assert report.lines == 4 and report.entries == 3


def test_a_line_over_the_limit_is_too_long() -> None:
    huge = b'{"time": "2026-11-29T09:00:00Z", "type": "x", "pad": "' + b"a" * (1 << 20) + b'"}\n'

    report = run(raw=(huge,))

    assert report.unparsable[Unparsable.TOO_LONG] == 1


def test_a_bad_entry_about_something_else_is_not_looked_into() -> None:
    """Only what a verdict needs is checked: an odd `auth` on a request for another path is
    just another entry."""
    report = run(entry(path="sys/mounts", reader=None, policies="x"))  # type: ignore[arg-type]

    assert sum(report.unparsable.values()) == 0 and report.entries == 3


def test_garbage_never_reaches_the_report() -> None:
    marker = "GARBAGE-LINE-CONTENT-7f3a"
    report = run(
        entry(),
        raw=(marker.encode() + b"\n", line([marker]), line({**GOOD, "time": marker})),
    )

    for as_json in (True, False):
        assert marker not in render(report, as_json=as_json)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise(lines: list[bytes]) -> None:
    tally = LogTally(MOUNT, PREFIX, ROTATOR)
    for raw in lines:
        tally.feed(raw)

    assert tally.lines == len(lines)
    assert tally.entries + sum(tally.unparsable.values()) == len(lines)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "time": st.sampled_from(["2026-11-29T09:00:00Z", "2026-11-29T09:00:00.123456789Z"])
            | _JSON,
            "type": st.sampled_from(["request", "response"]) | _JSON,
            "auth": st.fixed_dictionaries(
                {},
                optional={
                    "display_name": _JSON,
                    "entity_id": _JSON,
                    "policies": _JSON,
                },
            )
            | _JSON,
            "request": st.fixed_dictionaries(
                {},
                optional={
                    "path": st.sampled_from([f"{MOUNT}/data/{PREFIX}/acme/prod"]) | _JSON,
                    "operation": st.sampled_from(["read", "create"]) | _JSON,
                    "remote_address": _JSON,
                },
            )
            | _JSON,
            "error": _JSON,
        },
    )
)
def test_entries_of_any_shape_never_raise_and_are_counted_once(document: dict[str, Any]) -> None:
    tally = LogTally(MOUNT, PREFIX, ROTATOR)

    tally.feed(json.dumps(document).encode())
    report = judge(tally, ["acme/prod"], NOW, 30)

    assert tally.entries + sum(tally.unparsable.values()) == 1
    render(report, as_json=True)
    render(report, as_json=False)


# --- the window -----------------------------------------------------------------------------------


def test_a_read_exactly_n_days_ago_is_within_the_window() -> None:
    assert output(run(entry(when=at(days=30)))).state is Usage.USED


def test_a_read_just_before_the_window_leaves_the_output_unused() -> None:
    report = run(entry(when=at(days=30, seconds=1)))

    prod = output(report)
    assert (prod.state, prod.reads, prod.last_read) == (Usage.UNUSED, 1, at(days=30, seconds=1))
    assert prod.note is None


def test_the_window_is_n_days() -> None:
    report = run(entry(when=at(days=8)), days=7)

    assert output(report).state is Usage.UNUSED
    assert output(run(entry(when=at(days=8)), days=9)).state is Usage.USED


def test_a_log_shorter_than_the_window_flags_unused_verdicts() -> None:
    report = run(
        entry("acme/prod", when=at(days=1)),
        sources=("acme/prod", "acme/sandbox"),
        first=at(days=2),
    )

    assert report.short and report.covered_days == pytest.approx(2.0, abs=0.01)
    assert output(report, "acme/sandbox").note == "log covers 2.0 of 30 days"
    assert output(report, "acme/prod").note is None  # a read is a read, however short the log


def test_a_log_whose_last_entry_is_days_old_is_short_too() -> None:
    report = run(sources=("acme/prod",), last=at(days=3))

    assert report.short and report.covered_days == pytest.approx(27.0)
    assert output(report).note == "log covers 27.0 of 30 days"


def test_a_log_ending_hours_ago_still_covers_the_window() -> None:
    report = run(last=at(hours=12))

    assert not report.short and output(report).note is None


def test_an_empty_log_leaves_every_output_unused_and_uncertain() -> None:
    report = run(sources=("acme/prod", "acme/sandbox"), first=None, last=None)

    assert (report.first, report.last, report.short, report.covered_days) == (None, None, True, 0)
    assert report.unused == ("acme/prod", "acme/sandbox")
    assert output(report).note == "log covers 0.0 of 30 days"


# --- reading the stream ---------------------------------------------------------------------------


def test_read_lines_cuts_an_overlong_line_and_skips_the_rest_of_it() -> None:
    stream = io.BytesIO(b"short\n" + b"x" * 25 + b"\nafter\nno-newline-at-end")

    assert list(read_lines(stream, limit=10)) == [
        b"short\n",
        b"x" * 11,
        b"after\n",
        b"no-newline-at-end"[:11],
    ]


def test_read_lines_keeps_a_line_of_exactly_the_limit() -> None:
    stream = io.BytesIO(b"x" * 10 + b"\n" + b"y" * 10)

    assert list(read_lines(stream, limit=10)) == [b"x" * 10 + b"\n", b"y" * 10]


def test_a_cut_line_is_counted_as_too_long() -> None:
    tally = LogTally(MOUNT, PREFIX, ROTATOR)

    for raw in read_lines(io.BytesIO(b"{" + b" " * (2 << 20) + b"}\n" + line(entry()))):
        tally.feed(raw)

    assert tally.unparsable[Unparsable.TOO_LONG] == 1 and tally.entries == 1


def test_very_long_reader_names_are_cut() -> None:
    report = run(entry(reader="r" * 10_000))

    (reader,) = output(report).readers
    assert reader.reader.display_name == "r" * MAX_FIELD_CHARS + "..."


# --- rendering ------------------------------------------------------------------------------------


def _sample() -> AuditReport:
    return run(
        entry("a/prod", reader="cons-a", entity="e-a", when=at(days=2)),
        entry("a/prod", reader="cons-a", entity="e-a", when=at(hours=1)),
        entry("a/prod", reader="approle", entity="e-b", address="10.0.0.9", when=at(days=1)),
        entry("a/prod", reader="approle", entity="rotator-entity"),
        entry("a/test", reader="cons-a", entity="e-a", error="permission denied"),
        entry("gone", operation="create", reader="approle", entity="rotator-entity"),
        raw=(b"garbage\n",),
        sources=("a/prod", "a/test"),
        first=at(days=2),
    )


def test_json_is_the_documented_document() -> None:
    document = json.loads(render(_sample(), as_json=True))

    assert document == {
        "audited_at": "2026-11-29T10:00:00Z",
        "unused_days": 30,
        "unused": ["a/test"],
        "log": {
            "lines": 9,
            "entries": 8,
            "unparsable": 1,
            "unparsable_by_kind": {
                "not_json": 1,
                "not_an_object": 0,
                "bad_fields": 0,
                "too_long": 0,
            },
            "first": "2026-11-27T10:00:00Z",
            "last": "2026-11-29T09:59:00Z",
            "covers_days": 2.0,
            "short": True,
        },
        "rotator": {"display_name": "approle", "entity_id": "rotator-entity", "reads": 1},
        "outputs": [
            {
                "name": "a/prod",
                "state": "used",
                "source": True,
                "reads": 3,
                "last_read": "2026-11-29T09:00:00Z",
                "denied": 0,
                "rotator_reads": 1,
                "note": None,
                "readers": [
                    {
                        "display_name": "cons-a",
                        "entity_id": "e-a",
                        "remote_address": "10.0.0.5",
                        "reads": 2,
                        "denied": 0,
                        "first_read": "2026-11-27T10:00:00Z",
                        "last_read": "2026-11-29T09:00:00Z",
                    },
                    {
                        "display_name": "approle",
                        "entity_id": "e-b",
                        "remote_address": "10.0.0.9",
                        "reads": 1,
                        "denied": 0,
                        "first_read": "2026-11-28T10:00:00Z",
                        "last_read": "2026-11-28T10:00:00Z",
                    },
                ],
            },
            {
                "name": "a/test",
                "state": "unused",
                "source": True,
                "reads": 0,
                "last_read": None,
                "denied": 1,
                "rotator_reads": 0,
                "note": "log covers 2.0 of 30 days",
                "readers": [
                    {
                        "display_name": "cons-a",
                        "entity_id": "e-a",
                        "remote_address": "10.0.0.5",
                        "reads": 0,
                        "denied": 1,
                        "first_read": None,
                        "last_read": None,
                    }
                ],
            },
            {
                "name": "gone",
                "state": "no_source",
                "source": False,
                "reads": 0,
                "last_read": None,
                "denied": 0,
                "rotator_reads": 0,
                "note": None,
                "readers": [],
            },
        ],
    }


TABLE = """\
log: 2026-11-27T10:00:00Z .. 2026-11-29T09:59:00Z, covering 2.0 of the last 30 days \
(shorter than that: an 'unused' verdict is uncertain)
entries: 8; unparsable lines: 1 (not_json 1)
rotator's own reads, left out: 1 (by entity rotator-entity)
unused outputs (no consumer read in 30 days): 1

NAME    STATE      READERS  READS  LAST READ             DENIED  NOTE
a/prod  used       2        3      2026-11-29T09:00:00Z  0
a/test  unused     0        0      -                     1       log covers 2.0 of 30 days
gone    no source  0        0      -                     0

OUTPUT  READER   ENTITY  ADDRESS   READS  DENIED  FIRST READ            LAST READ
a/prod  cons-a   e-a     10.0.0.5  2      0       2026-11-27T10:00:00Z  2026-11-29T09:00:00Z
a/prod  approle  e-b     10.0.0.9  1      0       2026-11-28T10:00:00Z  2026-11-28T10:00:00Z
a/test  cons-a   e-a     10.0.0.5  0      1       -                     -
"""


def test_the_table_has_a_row_per_output_and_one_per_reader() -> None:
    assert render(_sample(), as_json=False) == TABLE


def test_the_table_names_a_rotator_without_entity_by_display_name_and_policies() -> None:
    text = render(run(own=ROOT_ROTATOR, sources=()), as_json=False)

    assert "rotator's own reads, left out: 0 (by display name 'token' and policies root)" in text
    assert "(no outputs: no source under the source prefix, and none in the log)" in text
    assert "(nobody but rotator read an output in this log)" in text


def test_control_characters_from_the_log_are_escaped_in_the_table() -> None:
    text = render(run(entry(reader="evil\x1b[2J\x07name")), as_json=False)

    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b[2J\\x07name" in text


def test_no_client_token_reaches_either_rendering() -> None:
    report = _sample()

    for as_json in (True, False):
        text = render(report, as_json=as_json)
        assert CLIENT_TOKEN not in text and CLIENT_TOKEN.split(":")[1] not in text


def test_a_known_secret_in_a_field_is_redacted() -> None:
    leaked = "s.a-vault-token-someone-used-as-a-display-name-0123"
    SECRETS.register(leaked)

    for as_json in (True, False):
        text = render(run(entry(reader=leaked)), as_json=as_json)
        assert leaked not in text and "[REDACTED:" in text


# --- the README -----------------------------------------------------------------------------------


def _documented(opening: str) -> set[str]:
    """The backticked words of the README paragraph that starts with `opening`."""
    text = README.read_text()
    start = text.index(opening)
    paragraph = text[start + len(opening) : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def test_the_readme_lists_exactly_the_output_states() -> None:
    assert _documented("An output's `state`") == {usage.value for usage in Usage}


def test_the_readme_lists_exactly_the_kinds_of_unparsable_lines() -> None:
    assert _documented("`unparsable_by_kind` counts") - {"time", "type", "auth"} == {
        kind.value for kind in Unparsable
    }
