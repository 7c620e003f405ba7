"""Several `rotator run` against one Vault behave like one: each token is exchanged once per
refresh period in total, and when an instance dies the others carry on."""

from __future__ import annotations

import time
from pathlib import Path

from rotator.dev.devvault import free_port
from tests.e2e.conftest import Rig, remaining_seconds, sample, scrape
from tests.waiting import stop_process, wait_for

LIFETIME = 10  # seconds: a refresh about every 7.5-8 s


def _exchanged(listen: str, names: list[str]) -> float:
    """Successful exchanges the instance at `listen` made, over all `names`."""
    page = scrape(listen)
    counts = [sample(page, "rotator_exchanges_total", token=n, result="success") for n in names]
    return sum(count or 0 for count in counts)


def test_two_instances_exchange_each_token_once_per_period_and_survive_one_dying(
    rig: Rig, tmp_path: Path
) -> None:
    rig.idp.lifetime_seconds = LIFETIME
    listens = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    configs = [tmp_path / "a.toml", tmp_path / "b.toml"]
    for config, listen in zip(configs, listens, strict=True):
        rig.write_config(
            config,
            schedule={"check_interval_seconds": 2, "discovery_interval_seconds": 5},
            # ~45 s of 10 s tokens is 6-7 issuances: above the default cap of 6 per hour.
            alerts={"max_issuances_per_hour": 100},
            metrics={"listen": listen},
        )
    names = [f"fleet/token-{index}" for index in range(6)]
    for name in names:
        rig.add_token(name)
    first, second = (
        rig.start("run", log=tmp_path / f"{config.stem}.log", config=config) for config in configs
    )
    try:
        wait_for(lambda: all(rig.output(n) for n in names), 20, "first outputs")
        started = time.monotonic()
        while time.monotonic() - started < 24:
            for name in names:
                fields = rig.output(name)
                assert fields is not None and remaining_seconds(fields) > 0, name
            time.sleep(0.5)
        # One instance alone would issue about 1 + 24 / 7.75 ≈ 4 per token; two uncoordinated
        # instances would issue twice that.
        for name in names:
            assert rig.issued(name) <= 5, (name, rig.issued(name))
        assert all(_exchanged(listen, names) > 0 for listen in listens), (
            "one instance did all the work"
        )

        first.kill()  # no goodbye: its claims must lapse by themselves
        first.wait(timeout=10)
        issued_before = {name: rig.issued(name) for name in names}
        later = time.monotonic()
        while time.monotonic() - later < 2 * LIFETIME:
            for name in names:
                fields = rig.output(name)
                assert fields is not None and remaining_seconds(fields) > 0, name
            time.sleep(0.5)
        for name in names:
            assert rig.issued(name) > issued_before[name], f"{name} was not taken over"
    finally:
        stop_process(first)
        assert stop_process(second) == 0
