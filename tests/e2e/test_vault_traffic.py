"""Vault round trips of `rotator run` (issue 14), counted in OpenBao's file audit log: every
request a daemon makes is one `type: request` line naming its Vault token's display name, so each
daemon runs with a child token of its own and the test's own (root) requests never count.

What is counted, per refresh: the requests on a token's own paths (its source and output, data
and metadata, and its claim); per check: the probe, the registry, the listings. A refresh's
window starts half a second before its exchange at the stand-in: the refresh before it ended
seconds earlier, and the daemons are stopped (SIGTERM drains in-flight work) before counting.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator import peers
from rotator.dev.devvault import DevVault, free_port
from rotator.dev.standin import Issued, LeanIXStandIn
from rotator.exchange import TokenExchanger
from rotator.records import MAC_FIELD, VOUCH_KEY, SecretVersion, output_key
from rotator.redact import fingerprint
from rotator.sources import parse_source
from rotator.tokens import ISSUANCE_LOG_KEY, ISSUANCE_LOGGED_KEY, format_time, issuance_log_add
from tests.conftest import VaultSpace
from tests.e2e.conftest import ROTATOR, Rig, looked_at, remaining_seconds, sample, scrape
from tests.waiting import alive, stop_process, wait_for

CHECK = 1  # schedule.check_interval_seconds: an announcement's lease is 2 x 1 + 10 s
LIFETIME = 10  # seconds; with refresh_fraction 0.5 a refresh about every 4.5-5 s
SKIPPED = 2  # issuances per token before a steady-state window: the first output, one refresh
WINDOW = 3  # refreshes per token in a steady-state window (at least two generations)
TOKEN_PATHS = ("source data", "source version", "output data", "output metadata", "claim")
NEWCOMER = re.compile(r"do not know of this one yet; refreshing nothing before (\S+)")
KNOWN = re.compile(r"every other instance knows of this one as of ([^\s;]+)")

_who = itertools.count()


# --- the audit log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request in the audit log, sorted into a category of rotator's paths."""

    at: datetime
    who: str  # the Vault token's display name as the log names it ("token-<display name>")
    operation: str  # read, create, update, list, delete
    path: str
    data: Mapping[str, Any] = field(repr=False)
    category: str = ""
    name: str | None = None  # the token whose path this is

    @property
    def kind(self) -> str:
        return f"{self.category} {self.operation}"


