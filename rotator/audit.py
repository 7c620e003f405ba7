"""`rotator audit`: who reads the output secrets, from a Vault or OpenBao `file` audit log.

The audit device writes one JSON object per request and per response. A consumer's read of an
output is a `response` entry whose `request.operation` is `read` and whose `request.path` is the
output's data path, `<mount>/data/<output_prefix>/<name>` (metadata reads are not reads of the
token). A response with an `error` ("permission denied") is a *denied* read: the reader was
refused, and that is worth knowing too. Readers are told apart by `auth.display_name`,
`auth.entity_id` and `request.remote_address`; client tokens and accessors (HMAC'd by the device)
are never looked at. rotator's own reads are recognised by its token's identity (`Identity`) and
left out; its writes show which outputs exist beside the sources listed from Vault.

`LogTally` is fed the log one line at a time and keeps running totals only: its memory is bounded
by outputs x readers, never by the log's size. A line that is not such an entry (not JSON, not an
object, fields missing or of the wrong type, longer than `MAX_LINE_BYTES`) is counted by kind and
skipped, never echoed and never fatal. `judge` turns the totals into an `AuditReport` for a given
`now`; `render` prints it as a table or JSON. All three are pure; `open_log` and `read_lines` are
the only I/O, at the edge.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from rotator.redact import SECRETS
from rotator.tokens import format_time, parse_time

MAX_LINE_BYTES = 1 << 20  # a longer line is counted as unparsable, and never held whole
MAX_FIELD_CHARS = 256  # reader names longer than this are cut (and so may merge)
DEFAULT_UNUSED_DAYS = 30
DAY = timedelta(days=1)
# A log whose last entry is older than this (a day; a thirtieth of a shorter window) no longer
# covers the window up to `now`: a log shipped once a day still counts as complete.
TAIL_SLACK_SHARE = 1 / 30

WRITES = frozenset({"create", "update", "patch"})


class Usage(StrEnum):
    """An output's verdict."""

    USED = "used"  # a consumer read it within the window
    UNUSED = "unused"  # no consumer read within the window: its API token may be retired
    NO_SOURCE = "no_source"  # in the log, but no source secret under the prefix any more


class Unparsable(StrEnum):
    """Why a line of the log was not an audit entry."""

    NOT_JSON = "not_json"  # not JSON at all (or not UTF-8, or nested too deeply)
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    BAD_FIELDS = "bad_fields"  # `time`, `type`, or a field an output entry needs: missing or wrong
    TOO_LONG = "too_long"  # longer than MAX_LINE_BYTES


