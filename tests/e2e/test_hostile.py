"""Hostile and malformed source secrets next to a good one, in one `rotator run`: nothing is sent
anywhere for a bad source (listeners at the URLs they name see no connection at all), the good
token keeps refreshing, every bad one is reported by name and field, and no API token value
reaches the log, `rotator status`, an alert or an output. Also an IdP that answers 200 with an
access token that is not a JWT: nothing is written, and `exchange_failed` fires after 3 attempts.
"""

from __future__ import annotations

import json
import secrets
import socketserver
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import hvac.exceptions

from rotator.dev.devvault import free_port
from rotator.sources import LEANIX_TOKEN_PATH
from tests.e2e.conftest import Rig
from tests.e2e.test_faults import Audit, _configure, _events, _healthz, _left
from tests.sinks import RecordingServer
from tests.waiting import alive, wait_for

GOOD = "good/token"
NOT_JWT = "idp/not-a-jwt"


class Trap:
    """A TCP listener that counts every connection made to it: a destination that must never
    be contacted, whatever the protocol."""

    def __init__(self, host: str) -> None:
        trap = self
        self.connections = 0
        self._lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with trap._lock:
                    trap.connections += 1

        self._server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _secret(tag: str) -> str:
    return f"api-{tag}-" + secrets.token_urlsafe(24)


