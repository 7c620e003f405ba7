"""The instance registry's rules: rotator.peers, pure. Who is live, how long a newcomer waits,
which instance a token prefers, and what a team claims and defers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from rotator.peers import (
    MAX_LEASE,
    Peer,
    Team,
    announcement,
    deference,
    key_safe,
    lease,
    live_peers,
    newcomer_wait,
    preferred,
    tag,
    unaware,
)
from rotator.records import OutputMetadata
from rotator.tokens import format_time

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def test_an_announcement_lasts_two_checks_and_some_slack() -> None:
    assert lease(60) == timedelta(seconds=130)
    assert announcement(T0, 60) == {
        "until": "2026-12-01T12:02:10Z",
        "check_interval_seconds": "60",
        "knows": "-",
    }


def test_an_announcement_names_whom_its_author_knows_of_as_far_as_vault_takes() -> None:
    known = announcement(T0, 60, ["b", "a", "a"])["knows"]
    crowd = announcement(T0, 60, [f"host-{index}" for index in range(80)])["knows"]

    assert known == ",".join(sorted({tag("a"), tag("b")}))
    assert len(tag("a")) == 8 and tag("a") != tag("b")
    assert len(crowd.encode()) <= 512 and len(crowd.split(",")) == 57


def test_live_peers_are_the_others_whose_lease_has_not_ended() -> None:
    announcements = {
        "me": announcement(T0, 60),
        "b": announcement(T0, 30),
        "lapsed": announcement(T0 - timedelta(minutes=10), 60),
    }

    found = live_peers(announcements, "me", T0)

    assert found == (Peer("b", T0 + lease(30), 30.0),)


def test_unreadable_or_impossible_announcements_do_not_count() -> None:
    far = format_time(T0 + MAX_LEASE + timedelta(hours=1))
    announcements = {
        "no-until": {"check_interval_seconds": "60"},
        "bad-until": {"until": "soon", "check_interval_seconds": "60"},
        "bad-interval": {
            "until": format_time(T0 + timedelta(minutes=1)),
            "check_interval_seconds": "x",
        },
        "zero-interval": {
            "until": format_time(T0 + timedelta(minutes=1)),
            "check_interval_seconds": "0",
        },
        "far-ahead": {"until": far, "check_interval_seconds": "60"},
    }

    assert live_peers(announcements, "me", T0) == ()


def test_a_peer_knows_of_the_instances_its_announcement_names() -> None:
    announcements = {
        "b": announcement(T0, 60, ["me"]),
        "c": announcement(T0, 60, ["b"]),
        "d": {**announcement(T0, 60), "knows": ""},
    }

    found = live_peers(announcements, "me", T0)

    assert [peer.knows_of("me") for peer in found] == [True, False, False]
    assert unaware(found, "me") == found[1:]
    assert found[2].knows == frozenset()


def test_a_newcomer_waits_one_lease_of_the_slowest_unknowing_peer_or_not_at_all() -> None:
    knowing = Peer("k", T0, 300.0, frozenset({tag("me")}))
    peers = (Peer("a", T0, 10.0), Peer("b", T0, 60.0), knowing)

    assert newcomer_wait(peers, "me", T0) == T0 + lease(60)
    assert newcomer_wait((knowing,), "me", T0) is None
    assert newcomer_wait((), "me", T0) is None


def test_a_team_waits_for_a_peer_that_does_not_know_of_it_until_it_does() -> None:
    stranger = Peer("a", T0, 60.0)
    team = Team("me", others=None).met([stranger], T0, deference(60))

    assert team.others == ("a",) and team.wait_until == T0 + lease(60)
    assert team.defer == deference(60) and team.waited_for == {"a"}
    # Still unknown a check later: the wait stands, not extended.
    later = team.met([stranger], T0 + timedelta(seconds=60), deference(60))
    assert later.wait_until == T0 + lease(60)
    # Known: the wait is over at once.
    aware = Peer("a", T0, 60.0, frozenset({tag("me")}))
    assert team.met([aware], T0 + timedelta(seconds=61), deference(60)).wait_until is None


def test_a_team_waits_for_each_peer_once_and_at_most_one_lease() -> None:
    stranger = Peer("a", T0, 60.0)
    team = Team("me").met([stranger], T0, deference(60))
    after = T0 + lease(60) + timedelta(seconds=1)

    lapsed = team.met([stranger], after, deference(60))
    assert lapsed.wait_until is None  # waited for `a` once: no second wait
    # A new stranger extends a running wait, or starts one.
    other = Peer("b", T0, 120.0)
    extended = team.met([stranger, other], T0 + timedelta(seconds=5), deference(60))
    assert extended.wait_until == T0 + timedelta(seconds=5) + lease(120)
    assert lapsed.met([stranger, other], after, deference(60)).wait_until == after + lease(120)
    assert extended.waited_for == {"a", "b"}


def test_every_instance_agrees_on_the_preferred_one_and_tokens_spread() -> None:
    instances = ["host-a.1.aa", "host-b.2.bb", "host-c.3.cc"]
    names = [f"acme/token-{index}" for index in range(300)]

    first = {name: preferred(name, instances) for name in names}
    shuffled = {name: preferred(name, list(reversed(instances))) for name in names}
    spread = Counter(first.values())

    assert first == shuffled
    assert set(spread) == set(instances) and min(spread.values()) > 60
    assert preferred("acme/x", []) is None


def test_a_departure_moves_only_the_departed_instances_tokens() -> None:
    instances = ["a", "b", "c"]
    names = [f"t{index}" for index in range(200)]

    before = {name: preferred(name, instances) for name in names}
    after = {name: preferred(name, ["a", "b"]) for name in names}

    assert all(after[name] == before[name] for name in names if before[name] != "c")


def test_alone_a_team_claims_nothing_and_defers_nothing() -> None:
    alone = Team("me", others=())

    assert not alone.claims
    assert alone.deference_for("acme/x") == timedelta(0)


def test_not_knowing_who_else_runs_means_claiming_everything() -> None:
    unknown = Team("me")

    assert unknown.claims and unknown.deference_for("acme/x") == timedelta(0)


def test_among_others_a_team_claims_and_defers_what_another_instance_prefers() -> None:
    team = Team("me", others=("other",), defer=deference(60))
    names = [f"t{index}" for index in range(50)]

    deferred = {name for name in names if team.deference_for(name)}
    mine = {name for name in names if preferred(name, ["me", "other"]) == "me"}

    assert team.claims
    assert deferred == set(names) - mine and deferred and mine
    assert {team.deference_for(name) for name in deferred} == {lease(60)}


def test_instance_ids_become_safe_kv_keys() -> None:
    assert key_safe("ops-01.example.com") == "ops-01.example.com"
    assert key_safe("host:1/ä b") == "host-1---b"


def test_listed_metadata_knows_the_recorded_issue_time() -> None:
    metadata = OutputMetadata(1, {"issued_at": "2026-12-01T12:00:00Z"}, ())

    assert metadata.issued_at == T0
    assert OutputMetadata(1, {}, ()).issued_at is None