class Identity(Protocol):
    """rotator's own Vault token as the audit log names it (`vault.TokenIdentity`)."""

    @property
    def display_name(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def policies(self) -> tuple[str, ...]: ...


class Reader(NamedTuple):
    """Who read: how the audit entry names the token and where the request came from."""

    display_name: str
    entity_id: str
    remote_address: str


@dataclass
class ReaderTally:
    """One reader's reads of one output."""

    reads: int = 0
    denied: int = 0
    first_read: datetime | None = None
    last_read: datetime | None = None

    def read(self, moment: datetime) -> None:
        self.reads += 1
        if self.first_read is None or moment < self.first_read:
            self.first_read = moment
        if self.last_read is None or moment > self.last_read:
            self.last_read = moment


@dataclass
class OutputTally:
    """Everything the log says about one output."""

    readers: dict[Reader, ReaderTally] = field(default_factory=dict)
    rotator_reads: int = 0


class _Event(NamedTuple):
    """A response about an output: a read (by `reader`, rotator's own or not, refused or not)
    or, with no reader, a write."""

    name: str
    reader: Reader | None
    own: bool
    denied: bool


class _BadFields(Exception):
    """Internal: the entry lacks a field it needs, or has it with the wrong type."""


class LogTally:
    """Running totals over an audit log, fed one line at a time (`feed`); nothing else is kept."""

    def __init__(self, mount: str, output_prefix: str, own: Identity) -> None:
        self._data_prefix = f"{mount}/data/{output_prefix}/"
        self.own = own
        self._own_policies = tuple(sorted(own.policies))
        self.lines = 0
        self.entries = 0
        self.unparsable = dict.fromkeys(Unparsable, 0)
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.outputs: dict[str, OutputTally] = {}

    def feed(self, line: bytes) -> None:
        """Count one line of the log (with or without its line break). Never raises."""
        self.lines += 1
        body = line.rstrip(b"\r\n")
        if len(body) > MAX_LINE_BYTES:
            self.unparsable[Unparsable.TOO_LONG] += 1
            return
        try:
            entry = json.loads(body)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, deep nesting
            self.unparsable[Unparsable.NOT_JSON] += 1
            return
        if not isinstance(entry, dict):
            self.unparsable[Unparsable.NOT_AN_OBJECT] += 1
            return
        try:
            self._entry(entry)
        except _BadFields:
            self.unparsable[Unparsable.BAD_FIELDS] += 1

    def _entry(self, entry: dict[str, Any]) -> None:
        moment = _time(entry.get("time"))
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise _BadFields
        event = self._event(entry) if kind == "response" else None
        self.entries += 1
        if self.first is None or moment < self.first:
            self.first = moment
        if self.last is None or moment > self.last:
            self.last = moment
        if event is None:
            return
        output = self.outputs.setdefault(event.name, OutputTally())
        if event.reader is None:
            return  # a write: the output exists
        if event.own:
            if not event.denied:
                output.rotator_reads += 1
            return
        tally = output.readers.get(event.reader)
        if tally is None:
            tally = output.readers[event.reader] = ReaderTally()
        if event.denied:
            tally.denied += 1
        else:
            tally.read(moment)

    def _event(self, entry: dict[str, Any]) -> _Event | None:
        """What a response says about an output, its fields checked; None when it says nothing
        (another path, another operation, a refused write)."""
        request = entry.get("request")
        if not isinstance(request, dict):
            raise _BadFields
        path = request.get("path")
        if not isinstance(path, str):
            raise _BadFields
        if not path.startswith(self._data_prefix):
            return None
        name = path[len(self._data_prefix) :]
        if not name or name.endswith("/"):
            return None  # a folder, not a secret
        operation = request.get("operation")
        error = entry.get("error")
        auth = {} if entry.get("auth") is None else entry["auth"]
        if not (
            isinstance(operation, str)
            and isinstance(auth, dict)
            and (error is None or isinstance(error, str))
        ):
            raise _BadFields
        if operation in WRITES and not error:
            return _Event(name, None, own=False, denied=False)
        if operation != "read":
            return None
        display_name = _text(auth.get("display_name"))
        entity_id = _text(auth.get("entity_id"))
        remote_address = _text(request.get("remote_address"))
        policies = auth.get("policies") or []
        if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
            raise _BadFields
        reader = Reader(_cut(display_name), _cut(entity_id), _cut(remote_address))
        own = self._is_own(display_name, entity_id, policies)
        return _Event(name, reader, own=own, denied=bool(error))

    def _is_own(self, display_name: str, entity_id: str, policies: list[str]) -> bool:
        """rotator's token: its entity when it has one, else its display name and policies."""
        if self.own.entity_id:
            return entity_id == self.own.entity_id
        return (
            display_name == self.own.display_name and tuple(sorted(policies)) == self._own_policies
        )


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise _BadFields
    try:
        return parse_time(value)
    except ValueError:
        raise _BadFields from None


def _text(value: object) -> str:
    """An optional string field: absent or null is ""; anything else but a string is bad."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadFields
    return value


def _cut(value: str) -> str:
    return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "..."


# --- the verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderReport:
    reader: Reader
    reads: int
    denied: int
    first_read: datetime | None
    last_read: datetime | None


@dataclass(frozen=True)
class OutputReport:
    name: str
    state: Usage
    has_source: bool
    readers: tuple[ReaderReport, ...]  # most reads first
    rotator_reads: int
    note: str | None  # why an `unused` verdict is uncertain (a log shorter than the window)

    @property
    def reads(self) -> int:
        return sum(reader.reads for reader in self.readers)

    @property
    def denied(self) -> int:
        return sum(reader.denied for reader in self.readers)

    @property
    def reader_count(self) -> int:
        """Distinct readers that read it (refused ones not counted)."""
        return sum(1 for reader in self.readers if reader.reads)

    @property
    def last_read(self) -> datetime | None:
        return max((r.last_read for r in self.readers if r.last_read is not None), default=None)


@dataclass(frozen=True)
class AuditReport:
    now: datetime
    unused_days: int
    own: Identity
    lines: int
    entries: int
    unparsable: Mapping[Unparsable, int]
    first: datetime | None  # the log's first and last entry
    last: datetime | None
    covered_days: float  # how much of the window [now - unused_days, now] the log covers
    short: bool  # the log does not cover the whole window
    outputs: tuple[OutputReport, ...]  # by name

    @property
    def unused(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs if o.state is Usage.UNUSED)

    @property
    def rotator_reads(self) -> int:
        return sum(output.rotator_reads for output in self.outputs)


def audit(
    lines: Iterable[bytes],
    *,
    mount: str,
    output_prefix: str,
    own: Identity,
    sources: Iterable[str],
    now: datetime,
    unused_days: int = DEFAULT_UNUSED_DAYS,
) -> AuditReport:
    """The report over the audit log `lines`, for the outputs of `sources` and every output the
    log names, as of `now`."""
    tally = LogTally(mount, output_prefix, own)
    for line in lines:
        tally.feed(line)
    return judge(tally, sources, now, unused_days)


def judge(tally: LogTally, sources: Iterable[str], now: datetime, unused_days: int) -> AuditReport:
    """Each output's verdict: `used` when a consumer read it in the `unused_days` before `now`
    (inclusive), `unused` when none did, `no_source` when it has no source any more."""
    window = unused_days * DAY
    cutoff = now - window
    first, last = tally.first, tally.last
    if first is None or last is None:
        covered, short = 0.0, True
    else:
        span = min(last, now) - max(first, cutoff)
        covered = max(span / DAY, 0.0)
        short = first > cutoff or now - last > min(DAY, window * TAIL_SLACK_SHARE)
    note = f"log covers {covered:.1f} of {unused_days} days" if short else None
    known = set(sources)
    outputs = []
    for name in sorted(known | tally.outputs.keys()):
        found = tally.outputs.get(name) or OutputTally()
        readers = tuple(
            ReaderReport(reader, t.reads, t.denied, t.first_read, t.last_read)
            for reader, t in sorted(
                found.readers.items(), key=lambda item: (-item[1].reads, item[0])
            )
        )
        used = any(r.last_read is not None and r.last_read >= cutoff for r in readers)
        state = Usage.NO_SOURCE if name not in known else Usage.USED if used else Usage.UNUSED
        outputs.append(
            OutputReport(
                name,
                state,
                name in known,
                readers,
                found.rotator_reads,
                note if state is Usage.UNUSED else None,
            )
        )
    return AuditReport(
        now=now,
        unused_days=unused_days,
        own=tally.own,
        lines=tally.lines,
        entries=tally.entries,
        unparsable=dict(tally.unparsable),
        first=first,
        last=last,
        covered_days=covered,
        short=short,
        outputs=tuple(outputs),
    )


# --- rendering ------------------------------------------------------------------------------------

HEADERS = ("NAME", "STATE", "READERS", "READS", "LAST READ", "DENIED", "NOTE")
READER_HEADERS = (
    "OUTPUT",
    "READER",
    "ENTITY",
    "ADDRESS",
    "READS",
    "DENIED",
    "FIRST READ",
    "LAST READ",
)


def render(report: AuditReport, *, as_json: bool) -> str:
    """The report as the table (one row per output, then one per reader) or as the JSON
    document the README describes. No token is in either; known secrets are redacted anyway."""
    text = _json(report) if as_json else _table(report)
    return SECRETS.redact(text)


def document(report: AuditReport) -> dict[str, Any]:
    """The JSON-ready document of `report`."""
    return {
        "audited_at": format_time(report.now),
        "unused_days": report.unused_days,
        "unused": list(report.unused),
        "log": {
            "lines": report.lines,
            "entries": report.entries,
            "unparsable": sum(report.unparsable.values()),
            "unparsable_by_kind": {kind.value: report.unparsable[kind] for kind in Unparsable},
            "first": _time_or_none(report.first),
            "last": _time_or_none(report.last),
            "covers_days": round(report.covered_days, 1),
            "short": report.short,
        },
        "rotator": {
            "display_name": report.own.display_name,
            "entity_id": report.own.entity_id,
            "reads": report.rotator_reads,
        },
        "outputs": [
            {
                "name": output.name,
                "state": output.state.value,
                "source": output.has_source,
                "reads": output.reads,
                "last_read": _time_or_none(output.last_read),
                "denied": output.denied,
                "rotator_reads": output.rotator_reads,
                "note": output.note,
                "readers": [
                    {
                        "display_name": reader.reader.display_name,
                        "entity_id": reader.reader.entity_id,
                        "remote_address": reader.reader.remote_address,
                        "reads": reader.reads,
                        "denied": reader.denied,
                        "first_read": _time_or_none(reader.first_read),
                        "last_read": _time_or_none(reader.last_read),
                    }
                    for reader in output.readers
                ],
            }
            for output in report.outputs
        ],
    }


def _json(report: AuditReport) -> str:
    return json.dumps(SECRETS.redact_data(document(report)), indent=2) + "\n"


def _table(report: AuditReport) -> str:
    lines = [_summary(report), ""]
    rows = [
        (
            output.name,
            output.state.value.replace("_", " "),
            str(output.reader_count),
            str(output.reads),
            _time_or_dash(output.last_read),
            str(output.denied),
            output.note or "",
        )
        for output in report.outputs
    ]
    lines += _columns(HEADERS, rows)
    if not rows:
        lines.append("(no outputs: no source under the source prefix, and none in the log)")
    readers = [
        (
            output.name,
            reader.reader.display_name or "-",
            reader.reader.entity_id or "-",
            reader.reader.remote_address or "-",
            str(reader.reads),
            str(reader.denied),
            _time_or_dash(reader.first_read),
            _time_or_dash(reader.last_read),
        )
        for output in report.outputs
        for reader in output.readers
    ]
    lines.append("")
    if readers:
        lines += _columns(READER_HEADERS, readers)
    else:
        lines.append("(nobody but rotator read an output in this log)")
    return "\n".join(lines) + "\n"


def _summary(report: AuditReport) -> str:
    if report.first is None or report.last is None:
        span = "log: no entries"
    else:
        span = (
            f"log: {format_time(report.first)} .. {format_time(report.last)}, covering "
            f"{report.covered_days:.1f} of the last {report.unused_days} days"
        )
    if report.short:
        span += " (shorter than that: an 'unused' verdict is uncertain)"
    kinds = ", ".join(f"{kind.value} {n}" for kind, n in report.unparsable.items() if n)
    own = report.own
    whose = (
        f"entity {own.entity_id}"
        if own.entity_id
        else f"display name {own.display_name!r} and policies {','.join(own.policies)}"
    )
    return "\n".join(
        (
            span,
            f"entries: {report.entries}; unparsable lines: {sum(report.unparsable.values())}"
            + (f" ({kinds})" if kinds else ""),
            f"rotator's own reads, left out: {report.rotator_reads} (by {_printable(whose)})",
            f"unused outputs (no consumer read in {report.unused_days} days): {len(report.unused)}",
        )
    )


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [tuple(_printable(cell) for cell in row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *cells, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *cells)
    ]


def _printable(text: str) -> str:
    """`text` with control characters escaped: names come from the log and must not drive a
    terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _time_or_none(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _time_or_dash(moment: datetime | None) -> str:
    return format_time(moment) if moment is not None else "-"


# --- reading the log (the only I/O) ---------------------------------------------------------------


class LineStream(Protocol):
    """What the log is read from: a binary file, gzip stream or stdin."""

    def readline(self, size: int = -1, /) -> bytes: ...


@contextmanager
def open_log(path: str, stdin: LineStream) -> Iterator[LineStream]:
    """The log at `path` as bytes: `-` is `stdin` (left open), a name ending in `.gz` is read
    through gzip. Raises OSError when it cannot be opened (a .gz that is not gzip fails on the
    first read instead, with OSError too)."""
    if path == "-":
        yield stdin
        return
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as compressed:
            yield compressed
    else:
        with open(path, "rb") as plain:
            yield plain


def read_lines(stream: LineStream, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of `stream`, each held whole only up to `limit` bytes: a longer one is yielded
    as its first `limit + 1` bytes (which `LogTally.feed` counts as too long) and the rest is
    skipped. Raises what reading raises (OSError, EOFError for a truncated .gz)."""
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass
        yield line
