"""Who else rotates these tokens: the instance registry's rules. Pure: no I/O.

Every daemon announces itself under `<mount>/rotator-instances/<output_prefix>/<id>` (a
metadata-only KV entry, written at each check, `vault.VaultStore.announce_instance`) with a
lease, and reads the others' announcements at the same time. What follows from them:

- **Claims only when there is someone to claim against.** With no other live instance, a
  refresh skips the per-token claim (three requests: read, take, release); check-and-set on
  the output still guarantees that no write is ever lost.
- **A newcomer waits until the others know of it** before it refreshes anything, when it finds
  others running: an instance that believes itself alone does not claim, so until it has seen
  the newcomer, both could exchange the same token. Each announcement lists a short tag of
  every instance its author knows of (`knows`, `tag`); the newcomer waits until every live
  peer's announcement lists it (`unaware`), and never longer than one lease of the slowest of
  them (`newcomer_wait`), by when each has run a check since. Two instances starting at once:
  the later announcer sees the earlier one, so at least one of them waits; a wait normally
  ends after the other's next check and its own. (A newcomer's first announcement, written
  before it has listed anyone, names nobody: a peer that lists the registry in that instant
  waits too, until its next check.) The wait holds back a routine refresh never past a third
  of the time between its refresh time and its expiry (`plan.py`); a missing or expired
  output waits for it in full (the instance that is already running refreshes it meanwhile).
- **One preferred instance per token** (`preferred`, rendezvous hashing over the live ids):
  the others schedule that token's routine refresh later by `deference` (never past half the
  time left before it expires), so normally only the preferred one exchanges it, and the
  others learn of the new version from their check's listing (`records.OutputMetadata.vouched`)
  without reading anything. If the preferred one fails or dies, the next one is due anyway.
- `rotate` and `check` from the command line claim whenever a daemon is alive; they do not
  announce themselves (they end before any daemon's next check would see them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from rotator.tokens import MAX_CLOCK_SKEW, format_time, parse_time

LEASE_SLACK = timedelta(seconds=10)
MAX_CHECK_INTERVAL = 86400.0  # the config's bound on schedule.check_interval_seconds
MAX_VALUE_BYTES = 512  # Vault's limit on one custom_metadata value
NOBODY = "-"  # `knows` of an instance that knows of no other (Vault refuses empty values)


def lease(check_interval_seconds: float) -> timedelta:
    """How long an announcement lasts: two checks of its instance, and some slack. Missing one
    check (a slow Vault) does not make an instance look gone."""
    return 2 * timedelta(seconds=check_interval_seconds) + LEASE_SLACK


MAX_LEASE = lease(MAX_CHECK_INTERVAL) + MAX_CLOCK_SKEW


@dataclass(frozen=True)
class Peer:
    """Another live instance, as its announcement says."""

    instance: str
    until: datetime
    check_interval_seconds: float
    knows: frozenset[str] = frozenset()  # the `tag`s of the instances its author knows of

    def knows_of(self, instance: str) -> bool:
        """Whether its last announcement says it knows of `instance`."""
        return tag(instance) in self.knows


def tag(instance: str) -> str:
    """A short name of `instance` in others' `knows` (eight hex digits: about 50 fit in one
    custom_metadata value)."""
    return hashlib.sha256(instance.encode()).hexdigest()[:8]


def announcement(
    now: datetime, check_interval_seconds: float, known: Iterable[str] = ()
) -> dict[str, str]:
    """This instance's announcement (custom_metadata) as of `now`, naming the instances it
    knows of (`known`; as many as fit in one value: one left out waits its whole lease)."""
    tags = ""
    for each in sorted({tag(instance) for instance in known}):
        if len(tags) + len(each) + 1 > MAX_VALUE_BYTES:
            break
        tags = f"{tags},{each}" if tags else each
    return {
        "until": format_time(now + lease(check_interval_seconds)),
        "check_interval_seconds": f"{check_interval_seconds:g}",
        "knows": tags or NOBODY,
    }


def live_peers(
    announcements: Mapping[str, Mapping[str, str]], me: str, now: datetime
) -> tuple[Peer, ...]:
    """The other instances whose lease has not ended, by id. An unreadable announcement, or one
    whose lease ends further ahead than any rotator writes (`MAX_LEASE`), does not count."""
    found = []
    for instance, record in sorted(announcements.items()):
        if instance == me:
            continue
        try:
            until = parse_time(str(record.get("until", "")))
            interval = float(record.get("check_interval_seconds", ""))
        except ValueError:
            continue
        if now < until <= now + MAX_LEASE and 0 < interval <= MAX_CHECK_INTERVAL:
            knows = frozenset(str(record.get("knows", "")).split(",")) - {"", NOBODY}
            found.append(Peer(instance, until, interval, knows))
    return tuple(found)


def unaware(peers: Iterable[Peer], me: str) -> tuple[Peer, ...]:
    """The peers whose last announcement does not know of `me` yet (they may not claim)."""
    return tuple(peer for peer in peers if not peer.knows_of(me))


def newcomer_wait(peers: Iterable[Peer], me: str, now: datetime) -> datetime | None:
    """Until when a newcomer that found `peers` at its start refreshes nothing, at the most:
    one lease of the slowest of those that do not know of it yet, by when each has run a check
    since and does. None when every one already knows of it (or it found nobody). The wait
    ends sooner once they all do (`unaware`, at the newcomer's checks)."""
    leases = [lease(peer.check_interval_seconds) for peer in unaware(peers, me)]
    return now + max(leases) if leases else None


def preferred(name: str, instances: Iterable[str]) -> str | None:
    """The instance that refreshes `name` first (rendezvous hashing: every instance that knows
    the same live set agrees, and a departure moves only the departed one's tokens)."""
    return max(instances, key=lambda instance: _score(instance, name), default=None)


def deference(check_interval_seconds: float) -> timedelta:
    """How much later a token's other instances schedule its routine refresh than the preferred
    one: one lease, so that their checks have seen its new version by then."""
    return lease(check_interval_seconds)


def _score(instance: str, name: str) -> bytes:
    return hashlib.sha256(f"{instance}\n{name}".encode()).digest()


def key_safe(text: str) -> str:
    """`text` as part of a KV key: anything but letters, digits, `.`, `_` and `-` becomes `-`."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)


@dataclass(frozen=True)
class Team:
    """What one instance knows of the others, as its last look at the registry showed."""

    me: str
    others: tuple[str, ...] | None = None  # None: unknown, so claim everything
    wait_until: datetime | None = None  # a newcomer's wait (`newcomer_wait`)
    defer: timedelta = timedelta(0)  # `deference` for tokens another instance prefers
    waited_for: frozenset[str] = field(default=frozenset())  # peers a wait was started for

    def met(self, found: Iterable[Peer], now: datetime, defer: timedelta) -> Team:
        """This team after a look at the registry that found `found` live. A peer that does
        not know of this instance yet (`unaware`) may refresh without claiming, so this one
        waits (`newcomer_wait`): for each such peer once, one lease at the most, and no longer
        than until every live peer knows of it."""
        found = tuple(found)
        unknowing = unaware(found, self.me)
        strangers = tuple(peer for peer in unknowing if peer.instance not in self.waited_for)
        wait_until = self.wait_until if unknowing else None
        if wait_until is not None and wait_until <= now:
            wait_until = None
        new_wait = newcomer_wait(strangers, self.me, now)
        if new_wait is not None:
            wait_until = new_wait if wait_until is None else max(wait_until, new_wait)
        return replace(
            self,
            others=tuple(peer.instance for peer in found),
            wait_until=wait_until,
            defer=defer,
            waited_for=self.waited_for | {peer.instance for peer in strangers},
        )

    @property
    def claims(self) -> bool:
        """Whether refreshes claim: unless this instance knows it is alone."""
        return self.others is None or bool(self.others)

    def deference_for(self, name: str) -> timedelta:
        """How much later than planned this instance refreshes `name` (routinely)."""
        if not self.others or preferred(name, (*self.others, self.me)) == self.me:
            return timedelta(0)
        return self.defer
