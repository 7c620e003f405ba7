"""Who else rotates these tokens: the instance registry's rules. Pure: no I/O.

Every daemon announces itself under `<mount>/rotator-instances/<output_prefix>/<id>` (a
metadata-only KV entry, written at each check, `vault.VaultStore.announce_instance`) with a
lease, and reads the others' announcements at the same time. What follows from them:

- **Claims only when there is someone to claim against.** With no other live instance, a
  refresh skips the per-token claim (three requests: read, take, release); check-and-set on
  the output still guarantees that no write is ever lost.
- **A newcomer waits one lease** (`newcomer_wait`) before it refreshes anything when it finds
  others running: by then each of them has run a check, seen the newcomer, and claims again.
  Two instances starting at once both see each other, or one sees the other and waits. The wait
  holds back routine refreshes only, and never past a third of the time between a token's
  refresh time and its expiry (`plan.py`); a missing or expired output is refreshed at once.
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
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.tokens import MAX_CLOCK_SKEW, format_time, parse_time

LEASE_SLACK = timedelta(seconds=10)
MAX_CHECK_INTERVAL = 86400.0  # the config's bound on schedule.check_interval_seconds


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


def announcement(now: datetime, check_interval_seconds: float) -> dict[str, str]:
    """This instance's announcement (custom_metadata) as of `now`."""
    return {
        "until": format_time(now + lease(check_interval_seconds)),
        "check_interval_seconds": f"{check_interval_seconds:g}",
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
            found.append(Peer(instance, until, interval))
    return tuple(found)


def newcomer_wait(peers: Iterable[Peer], now: datetime) -> datetime | None:
    """Until when a newcomer that found `peers` at its start refreshes nothing: one lease of the
    slowest of them, so that each has run a check since and knows of the newcomer. None when
    it found nobody."""
    leases = [lease(peer.check_interval_seconds) for peer in peers]
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

    @property
    def claims(self) -> bool:
        """Whether refreshes claim: unless this instance knows it is alone."""
        return self.others is None or bool(self.others)

    def deference_for(self, name: str) -> timedelta:
        """How much later than planned this instance refreshes `name` (routinely)."""
        if not self.others or preferred(name, (*self.others, self.me)) == self.me:
            return timedelta(0)
        return self.defer