def test_hostile_sources_send_nothing_anywhere_leak_nothing_and_spare_the_good_token(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    # 127.0.0.2 is not in the allowlist at all; 127.0.0.3 is allowed, but only over https.
    allowed = ["127.0.0.1", "127.0.0.3", "*.leanix.net"]
    _configure(rig, webhook, exchange={"allowed_hosts": allowed})
    with Trap("127.0.0.1") as local, Trap("127.0.0.2") as other, Trap("127.0.0.3") as https_only:
        good_api_token = rig.add_token(GOOD)
        not_jwt_api_token = rig.add_token(NOT_JWT)
        rig.idp.set_fault("not_jwt", api_token=not_jwt_api_token)

        listed = [_secret("list-a"), _secret("list-b")]
        huge = "h" * (1024 * 1024 - 16) + secrets.token_hex(8)
        unicode = "tökén-ünïcødé-" + secrets.token_urlsafe(16)
        userinfo_token = _secret("userinfo")
        url = rig.idp.token_url
        # name -> (source secret, what the error must name)
        hostile: dict[str, tuple[dict[str, Any], str]] = {
            "src/missing-api-token": ({"token_url": url}, "field 'api_token' is missing"),
            "src/api-token-int": (
                {"api_token": 918273645546372819, "token_url": url},
                "field 'api_token' must be a string, not int",
            ),
            "src/api-token-list": (
                {"api_token": listed, "token_url": url},
                "field 'api_token' must be a string, not list",
            ),
            "src/api-token-huge": (
                {"api_token": huge, "token_url": url},
                "field 'api_token' is longer than",
            ),
            "src/api-token-unicode": (
                {"api_token": unicode, "token_url": url},
                "field 'api_token' holds characters other than printable ASCII",
            ),
            "host/evil-suffix": (
                {"api_token": _secret("evil"), "host": "acme.leanix.net.evil.com"},
                "field 'host'",
            ),
            "host/port": (
                {"api_token": _secret("port"), "host": "acme.leanix.net:8443"},
                "field 'host' must be a bare hostname",
            ),
            "host/path": (
                {"api_token": _secret("path"), "host": f"acme.leanix.net{LEANIX_TOKEN_PATH}"},
                "field 'host' must be a bare hostname",
            ),
            "host/userinfo": (
                # Someone pasted credentials into the host: never to be echoed anywhere.
                {"api_token": userinfo_token, "host": f"apitoken:{userinfo_token}@acme.leanix.net"},
                "field 'host' must be a bare hostname",
            ),
            "host/scheme": (
                {"api_token": _secret("scheme"), "host": "https://acme.leanix.net"},
                "field 'host' must be a bare hostname",
            ),
            "url/plain-http": (
                {
                    "api_token": _secret("plain-http"),
                    "token_url": f"http://127.0.0.3:{https_only.port}{LEANIX_TOKEN_PATH}",
                },
                "field 'token_url'",
            ),
            "url/other-loopback": (
                {
                    "api_token": _secret("other-loopback"),
                    "token_url": f"http://127.0.0.2:{other.port}{LEANIX_TOKEN_PATH}",
                },
                "field 'token_url'",
            ),
            "url/localhost": (
                {
                    "api_token": _secret("localhost"),
                    "token_url": f"http://localhost:{local.port}{LEANIX_TOKEN_PATH}",
                },
                "field 'token_url'",
            ),
            "url/userinfo": (
                {
                    "api_token": _secret("url-userinfo"),
                    "token_url": f"http://apitoken:pw@127.0.0.1:{local.port}{LEANIX_TOKEN_PATH}",
                },
                "field 'token_url'",
            ),
            "url/scheme": (
                {
                    "api_token": _secret("url-scheme"),
                    "token_url": f"ftp://127.0.0.1:{local.port}{LEANIX_TOKEN_PATH}",
                },
                "field 'token_url'",
            ),
        }
        extra_reason = {
            "host/evil-suffix": "'acme.leanix.net.evil.com' is not in exchange.allowed_hosts",
            "url/plain-http": "plain http to '127.0.0.3' is not in exchange.insecure_http_hosts",
            "url/other-loopback": "'127.0.0.2' is not in exchange.allowed_hosts",
            "url/localhost": "'localhost' is not in exchange.allowed_hosts",
            "url/userinfo": "must not carry userinfo",
            "url/scheme": "scheme 'ftp' is not http(s)",
        }
        for name, (data, _) in hostile.items():
            rig.space.write_source(name, data)
        api_tokens = [
            good_api_token,
            not_jwt_api_token,
            *listed,
            huge,
            unicode,
            *(
                data["api_token"]
                for data, _ in hostile.values()
                if isinstance(data.get("api_token"), str)
            ),
        ]
        audit = Audit(rig.space.root, rig.space.output_prefix, rig.idp)
        log = tmp_path / "run.log"

        with rig.running(log) as process:
            wait_for(alive(process, lambda: audit.current(GOOD)), 20, "the good token's output")
            first = audit.current(GOOD)
            assert first is not None
            wait_for(
                alive(process, lambda: _events(webhook, "exchange_failed", NOT_JWT, "firing")),
                20,
                "exchange_failed for the IdP answering a non-JWT",
            )
            attempts = rig.idp.requests_for(not_jwt_api_token)
            assert 3 <= attempts <= 4, attempts
            summary = _events(webhook, "exchange_failed", NOT_JWT, "firing")[0]["summary"]
            assert "not a JWT" in summary and "3 attempts in a row" in summary, summary
            # Every bad source alerts (critical), once, by name.
            wait_for(
                alive(
                    process,
                    lambda: all(_events(webhook, "exchange_failed", n, "firing") for n in hostile),
                ),
                10,
                "exchange_failed for every malformed source",
            )
            # The good token is refreshed past its first issuance; every read on the way valid.

            def refreshed() -> bool:
                token = audit.current(GOOD)
                assert _left(token) > 0, "a consumer read an expired good token"
                return token is not None and token.access_token != first.access_token

            wait_for(alive(process, refreshed), 20, "the good token's refresh")
            status = rig.rotator("status", "--json")

        assert local.connections == 0, "a token URL on 127.0.0.1 was contacted"
        assert other.connections == 0, "a token URL on 127.0.0.2 was contacted"
        assert https_only.connections == 0, "plain http went to a host allowed only over https"

    # The report: every bad source by name, invalid_source, naming the field.
    assert status.returncode == 1, status.stderr
    report = json.loads(status.stdout)
    rows = {row["name"]: row for row in report["tokens"]}
    assert set(rows) == {GOOD, NOT_JWT, *hostile}
    assert rows[GOOD]["state"] == "fresh" and rows[GOOD]["healthy"] is True
    assert rows[NOT_JWT]["state"] == "failing" and rows[NOT_JWT]["expires_at"] is None
    for name, (_, field) in hostile.items():
        row = rows[name]
        assert row["state"] == "invalid_source", row
        assert row["error_kind"] == "invalid_source", row
        assert row["healthy"] is False and row["expires_at"] is None, row
        assert field in row["error"], (name, row["error"])
        assert extra_reason.get(name, "") in row["error"], (name, row["error"])

    for name in hostile:
        firing = _events(webhook, "exchange_failed", name, "firing")
        assert len(firing) == 1 and firing[0]["severity"] == "critical", firing
    assert not _events(webhook, "exchange_failed", GOOD)

    # Nothing written for any bad source or the non-JWT answers; the good one is all valid.
    for name in [NOT_JWT, *hostile]:
        assert rig.space.read_output(name) is None, f"{name}: an output was written"
    versions = audit.every_version(GOOD)
    assert len(versions) >= 2

    # No API token value anywhere: the log, the report, the alerts, the outputs.
    outputs = json.dumps([rig.space.read_output(GOOD)], default=str)
    channels = {
        "the daemon's log": log.read_text(errors="replace"),
        "rotator status": status.stdout + status.stderr,
        "the webhook": webhook.raw_text(),
        "the outputs": outputs,
    }
    for channel, text in channels.items():
        for api_token in api_tokens:
            assert api_token not in text, f"an API token reached {channel}"
        assert "918273645546372819" not in text, f"the int api_token reached {channel}"
    _assert_no_claims_for_bad_sources(rig, hostile)


def _assert_no_claims_for_bad_sources(rig: Rig, hostile: dict[str, Any]) -> None:
    """A malformed source never gets as far as claiming the right to exchange it."""
    kv = rig.space.root.secrets.kv.v2
    for name in hostile:
        try:
            kv.read_secret_version(
                f"rotator-claims/{rig.space.output_prefix}/{name}",
                mount_point="secret",
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            continue
        raise AssertionError(f"{name}: a claim was taken for a malformed source")


OUT_OF_RANGE = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")


def test_out_of_range_times_are_bad_input_and_stop_no_other_token(
    rig: Rig, tmp_path: Path, webhook: RecordingServer
) -> None:
    """A source expiring in year 1 and a forged output issued in year 9999: the check goes on
    for every token, the forgery is restored (and alerted), status reports every token."""
    listen = f"127.0.0.1:{free_port()}"
    _configure(rig, webhook, metrics={"listen": listen})
    rig.add_token(GOOD)
    forged_name = "forged/far-future"
    rig.add_token(forged_name)
    bad_expiry = "bad/expiry"
    rig.api_tokens[bad_expiry] = "api-" + secrets.token_urlsafe(24)
    rig.space.write_source(
        bad_expiry,
        {
            "api_token": rig.api_tokens[bad_expiry],
            "token_url": rig.idp.token_url,
            "api_token_expires_at": OUT_OF_RANGE[0],
        },
    )
    audit = Audit(rig.space.root, rig.space.output_prefix, rig.idp)
    log = tmp_path / "run.log"

    with rig.running(log) as process:
        wait_for(alive(process, lambda: audit.current(forged_name)), 20, "the first outputs")
        rig.space.root.secrets.kv.v2.create_or_update_secret(
            f"{rig.space.output_prefix}/{forged_name}",
            secret={
                "access_token": "forged.jwt.value",
                "token_type": "bearer",
                "expires_in": 3599,
                "issued_at": OUT_OF_RANGE[1],
                "expires_at": OUT_OF_RANGE[1],
                "source_version": 1,
            },
            mount_point="secret",
        )
        wait_for(
            alive(process, lambda: _events(webhook, "foreign_write", forged_name, "firing")),
            20,
            "foreign_write for the far-future forgery",
        )
        wait_for(
            alive(process, lambda: (t := audit.current(forged_name)) and _left(t) > 0),
            20,
            "the forgery restored",
        )
        # The checks go on (the good token stays healthy, /healthz answers 200).
        wait_for(alive(process, lambda: _healthz(listen) == 200), 10, "a healthy daemon")
        assert _left(audit.current(GOOD)) > 0

    status = json.loads(rig.rotator("status", "--json").stdout)
    states = {row["name"]: row["state"] for row in status["tokens"]}
    assert states[bad_expiry] == "invalid_source"
    assert states[GOOD] == "fresh" and states[forged_name] == "fresh"
    assert "unexpected" not in log.read_text()