def _time(text: str) -> datetime:
    """An audit entry's time (RFC 3339 with nanoseconds)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    micro = int((fraction + "000000")[:6])
    return datetime.fromisoformat(head).replace(tzinfo=UTC) + timedelta(microseconds=micro)


def _classify(path: str, data: Mapping[str, Any], space: VaultSpace) -> tuple[str, str | None]:
    source, output = space.source_prefix, space.output_prefix
    rules = (
        (f"secret/data/rotator-claims/{output}/", "claim"),
        (f"secret/metadata/rotator-instances/{output}/", "registry"),
        (f"secret/detailed-metadata/rotator-instances/{output}", "registry listing"),
        (f"secret/detailed-metadata/{output}", "output listing"),
        (f"secret/detailed-metadata/{source}", "source listing"),
        (f"secret/metadata/{output}/", "output metadata"),
        (f"secret/data/{output}/", "output data"),
        (f"secret/data/{source}/", "source data"),
        (f"secret/metadata/{source}", "discovery"),
    )
    for prefix, found in rules:
        if path.startswith(prefix):
            name = path[len(prefix) :].strip("/") or None
            category = "source version" if found == "source data" and "version" in data else found
            return category, name if category in TOKEN_PATHS else None
    if path == "auth/token/lookup-self":
        return "probe", None
    return "other " + path, None


def read_audit(log: Path, space: VaultSpace, who: Iterable[str]) -> list[Request]:
    """Every request by the tokens with display names `who`, oldest first."""
    wanted = {f"token-{name}" for name in who}
    needles = [name.encode() for name in wanted]
    found = []
    with log.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # being written
            if not any(needle in line for needle in needles):
                continue
            entry = json.loads(line)
            display = (entry.get("auth") or {}).get("display_name")
            if entry.get("type") != "request" or display not in wanted:
                continue
            request = entry.get("request") or {}
            data = request.get("data") or {}
            path = str(request.get("path", ""))
            category, name = _classify(path, data, space)
            found.append(
                Request(
                    _time(entry["time"]),
                    display,
                    str(request.get("operation")),
                    path,
                    data,
                    category,
                    name,
                )
            )
    return found


def kinds(requests: Iterable[Request]) -> Counter[str]:
    return Counter(request.kind for request in requests)


# --- the scene --------------------------------------------------------------------------------


@dataclass
class Daemon:
    who: str  # its Vault token's display name
    process: Any
    log: Path
    listen: str
    started: datetime

    @property
    def display(self) -> str:
        return f"token-{self.who}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def newcomer_until(self) -> datetime | None:
        """The most a newcomer's wait lasts, as it logged it (to the second)."""
        match = NEWCOMER.search(self.text())
        return datetime.fromisoformat(match.group(1)) if match else None

    def newcomer_known(self) -> datetime | None:
        """When a newcomer's wait ended because every other instance knew of it."""
        match = KNOWN.search(self.text())
        return datetime.fromisoformat(match.group(1)) if match else None

    def exchanged(self, names: Iterable[str]) -> float:
        """Successful exchanges it made of `names`, from its /metrics (which must answer)."""
        page = scrape(self.listen)
        assert page, f"{self.who}: /metrics does not answer"
        counts = [sample(page, "rotator_exchanges_total", token=n, result="success") for n in names]
        return sum(count or 0 for count in counts)

    def stop(self) -> int:
        return stop_process(self.process)


@dataclass
class Scene:
    """The test's rig on the audited vault, and the daemons it started."""

    rig: Rig
    audit_log: Path
    tmp: Path
    daemons: list[Daemon] = field(default_factory=list)

    def start(self, role: str, **exchange: Any) -> Daemon:
        """`rotator run` with a Vault token of its own (display name unique in the module)."""
        who = f"rotator-{next(_who)}-{role}"
        token = self.rig.space.root.auth.token.create(
            policies=["root"], display_name=who, ttl="1h"
        )["auth"]["client_token"]
        listen = f"127.0.0.1:{free_port()}"
        config = self.tmp / f"{who}.toml"
        self.rig.write_config(
            config,
            exchange=exchange,
            schedule={"check_interval_seconds": CHECK, "discovery_interval_seconds": 60},
            alerts={"max_issuances_per_hour": 1000},
            metrics={"listen": listen},
        )
        log = self.tmp / f"{who}.log"
        process = self.rig.start(
            "run", "--log-level", "DEBUG", log=log, env={"VAULT_TOKEN": token}, config=config
        )
        daemon = Daemon(who, process, log, listen, datetime.now(UTC))
        self.daemons.append(daemon)
        return daemon

    def requests(self, *daemons: Daemon) -> list[Request]:
        return read_audit(self.audit_log, self.rig.space, (d.who for d in daemons))

    def issuances(self, name: str) -> list[Issued]:
        wanted = fingerprint(self.rig.api_tokens[name])
        return [issued for issued in self.rig.idp.issued if issued.api_token_fingerprint == wanted]

    def all_valid(self, names: Iterable[str]) -> bool:
        """Asserts every output there is holds an unexpired token; True when all are there."""
        present = True
        for name in names:
            fields = self.rig.output(name)
            if fields is None:
                present = False
                continue
            assert remaining_seconds(fields) > 0, f"{name}: a consumer would read an expired token"
        return present

    def registry(self) -> list[str]:
        """The instance ids announced under this test's output prefix, as root lists them."""
        try:
            listed = self.rig.space.root.secrets.kv.v2.list_secrets(
                f"rotator-instances/{self.rig.space.output_prefix}", mount_point="secret"
            )
        except hvac.exceptions.InvalidPath:
            return []
        return sorted(listed["data"]["keys"])


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevVault, Path]]:
    log = tmp_path_factory.mktemp("vault-traffic") / "audit.log"
    with DevVault(audit_log=log) as vault:
        yield vault, log


