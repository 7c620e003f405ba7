"""Fault drills (issue 5): `rotator run` as a subprocess while the IdP misbehaves, Vault is sealed,
stopped and restarted, rotator's own Vault token is revoked, and the daemon is SIGKILLed at random
moments.

The promise under test (README, "Failure behaviour"): while Vault and the IdP are healthy every
read of an output secret returns a valid token; during an outage nothing invalid is ever written
(every KV version is the previous good token or a new good one: a JWT the stand-in issued, not yet
expired when it was written), the daemon stays up, the alerts SPEC names fire (`exchange_failed`
after 3 failures in a row, `vault_unavailable` after 2 failed checks), and within about one check
interval of recovery everything is fresh again and the alerts resolve.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from rotator.dev.devvault import DevVault, PersistentVault, free_port
from rotator.dev.standin import LeanIXStandIn
from rotator.records import output_key
from rotator.tokens import AccessToken, decode_jwt_claims, parse_output, parse_time
from rotator.vault import VaultStore
from tests.e2e.conftest import ROTATOR, Rig, _toml, approle_dev_vault, looked_at
from tests.sinks import RecordingServer
from tests.waiting import alive, stop_process, wait_for

LIFETIME = 8  # seconds: refreshed about every 6.1-6.4 s
REFRESH_FRACTION = 0.8
FRESH_SECONDS = LIFETIME * (1 - REFRESH_FRACTION)  # what a consumer may always count on
TIMEOUT = 1  # exchange.timeout_seconds
MAX_BACKOFF = 2  # retries every 1-2 s, so recovery is quick
TOKENS = ("acme/prod", "acme/sandbox")


# --- helpers --------------------------------------------------------------------------------------


class Audit:
    """Reads output secrets the way a consumer does and checks every version it sees: the data
    parses as rotator's output, `access_token` is a three-part JWT the stand-in issued (and not one
    issued while the IdP misbehaved), and `expires_at` was in the future when the version was
    written."""

    def __init__(self, root: hvac.Client, output_prefix: str, idp: LeanIXStandIn) -> None:
        self.root = root
        self.output_prefix = output_prefix
        self.idp = idp
        self.poisoned: set[str] = set()  # jti of tokens issued during a fault: never to be stored

    def current(self, name: str) -> AccessToken | None:
        """The output's current version, checked; None while there is none."""
        try:
            response = self.root.secrets.kv.v2.read_secret_version(
                self._path(name), mount_point="secret", raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = response["data"]
        metadata = data["metadata"]
        return self._check(
            f"{name} v{metadata['version']}", data["data"], parse_time(metadata["created_time"])
        )

    def every_version(self, name: str) -> list[AccessToken]:
        """Every KV version of the output, oldest first, each checked."""
        kv = self.root.secrets.kv.v2
        path = self._path(name)
        versions = kv.read_secret_metadata(path, mount_point="secret")["data"]["versions"]
        assert versions, f"{name}: no versions"
        checked = []
        for version in sorted(versions, key=int):
            response = kv.read_secret_version(
                path, version=int(version), mount_point="secret", raise_on_deleted_version=True
            )
            data = response["data"]
            created = parse_time(data["metadata"]["created_time"])
            checked.append(self._check(f"{name} v{version}", data["data"], created))
        return checked

    def poison(self, start: int, end: int) -> None:
        """Mark the tokens the stand-in issued between its `start`-th and `end`-th issuance (while
        it misbehaved) as never to be stored."""
        self.poisoned.update(record.jti for record in self.idp.issued[start:end])

    def _check(self, where: str, data: dict[str, Any], created: datetime) -> AccessToken:
        try:
            token = parse_output(data)
        except ValueError as exc:
            raise AssertionError(f"{where}: not an output rotator writes ({exc})") from None
        parts = token.access_token.split(".")
        assert len(parts) == 3 and all(parts), f"{where}: access_token is not a three-part JWT"
        claims = decode_jwt_claims(token.access_token)
        issued = {record.jti: record for record in self.idp.issued}
        record = issued.get(claims.get("jti", ""))
        assert record is not None, f"{where}: a token the stand-in never issued"
        assert record.jti not in self.poisoned, f"{where}: a token issued during a fault"
        assert claims["exp"] == record.exp, f"{where}: exp differs from what was issued"
        assert token.expires_at <= datetime.fromtimestamp(record.exp, UTC), where
        assert token.expires_at > created, f"{where}: already expired when it was written"
        assert token.token_type == "bearer" and token.expires_in > 0, where
        return token

    def _path(self, name: str) -> str:
        return f"{self.output_prefix}/{name}"


def _left(token: AccessToken | None) -> float:
    if token is None:
        return float("-inf")
    return (token.expires_at - datetime.now(UTC)).total_seconds()


def _events(
    webhook: RecordingServer, kind: str, token: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    return [
        body
        for body in webhook.bodies()
        if body.get("alert") == kind
        and (token is None or body.get("token") == token)
        and (status is None or body.get("status") == status)
    ]


def _configure(rig: Rig, webhook: RecordingServer | None = None, **sections: Any) -> None:
    """Short intervals, a cap that never bites, and the webhook as the alert sink."""
    rig.idp.lifetime_seconds = LIFETIME
    alerts: dict[str, Any] = {"max_issuances_per_hour": 1000}
    if webhook is not None:
        alerts["webhook_urls"] = [webhook.url]
    config: dict[str, dict[str, Any]] = {
        "schedule": {"check_interval_seconds": 1, "discovery_interval_seconds": 2},
        "exchange": {"timeout_seconds": TIMEOUT, "max_backoff_seconds": MAX_BACKOFF},
        "alerts": alerts,
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    rig.write_config(**config)


def _healthz(listen: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _all_fresh(audit: Audit, names: tuple[str, ...], old: dict[str, str] | None = None) -> bool:
    """Every output valid with at least the promised share of its lifetime left (and, with
    `old`, replaced since)."""
    for name in names:
        token = audit.current(name)
        if token is None or _left(token) <= FRESH_SECONDS:
            return False
        if old is not None and token.access_token == old[name]:
            return False
    return True


# --- 1. the IdP misbehaves ------------------------------------------------------------------------

IDP_FAULTS = [
    pytest.param("status", {"status": 500}, id="status-500"),
    pytest.param("status", {"status": 429, "retry_after": "2"}, id="status-429-retry-after"),
    pytest.param("garbage", {}, id="garbage-body"),
    pytest.param("no_access_token", {}, id="no-access-token"),
    pytest.param("expired", {}, id="expired-true"),
    pytest.param("hang", {"seconds": TIMEOUT + 2}, id="hang-past-timeout"),
    pytest.param("close", {}, id="connection-closed"),
]


@pytest.mark.parametrize(("mode", "params"), IDP_FAULTS)
def test_an_idp_fault_keeps_the_last_good_token_alerts_and_recovers(
    rig: Rig, tmp_path: Path, webhook: RecordingServer, mode: str, params: dict[str, Any]
) -> None:
    _configure(rig, webhook)
    api_tokens = {name: rig.add_token(name) for name in TOKENS}
    audit = Audit(rig.space.root, rig.space.output_prefix, rig.idp)

    with rig.running(tmp_path / "run.log") as process:
        wait_for(alive(process, lambda: _all_fresh(audit, TOKENS)), 20, "the first outputs")
        good = {name: audit.current(name) for name in TOKENS}
        before = {name: token.access_token for name, token in good.items() if token}
        requests_before = {name: rig.idp.requests_for(api_tokens[name]) for name in TOKENS}
        issued_before = len(rig.idp.issued)
        rig.idp.set_fault(mode, **params)
        fault_started = time.monotonic()

        # The fault lasts until exchange_failed fired for both tokens: one refresh period
        # (~6 s) plus three failed attempts 1-2 s apart. Meanwhile every read is the last good
        # token; it may expire during the fault (8 s tokens), but is never replaced.
        deadline = fault_started + 30
        while not all(_events(webhook, "exchange_failed", name, "firing") for name in TOKENS):
            assert time.monotonic() < deadline, "exchange_failed did not fire for both tokens"
            assert process.poll() is None, "the daemon died during the IdP fault"
            for name in TOKENS:
                token = audit.current(name)
                assert token is not None and token.access_token == before[name], (
                    f"{name}: the output changed while every exchange failed"
                )
            time.sleep(0.2)
        fault_seconds = time.monotonic() - fault_started
        issued_during = len(rig.idp.issued)
        rig.idp.clear_faults()
        audit.poison(issued_before, issued_during)
        cleared = time.monotonic()

        for name in TOKENS:
            attempts = rig.idp.requests_for(api_tokens[name]) - requests_before[name]
            # At least the three failures that fired the alert; with retries 1-2 s apart (plus
            # the timeout of a hung request), never a tight loop.
            assert 3 <= attempts <= 3 + fault_seconds / 1.0, (name, attempts, fault_seconds)
            firing = _events(webhook, "exchange_failed", name, "firing")
            assert len(firing) == 1, firing
            assert "3 attempts in a row" in firing[0]["summary"], firing[0]["summary"]

        wait_for(
            alive(process, lambda: _all_fresh(audit, TOKENS, before)),
            10,
            "fresh tokens after the IdP recovered",
        )
        recovered = time.monotonic() - cleared
        wait_for(
            alive(
                process,
                lambda: all(_events(webhook, "exchange_failed", n, "resolved") for n in TOKENS),
            ),
            10,
            "exchange_failed to resolve",
        )

    # Retries are at most max_backoff apart (plus a hung request's timeout and a second of
    # scheduling), so recovery takes about one retry interval.
    assert recovered < MAX_BACKOFF + TIMEOUT + 4, recovered
    for name in TOKENS:
        versions = audit.every_version(name)  # each one valid, none issued during the fault
        assert versions[-1].access_token != before[name]
    text = (tmp_path / "run.log").read_text()
    assert "exchange failed" in text
    for secret in [*api_tokens.values(), *before.values()]:
        assert secret not in text, "a token value reached the daemon's log"


# --- 2. Vault sealed mid-run ----------------------------------------------------------------------


def test_a_sealed_vault_keeps_the_daemon_up_alerts_and_recovers_after_unseal(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    vault = rig.space.vault
    assert vault.unseal_key, "the dev server's unseal key was not captured"
    listen = f"127.0.0.1:{free_port()}"
    # A long backoff cap: recovery must come from the first good check (Vault is back, every
    # failing token is looked at at once), not from backoffs running out.
    _configure(rig, webhook, metrics={"listen": listen}, exchange={"max_backoff_seconds": 120})
    # Four tokens: each is another chance for a retry to be looked at early after the unseal.
    names = (*TOKENS, "team-b/reporting", "team-b/billing")
    for name in names:
        rig.add_token(name)
    audit = Audit(rig.space.root, rig.space.output_prefix, rig.idp)
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(alive(process, lambda: _all_fresh(audit, names)), 20, "the first outputs")
        requests_sealed = rig.idp.requests_total
        # The dev server keeps its data in memory across seal and unseal. It is shared by the
        # whole session (tests run one at a time): it must be unsealed whatever happens here.
        vault.cli("operator", "seal")
        try:
            sealed = time.monotonic()
            wait_for(
                alive(process, lambda: _events(webhook, "vault_unavailable", None, "firing")),
                10,
                "vault_unavailable to fire",
            )
            # Stay sealed past a refresh time (tokens come due ~6 s after issuance) and at least
            # three failed attempts at it (1-2 s apart). The daemon keeps running its checks, so
            # /healthz stays 200.
            while time.monotonic() - sealed < LIFETIME + 4:
                assert process.poll() is None, "the daemon died while Vault was sealed"
                assert _healthz(listen) == 200
                # Nothing reaches the IdP while Vault cannot even be read.
                assert rig.idp.requests_total == requests_sealed
                time.sleep(0.5)
        finally:
            vault.cli("operator", "unseal", vault.unseal_key)
        unsealed = time.monotonic()
        wait_for(vault.is_healthy, 10, "the dev server to be unsealed")
        wait_for(
            alive(process, lambda: _all_fresh(audit, names)),
            6,  # one check interval (1 s) plus an exchange, with room for a loaded machine
            "fresh tokens after the unseal",
        )
        recovered = time.monotonic() - unsealed
        wait_for(
            alive(process, lambda: _events(webhook, "vault_unavailable", None, "resolved")),
            10,
            "vault_unavailable to resolve",
        )
        assert _healthz(listen) == 200

    assert recovered < MAX_BACKOFF + 4, recovered
    firing = _events(webhook, "vault_unavailable", None, "firing")
    assert len(firing) == 1 and firing[0]["severity"] == "critical", firing
    assert "token" not in firing[0]
    text = log.read_text()
    for name in names:
        audit.every_version(name)
        failed = re.findall(rf"token {name}: .*Vault is unavailable", text)
        # Retried while sealed (5 s, then 10 s backoff over ~12 s), not hammered.
        assert 2 <= len(failed) <= 4, f"{name}: {len(failed)} failed attempts while sealed"
    # A Vault outage is not an IdP failure, not even when retries come due after it.
    assert not _events(webhook, "exchange_failed"), _events(webhook, "exchange_failed")


# --- 3. Vault stopped and restarted ---------------------------------------------------------------


def test_vault_stopped_and_restarted_keeps_the_daemon_up_and_recovers(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    with PersistentVault() as vault:
        root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
        api_tokens = {}
        for name in TOKENS:
            api_tokens[name] = "api-" + secrets.token_urlsafe(24)
            rig.idp.add_token(api_tokens[name])
            root.secrets.kv.v2.create_or_update_secret(
                f"{rig.space.source_prefix}/{name}",
                secret={"api_token": api_tokens[name], "token_url": rig.idp.token_url},
                mount_point="secret",
            )
        _configure(rig, webhook, vault={"addr": vault.addr})
        audit = Audit(root, rig.space.output_prefix, rig.idp)
        log = tmp_path / "run.log"
        try:
            with rig.running(log, env={"VAULT_TOKEN": vault.root_token}) as process:
                wait_for(alive(process, lambda: _all_fresh(audit, TOKENS)), 20, "the first outputs")
                # Stop Vault ~1.5 s before the tokens come due, so a refresh falls in the outage.
                wait_for(
                    alive(process, lambda: all(_left(audit.current(n)) < 3.5 for n in TOKENS)),
                    10,
                    "the tokens to near their refresh",
                )
                vault.stop()
                stopped = time.monotonic()
                wait_for(
                    alive(process, lambda: _events(webhook, "vault_unavailable", None, "firing")),
                    10,
                    "vault_unavailable to fire",
                )
                # Down for 5 s (the alert fired within it): the daemon lives on.
                while time.monotonic() - stopped < 5:
                    assert process.poll() is None, "the daemon died while Vault was down"
                    time.sleep(0.25)
                vault.start()  # same port, same data; unsealed again
                restarted = time.monotonic()
                wait_for(
                    alive(process, lambda: _all_fresh(audit, TOKENS)),
                    10,
                    "fresh tokens after Vault came back",
                )
                recovered = time.monotonic() - restarted
                wait_for(
                    alive(process, lambda: _events(webhook, "vault_unavailable", None, "resolved")),
                    10,
                    "vault_unavailable to resolve",
                )
            for name in TOKENS:
                audit.every_version(name)
        finally:
            root.adapter.close()

    assert recovered < MAX_BACKOFF + 4, recovered
    text = log.read_text()
    assert "cannot connect to Vault" in text  # connection refused while it was stopped
    assert not _events(webhook, "exchange_failed"), _events(webhook, "exchange_failed")
    for secret in api_tokens.values():
        assert secret not in text


# --- 4. SIGKILL at random moments -----------------------------------------------------------------

KILL_SEED = 3
KILLS = 5


def _kill_point(rig: Rig, store: VaultStore, names: tuple[str, ...], pid: int) -> str:
    """Where a SIGKILL of process `pid` landed, as Vault shows it (for failure messages)."""
    found = []
    now = datetime.now(UTC)
    for name in names:
        current = store.read_output(name)
        if current is not None and current.custom_metadata.get("expires_at") != current.data.get(
            "expires_at"
        ):
            found.append(f"{name}: between writing a token and its metadata")
        try:
            claim = rig.space.root.secrets.kv.v2.read_secret_version(
                f"rotator-claims/{rig.space.output_prefix}/{name}",
                mount_point="secret",
                raise_on_deleted_version=True,
            )["data"]["data"]
        except hvac.exceptions.InvalidPath:
            continue
        if f".{pid}." in claim["owner"] and parse_time(claim["until"]) > now:
            found.append(f"{name}: holding its claim (an exchange under way)")
    return "; ".join(found) or "idle"


def test_sigkill_at_random_moments_never_leaves_a_bad_version_and_a_restart_issues_nothing(
    rig: Rig, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    _configure(rig, exchange={"timeout_seconds": 2}, metrics={"listen": listen})
    rig.idp.lifetime_seconds = 6  # a refresh every ~4.6 s per token: kills land mid-work
    rig.idp.latency_seconds = 0.5  # a slow IdP: kills often land with exchanges in flight
    names = tuple(f"fleet/token-{index}" for index in range(4))
    for name in names:
        rig.add_token(name)
    audit = Audit(rig.space.root, rig.space.output_prefix, rig.idp)
    store = rig.space.store()
    rng = random.Random(KILL_SEED)
    landed = []

    for run in range(KILLS):
        process = rig.start("run", log=tmp_path / f"run-{run}.log")
        try:
            if run == 0:
                wait_for(alive(process, lambda: _all_fresh(audit, names)), 20, "first outputs")
            # The kill moment itself is what is drawn at random: let the daemon work that long.
            time.sleep(rng.uniform(0.5, 4.0))
            assert process.poll() is None, f"run {run}: the daemon died by itself"
        finally:
            process.send_signal(signal.SIGKILL)
            code = process.wait(timeout=10)
        assert code == -signal.SIGKILL
        landed.append(_kill_point(rig, store, names, process.pid))
        for name in names:  # whatever was under way, the current version is a good one
            current = store.read_output(name)
            if current is not None:
                key = output_key(rig.api_tokens[name])
                assert current.written_by_rotator(key), (run, name, landed)
                audit.current(name)
    print("kills landed:", *landed, sep="\n  ")

    # Up again with long tokens until every output holds one, then killed once more, so that the
    # last restart has nothing to do. A claim held by a killed instance lapses after
    # 3 x timeout + 15 s (21 s here); until then its token waits, and may expire meanwhile.
    rig.idp.lifetime_seconds = 120
    process = rig.start("run", log=tmp_path / "run-final.log")
    try:
        wait_for(
            alive(process, lambda: all(_left(audit.current(n)) > 60 for n in names)),
            40,
            "every token replaced by a long-lived one",
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    requests_before = rig.idp.requests_total
    log = tmp_path / "restart.log"
    with rig.running(log) as process:
        wait_for(
            alive(process, lambda: looked_at(listen, names)),
            20,
            "each token's first look after the restart",
        )
        # Observe a little longer than a check interval and a discovery interval: nothing due.
        looked = time.monotonic()
        while time.monotonic() - looked < 2.5:
            assert rig.idp.requests_total == requests_before
            time.sleep(0.25)
    assert rig.idp.requests_total == requests_before, "a restart re-issued a valid token"

    for name in names:
        versions = audit.every_version(name)
        assert len(versions) >= 2, name
        current = store.read_output(name)
        key = output_key(rig.api_tokens[name])
        assert current is not None and current.written_by_rotator(key), name
        assert current.custom_metadata.get("written_by") == "rotator"
        assert current.data["access_token"] == versions[-1].access_token


# --- 5. rotator's own Vault token revoked ---------------------------------------------------------

SOURCES, OUTPUTS = "leanix/api-tokens", "leanix/access-tokens"  # the deploy policy's paths


@pytest.fixture
def approle_vault(tmp_path: Path) -> Iterator[tuple[DevVault, Path]]:
    """A fresh dev server after deploy/vault/bootstrap.sh, with a long token TTL so that only
    the revocation can end rotator's token."""
    credentials = tmp_path / "credentials"
    with approle_dev_vault(credentials, token_ttl="1h", token_max_ttl="24h") as vault:
        yield vault, credentials


def _revoke_rotator_tokens(root: hvac.Client) -> int:
    revoked = 0
    for accessor in root.auth.token.list_accessors()["data"]["keys"]:
        try:
            info = root.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.InvalidRequest:
            continue  # gone meanwhile
        if "rotator" in (info.get("policies") or []):
            root.auth.token.revoke_accessor(accessor)
            revoked += 1
    return revoked


def test_a_revoked_vault_token_is_replaced_by_a_new_login_at_once(
    approle_vault: tuple[DevVault, Path], tmp_path: Path, webhook: RecordingServer
) -> None:
    vault, credentials = approle_vault
    root = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
    lifetime = 10  # the next refresh is ~7.5 s after the first issuance
    with LeanIXStandIn(lifetime_seconds=lifetime) as idp:
        api_tokens = {}
        for name in TOKENS:
            api_tokens[name] = "api-" + secrets.token_urlsafe(24)
            idp.add_token(api_tokens[name])
            root.secrets.kv.v2.create_or_update_secret(
                f"{SOURCES}/{name}",
                secret={"api_token": api_tokens[name], "token_url": idp.token_url},
                mount_point="secret",
            )
        config = tmp_path / "rotator.toml"
        config.write_text(
            _toml(
                {
                    "vault": {"addr": vault.addr},
                    "vault.auth": {"method": "approle"},
                    "exchange": {
                        "allowed_hosts": ["127.0.0.1"],
                        "insecure_http_hosts": ["127.0.0.1"],
                        "timeout_seconds": TIMEOUT,
                        "max_backoff_seconds": MAX_BACKOFF,
                    },
                    "schedule": {"check_interval_seconds": 1, "discovery_interval_seconds": 2},
                    "alerts": {"max_issuances_per_hour": 1000, "webhook_urls": [webhook.url]},
                    "metrics": {"listen": ""},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        audit = Audit(root, OUTPUTS, idp)
        log = tmp_path / "run.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(ROTATOR), "run", "--config", str(config)],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(alive(process, lambda: _all_fresh(audit, TOKENS)), 20, "the first outputs")
            issued = {name: idp.issued_count(api_tokens[name]) for name in TOKENS}
            assert _revoke_rotator_tokens(root) >= 1, "rotator's token was not found"
            revoked = time.monotonic()
            # At once: the next check (1 s) finds the token refused, well before any token job
            # (the next refresh is ~7 s away) would stumble on it.
            wait_for(
                alive(
                    process,
                    lambda: (
                        "Vault refuses rotator's token; logging in again" in log.read_text()
                        or "logging in to Vault again" in log.read_text()
                    ),
                ),
                5,
                "a new AppRole login after the revocation",
            )
            relogin = time.monotonic() - revoked
            # Refreshes go on with the new token: each is issued anew at least once more, and
            # every read on the way is a valid token.
            deadline = time.monotonic() + 20
            while not all(idp.issued_count(api_tokens[n]) > issued[n] for n in TOKENS):
                assert time.monotonic() < deadline, "refreshes stopped after the revocation"
                assert process.poll() is None, "the daemon died"
                for name in TOKENS:
                    assert _left(audit.current(name)) > 0, (
                        f"{name}: a consumer read an expired token"
                    )
                time.sleep(0.25)
            wait_for(
                alive(process, lambda: _all_fresh(audit, TOKENS)),
                10,
                "fresh tokens stored with the new login",
            )
        finally:
            code = stop_process(process)
            root.adapter.close()

    assert code == 0
    assert relogin < 5
    # A revocation answered by a new login at once is not an outage worth paging for.
    assert not _events(webhook, "vault_unavailable"), _events(webhook, "vault_unavailable")
    text = log.read_text()
    for secret in api_tokens.values():
        assert secret not in text