@pytest.fixture
def scene(
    audited: tuple[DevVault, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Scene]:
    if not ROTATOR.exists():
        raise AssertionError(f"the rotator command is not installed at {ROTATOR}")
    vault, log = audited
    tag = f"v{next(_who)}-{request.node.name[:40]}"
    root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
    space = VaultSpace(vault, f"{tag}/src", f"{tag}/out", root)
    with LeanIXStandIn(lifetime_seconds=LIFETIME) as idp:
        rig = Rig(space, idp, tmp_path / "rotator.toml")
        rig.write_config()
        made = Scene(rig, log, tmp_path)
        try:
            yield made
        finally:
            for daemon in made.daemons:
                with suppress(AssertionError):
                    daemon.stop()
            root.adapter.close()


def _keep_valid(scene: Scene, names: list[str], until: Callable[[], Any], timeout: float) -> Any:
    """Poll until `until()`, asserting on every poll that every output present is valid and
    every daemon is alive."""

    def done() -> Any:
        for daemon in scene.daemons:
            assert daemon.process.poll() is None, f"{daemon.who} died"
        scene.all_valid(names)
        return until()

    return wait_for(done, timeout, "the run to get that far", every=0.25)


@dataclass
class Window:
    """One token's steady-state window: from just before its exchange `first` to the end."""

    name: str
    start: datetime
    refreshes: int
    requests: list[Request]


def _opening(issued: list[Issued], after: datetime | None, later: int) -> int | None:
    """The index of the issuance a token's window opens with: the first past the first SKIPPED
    and past `after`, then `later` more; None while there is none."""
    late = [
        i
        for i, record in enumerate(issued)
        if i >= SKIPPED and (after is None or record.issued_at > after)
    ]
    return late[later] if len(late) > later else None


def windows(
    scene: Scene,
    names: list[str],
    requests: list[Request],
    after: datetime | None = None,
    later: int = 0,
) -> list[Window]:
    """Each token's window: it opens half a second before its exchange `_opening` names, and
    holds its refreshes from there on."""
    found = []
    for name in names:
        issued = scene.issuances(name)
        index = _opening(issued, after, later)
        assert index is not None, name
        start = issued[index].issued_at - timedelta(seconds=0.5)
        mine = [r for r in requests if r.name == name and r.at >= start]
        found.append(Window(name, start, len(issued) - index, mine))
    return found


def _ready(
    scene: Scene, names: list[str], after: Callable[[], datetime | None], later: int = 0
) -> bool:
    """Whether every token has had WINDOW refreshes in its window."""
    moment = after()
    return all(
        _opening(scene.issuances(name), moment, later + WINDOW - 1) is not None for name in names
    )


def _story(requests: list[Request], picked: list[Request]) -> list[str]:
    """For every request in `picked` beyond a refresh's five, the token's requests around it
    (who, when, what): enough to tell why it was made."""
    extra = [r for r in picked if r.kind in ("output data read", "output metadata read")]
    lines = []
    for odd in extra:
        lines.append(f"{odd.who} {odd.kind} {odd.name} at {odd.at:%H:%M:%S.%f}; around it:")
        lines.extend(
            f"  {r.at:%H:%M:%S.%f} {r.who} {r.kind}"
            for r in requests
            if r.name == odd.name and abs((r.at - odd.at).total_seconds()) < 8
        )
    return lines


def _per_refresh(found: list[Window]) -> dict[str, float]:
    refreshes = sum(window.refreshes for window in found)
    counted = kinds(r for window in found for r in window.requests)
    return {kind: round(count / refreshes, 2) for kind, count in sorted(counted.items())}


# --- the tests --------------------------------------------------------------------------------


def test_one_daemon_alone_writes_each_refresh_in_two_requests_and_reads_nothing(
    scene: Scene,
) -> None:
    names = ["acme/prod", "acme/sandbox", "team-b/reporting"]
    for name in names:
        scene.rig.add_token(name)
    daemon = scene.start("alone", refresh_fraction=0.5)
    started = time.monotonic()

    _keep_valid(scene, names, lambda: _ready(scene, names, lambda: None), 35)
    assert daemon.stop() == 0
    seconds = time.monotonic() - started

    requests = scene.requests(daemon)
    found = windows(scene, names, requests)
    for window in found:
        counted = kinds(window.requests)
        writes = [r for r in window.requests if r.category == "output data"]
        # Each refresh: one data write with check-and-set, one metadata write; nothing read
        # (not the source, not the output after the write), and no claim: it is alone.
        assert counted == Counter(
            {"output data update": window.refreshes, "output metadata update": window.refreshes}
        ), (window.name, window.refreshes, counted)
        assert all(isinstance(r.data.get("options", {}).get("cas"), int) for r in writes)
        assert window.refreshes >= WINDOW
    assert not any(r.category == "claim" for r in requests), "alone, yet it claimed"

    # Per check: the probe, the announcement, the registry's listing, and one listing of the
    # outputs and one of the sources per folder (the prefix itself, acme/, team-b/).
    folders = 3
    start = min(window.start for window in found)
    late = [r for r in requests if r.at >= start]
    per_check = kinds(r for r in late if r.name is None)
    checks = per_check["probe read"]
    span = (max(r.at for r in late) - start).total_seconds()
    assert 0.6 * span / CHECK <= checks <= span / CHECK + 2, (checks, span)
    for kind in ("registry update", "registry listing list"):
        assert abs(per_check[kind] - checks) <= 1, (kind, per_check)
    for kind in ("output listing list", "source listing list"):
        assert abs(per_check[kind] - folders * checks) <= folders, (kind, per_check)
    assert per_check["registry delete"] == 1  # withdrawn on the way out
    refreshes = sum(window.refreshes for window in found)
    print(
        f"\none daemon, {len(names)} tokens, {refreshes} refreshes in the windows, "
        f"{checks} checks in {span:.1f} s (run {seconds:.1f} s)"
    )
    print("  per refresh:", _per_refresh(found))
    print("  per check:", {k: round(v / checks, 2) for k, v in sorted(per_check.items())})


def test_two_daemons_claim_and_stay_within_five_requests_per_refresh(scene: Scene) -> None:
    names = [f"fleet/token-{index}" for index in range(4)]
    for name in names:
        scene.rig.add_token(name)
    first = scene.start("pair-a", refresh_fraction=0.5)
    second = scene.start("pair-b", refresh_fraction=0.5)
    started = time.monotonic()

    def settled() -> datetime | None:
        """When the newcomer waits of both ended (None: neither waited)."""
        waits = [d.newcomer_known() or d.newcomer_until() for d in (first, second)]
        return max((w for w in waits if w is not None), default=None)

    # The steady state: from the second refresh after the newcomer waits ended. The first one
    # after them is a handover (see the report below): with 10 s tokens, the newcomer's hold
    # and the other's deference both end half-way between refresh time and expiry, so either
    # instance may have refreshed a token the other is preferred for, which then reads the
    # output once when it takes the token back.
    _keep_valid(scene, names, lambda: _ready(scene, names, settled, later=1), 38)
    exchanged = [first.exchanged(names), second.exchanged(names)]
    assert first.stop() == 0 and second.stop() == 0
    seconds = time.monotonic() - started
    # Started together on missing outputs, yet no exchange was wasted on a lost race over the
    # whole run, first outputs included: every output version is one exchange of either.
    store = scene.rig.space.store()
    versions = [secret.version for secret in map(store.read_output, names) if secret is not None]
    assert len(versions) == len(names) and sum(versions) == sum(exchanged), (versions, exchanged)

    requests = scene.requests(first, second)
    handover = windows(scene, names, requests, settled())
    found = windows(scene, names, requests, settled(), later=1)
    refreshes = sum(window.refreshes for window in found)
    in_windows = [r for window in found for r in window.requests]
    counted = kinds(in_windows)
    per_refresh = len(in_windows) / refreshes
    by_daemon = {
        daemon.who: dict(sorted(kinds(r for r in in_windows if r.who == daemon.display).items()))
        for daemon in (first, second)
    }
    print(
        f"\ntwo daemons, {len(names)} tokens, {refreshes} refreshes in the windows "
        f"(run {seconds:.1f} s; successful exchanges per daemon {exchanged}); newcomer "
        f"waits until {[str(d.newcomer_until()) for d in (first, second)]}"
    )
    print(f"  token-path requests per refresh: {per_refresh:.2f}", _per_refresh(found))
    for who, breakdown in by_daemon.items():
        print(f"  {who}:", breakdown)
    print("  from the first refresh after the waits:", _per_refresh(handover))
    for line in _story(requests, [r for window in handover for r in window.requests]):
        print("   ", line)

    # Every issuance was written (no exchange wasted on a lost race), and claims were used.
    assert counted["output data update"] == refreshes, counted
    assert counted["claim update"] + counted["claim create"] > 0, counted
    # The sources did not change, and each daemon read each once before the windows (its first
    # pass); from then on the check's listing vouches for the source read, so no pass reads it.
    assert counted["source data read"] + counted["source version read"] == 0, counted
    # The target: claim read, claim, data write, metadata write, release.
    assert per_refresh <= 5, (per_refresh, counted)


def test_a_newcomer_waits_until_the_instance_already_running_knows_of_it(scene: Scene) -> None:
    # 30 s tokens refreshed at 30 % of their life: due about 8 s after the first outputs, with
    # about 10 s then left before half-way to expiry, more than the newcomer's wait holds back.
    scene.rig.idp.lifetime_seconds = 30
    # 12 tokens: the running instance shows its claims only on tokens it is preferred for, and
    # with random instance ids it is preferred for none of 6 once in 64 runs (of 12: 1 in 4,096).
    names = [f"fleet/token-{index}" for index in range(12)]
    for name in names:
        scene.rig.add_token(name)
    first = scene.start("old", refresh_fraction=0.3)
    _keep_valid(scene, names, lambda: scene.all_valid(names) and scene.registry(), 20)
    (first_id,) = scene.registry()
    assert not any(r.category == "claim" for r in scene.requests(first)), "alone, yet it claimed"

    second = scene.start("new", refresh_fraction=0.3)
    bound = wait_for(alive(second.process, second.newcomer_until), 10, "the newcomer's log line")
    second_id = next(i for i in scene.registry() if i != first_id)
    lease = peers.lease(CHECK)
    # At the most one lease of the running instance's checks (the log line is to the second).
    assert lease - timedelta(seconds=1.5) <= bound - second.started <= lease + timedelta(seconds=1)
    # The running one names the newcomer in its announcement at its next check, and the
    # newcomer's next check ends the wait: about two checks, far sooner than the lease.
    known = wait_for(
        alive(second.process, second.newcomer_known), 4 * CHECK + 5, "the end of the wait"
    )
    met = bound - lease  # when the newcomer first listed the registry (to the second)
    assert known - met <= timedelta(seconds=2 * CHECK + 1), (met, known)

    # The tokens the newcomer is preferred for are held back until its wait ends, then it
    # refreshes them (the one already running defers them to it).
    mine = [n for n in names if peers.preferred(n, (first_id, second_id)) == second_id]
    assert len(mine) < len(names), "the running instance is preferred for no token: no claims"

    def refreshed_by_newcomer() -> bool:
        written = {r.name for r in scene.requests(second) if r.kind == "output data update"}
        return set(mine) <= written

    _keep_valid(scene, names, refreshed_by_newcomer, 15)
    _keep_valid(scene, names, lambda: any(r.category == "claim" for r in scene.requests(first)), 25)
    assert first.stop() == 0 and second.stop() == 0

    # Until its wait ended, the newcomer wrote nothing.
    early = [r for r in scene.requests(second) if r.at < known]
    assert not any(r.category == "output data" and r.operation != "read" for r in early), early
    for name in mine:
        writes = [
            r
            for r in scene.requests(first, second)
            if r.name == name and r.kind == "output data update"
        ]
        assert writes and writes[0].who == second.display and writes[0].at >= known, name
    # Once the running instance saw the newcomer, every one of its refreshes claimed first.
    seen_by = second.started + timedelta(seconds=2 * CHECK + 1)
    old = scene.requests(first)
    for write in (r for r in old if r.kind == "output data update" and r.at > seen_by):
        claimed = [
            r
            for r in old
            if r.name == write.name
            and r.category == "claim"
            and r.at <= write.at
            and write.at - r.at < timedelta(seconds=5)
        ]
        assert claimed, f"{write.name}: refreshed at {write.at} without a claim"
    print(
        f"\nnewcomer waited until {known} ({(known - second.started).total_seconds():.1f} s after"
        f" its start; {bound} at the most); it is preferred for {mine}; the running one's claims:",
        dict(kinds(r for r in old if r.category == "claim")),
    )


def test_an_api_token_replaced_in_vault_is_exchanged_within_a_few_checks(scene: Scene) -> None:
    scene.rig.idp.lifetime_seconds = 30  # not due for 22 s or more: only the check can pull it
    names = ["acme/prod", "acme/sandbox"]
    for name in names:
        scene.rig.add_token(name)
    daemon = scene.start("replaced")
    _keep_valid(scene, names, lambda: scene.all_valid(names), 15)
    written = max(r.at for r in scene.requests(daemon) if r.kind == "output metadata update")

    def listings_since(moment: datetime) -> int:
        return sum(
            1 for r in scene.requests(daemon) if r.kind == "output listing list" and r.at > moment
        )

    _keep_valid(scene, names, lambda: listings_since(written) >= 2, 10)

    old_api_token = scene.rig.api_tokens["acme/prod"]
    old_requests = scene.rig.idp.requests_for(old_api_token)
    new_api_token = "api-" + secrets.token_urlsafe(24)
    scene.rig.idp.add_token(new_api_token, workspace_name="acme")
    changed = datetime.now(UTC)
    changed_at = time.monotonic()
    version = scene.rig.space.write_source(
        "acme/prod", {"api_token": new_api_token, "token_url": scene.rig.idp.token_url}
    )
    scene.rig.idp.revoke(old_api_token)
    scene.rig.api_tokens["acme/prod"] = new_api_token

    def exchanged_anew() -> bool:
        fields = scene.rig.output("acme/prod")
        return fields is not None and fields["source_version"] == version

    _keep_valid(scene, names, exchanged_anew, 4 * CHECK + 2)
    took = time.monotonic() - changed_at
    new_write = max(r.at for r in scene.requests(daemon) if r.kind == "output metadata update")
    _keep_valid(scene, names, lambda: listings_since(new_write) >= 3, 10)
    page = scrape(daemon.listen)
    assert daemon.stop() == 0

    assert scene.rig.idp.requests_for(old_api_token) == old_requests, "the old token was sent"
    assert scene.rig.idp.issued_count(new_api_token) == 1
    assert not sample(page, "rotator_exchanges_total", token="acme/prod", result="rejected")
    assert not sample(page, "rotator_alerts_firing", alert="api_token_rejected")
    assert "the source changed; looking at it now" in daemon.text()
    after = [r for r in scene.requests(daemon) if r.at >= changed]
    reads = Counter(r.name for r in after if r.category in ("source data", "source version"))
    assert reads == Counter({"acme/prod": 1}), reads
    print(f"\nthe replaced API token was exchanged {took:.1f} s after the source changed")


def _legacy_output(scene: Scene, name: str) -> datetime:
    """An output as an older rotator left it (SPEC's fields only; ownership by the fingerprint
    announced in the metadata), holding a real access token from the stand-in; returns when it
    was issued."""
    rig = scene.rig
    source = parse_source(
        name,
        {"api_token": rig.api_tokens[name], "token_url": rig.idp.token_url},
        1,
        ("127.0.0.1",),
        ("127.0.0.1",),
    )
    exchanger = TokenExchanger(("127.0.0.1",), ("127.0.0.1",), 5)
    try:
        token = exchanger.exchange(source)
    finally:
        exchanger.close()
    path = f"{rig.space.output_prefix}/{name}"
    kv = rig.space.root.secrets.kv.v2
    kv.create_or_update_secret(path, secret=token.fields(), cas=0, mount_point="secret")
    kv.update_metadata(
        path,
        custom_metadata={
            "written_by": "rotator",
            "fingerprint": token.fingerprint,
            "previous_fingerprint": "-",
            "issued_at": format_time(token.issued_at),
            "expires_at": format_time(token.expires_at),
            ISSUANCE_LOG_KEY: issuance_log_add(None, token.issued_at),
            ISSUANCE_LOGGED_KEY: token.fingerprint,
        },
        mount_point="secret",
    )
    rig.outputs_seen.append(token.access_token)
    return token.issued_at


def _status_row(scene: Scene, name: str) -> dict[str, Any]:
    result = scene.rig.rotator("status", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["tokens"]}
    return dict(rows[name])


def test_a_legacy_output_is_rotators_own_until_it_is_written_again_with_a_mac(
    scene: Scene,
) -> None:
    lifetime = 12
    scene.rig.idp.lifetime_seconds = lifetime
    name = "acme/prod"
    scene.rig.add_token(name)
    issued_at = _legacy_output(scene, name)
    row = _status_row(scene, name)
    assert row["reason"] != "foreign_write" and row["healthy"], row

    daemon = scene.start("legacy")

    def no_foreign_write() -> None:
        page = scrape(daemon.listen)
        assert not sample(page, "rotator_alerts_firing", alert="foreign_write"), "foreign_write"

    wait_for(alive(daemon.process, lambda: looked_at(daemon.listen, [name])), 10, "a first look")
    no_foreign_write()
    # Trusted and fresh: not exchanged on sight (a foreign write would have been replaced now).
    assert len(scene.issuances(name)) == 1

    def rewritten() -> dict[str, Any] | None:
        no_foreign_write()
        fields = scene.rig.output(name)
        return fields if fields is not None and MAC_FIELD in fields else None

    fields = _keep_valid(scene, [name], rewritten, lifetime + 5)
    no_foreign_write()
    page = scrape(daemon.listen)
    assert daemon.stop() == 0

    stored = scene.rig.space.root.secrets.kv.v2.read_secret_version(
        f"{scene.rig.space.output_prefix}/{name}",
        mount_point="secret",
        raise_on_deleted_version=True,
    )["data"]
    secret = SecretVersion(
        stored["data"], stored["metadata"]["version"], stored["metadata"]["custom_metadata"]
    )
    assert secret.written_by_rotator(output_key(scene.rig.api_tokens[name]))
    assert VOUCH_KEY in secret.custom_metadata
    assert "fingerprint" not in secret.custom_metadata
    assert "previous_fingerprint" not in secret.custom_metadata
    # Rewritten when due, not at once as a foreign write would be.
    renewed = datetime.fromisoformat(fields["issued_at"].replace("Z", "+00:00"))
    assert renewed - issued_at >= timedelta(seconds=0.5 * lifetime), (issued_at, renewed)
    assert sample(page, "rotator_exchanges_total", token=name, result="success") == 1
    assert "changed by someone else" not in daemon.text()
    row = _status_row(scene, name)
    assert row["reason"] != "foreign_write" and row["healthy"], row


def test_a_stopped_daemon_leaves_the_instance_registry(scene: Scene) -> None:
    scene.rig.add_token("acme/prod")
    daemon = scene.start("leaving")
    (announced,) = wait_for(alive(daemon.process, scene.registry), 10, "the announcement")
    assert announced.count(".") == 2  # <host>.<pid>.<random>

    assert daemon.stop() == 0

    assert scene.registry() == []
    deletes = [r for r in scene.requests(daemon) if r.kind == "registry delete"]
    assert [r.path.rsplit("/", 1)[-1] for r in deletes] == [announced]
    assert "stopped" in daemon.text()
