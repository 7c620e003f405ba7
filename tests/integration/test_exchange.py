"""The IdP adapter, `rotator.exchange.TokenExchanger`, over real HTTP(S) against the stand-in.

Leak checks ride along with every test: each failure goes through `Rig.fails`, which asserts that
no API token, Basic credential or access token (nor anything JWT-shaped) appears in the
exception's str, repr, traceback or chained exceptions; and the `rig` fixture asserts the same of
every log record captured at DEBUG (urllib3's and the stand-in's included) during the test.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import logging
import re
import secrets
import ssl
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rotator.deadlines import WATCHDOG
from rotator.dev.standin import LeanIXStandIn
from rotator.errors import (
    ApiTokenRejected,
    ExchangeError,
    HostNotAllowed,
    IdPUnavailable,
    InvalidResponse,
    RateLimited,
    RedirectRefused,
    RequestRefused,
)
from rotator.exchange import TokenExchanger
from rotator.redact import fingerprint
from rotator.sources import LEANIX_TOKEN_PATH, Source, parse_source
from rotator.tokens import AccessToken

pytestmark = pytest.mark.integration

LOOPBACK = ("127.0.0.1",)
LEAK_WINDOW = 12
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{6,}")  # base64url of '{"...': a JWT header or payload


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@dataclass
class Rig:
    """The stand-in plus every secret a test handed out or received, and exchangers to close."""

    standin: LeanIXStandIn
    secrets: list[str] = field(default_factory=list)
    exchangers: list[TokenExchanger] = field(default_factory=list)

    def token(self, *, register: bool = True, **registration: Any) -> str:
        api_token = "api-" + secrets.token_urlsafe(24)
        self.secrets.append(api_token)
        client_id = registration.get("client_id", "apitoken")
        self.secrets.append(base64.b64encode(f"{client_id}:{api_token}".encode()).decode())
        if register:
            self.standin.add_token(api_token, **registration)
        return api_token

    def source(
        self,
        api_token: str,
        token_url: str | None = None,
        *,
        allowed: tuple[str, ...] = LOOPBACK,
        insecure: tuple[str, ...] = LOOPBACK,
        **fields: str,
    ) -> Source:
        data = {"api_token": api_token, "token_url": token_url or self.standin.token_url, **fields}
        return parse_source("acme/prod", data, 4, allowed, insecure)

    def exchanger(
        self,
        *,
        timeout: float = 5.0,
        allowed: tuple[str, ...] = LOOPBACK,
        insecure: tuple[str, ...] = LOOPBACK,
        environ: dict[str, str] | None = None,
    ) -> TokenExchanger:
        exchanger = TokenExchanger(allowed, insecure, timeout=timeout, environ=environ or {})
        self.exchangers.append(exchanger)
        return exchanger

    def exchange(self, source: Source, exchanger: TokenExchanger | None = None) -> AccessToken:
        token = (exchanger or self.exchanger()).exchange(source)
        self.secrets.append(token.access_token)
        return token

    def fails(
        self,
        source: Source,
        expected: type[ExchangeError],
        exchanger: TokenExchanger | None = None,
    ) -> Any:
        """The exception `expected` (exactly that class), checked to carry no secret."""
        with pytest.raises(expected) as info:
            (exchanger or self.exchanger()).exchange(source)
        exc = info.value
        assert type(exc) is expected
        texts = ["".join(traceback.format_exception(exc))]
        link: BaseException | None = exc
        while link is not None:  # suppressed contexts too: error trackers may still walk them
            texts += [str(link), repr(link)]
            link = link.__cause__ or link.__context__
        self.assert_clean("\n".join(texts), what=f"{type(exc).__name__}")
        return exc

    def assert_clean(self, text: str, what: str) -> None:
        """No secret, nor any 12-character piece of one (a truncated leak is a leak), in `text`."""
        for secret in self.secrets:
            for start in range(max(1, len(secret) - LEAK_WINDOW + 1)):
                piece = secret[start : start + LEAK_WINDOW]
                assert piece not in text, f"part of a secret ({fingerprint(secret)}) is in {what}"
        match = JWT_SHAPED.search(text)
        assert match is None, f"something JWT-shaped leaked into {what}"


@pytest.fixture
def rig(standin: LeanIXStandIn, caplog: pytest.LogCaptureFixture) -> Iterator[Rig]:
    caplog.set_level(logging.DEBUG)
    rig = Rig(standin)
    yield rig
    for exchanger in rig.exchangers:
        exchanger.close()
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    rig.assert_clean("\n".join(formatter.format(r) for r in records), what="the logs")


# -- success ------------------------------------------------------------------------------------


def test_exchange_returns_the_access_token_with_expiry_and_principal(rig: Rig) -> None:
    api_token = rig.token(workspace_id="ws-1", workspace_name="acme-prod", role="ADMIN")
    before = datetime.now(UTC).replace(microsecond=0)  # issued_at is stored to the second

    token = rig.exchange(rig.source(api_token))

    after = datetime.now(UTC)
    assert token.token_type == "bearer"
    assert token.expires_in == 3599
    assert token.source_version == 4
    assert before <= token.issued_at <= after
    # The JWT's `exp` is whole seconds, so it may cut the announced lifetime by under a second.
    lifetime = token.lifetime.total_seconds()
    assert 3599 - 2 <= lifetime <= 3599
    assert (token.principal.workspace_id, token.principal.workspace_name) == ("ws-1", "acme-prod")
    assert token.principal.role == "ADMIN"
    assert rig.standin.issued_count(api_token) == 1


def test_expires_in_follows_the_lifetime_the_idp_announces(rig: Rig) -> None:
    rig.standin.lifetime_seconds = 120
    token = rig.exchange(rig.source(rig.token()))

    assert token.expires_in == 120
    assert 118 <= token.lifetime.total_seconds() <= 120


def test_access_token_is_an_rs256_jwt_signed_with_the_standins_key(rig: Rig) -> None:
    api_token = rig.token()

    token = rig.exchange(rig.source(api_token))

    header_b64, claims_b64, signature_b64 = token.access_token.split(".")
    public_key = serialization.load_pem_public_key(rig.standin.public_key_pem())
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(
        _unb64(signature_b64),
        f"{header_b64}.{claims_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    assert json.loads(_unb64(header_b64)) == {"alg": "RS256", "typ": "JWT"}
    claims = json.loads(_unb64(claims_b64))
    assert {"exp", "iss", "jti", "sub", "instanceUrl", "principal"} <= claims.keys()
    record = rig.standin.issued[-1]
    assert (record.jti, record.exp) == (claims["jti"], claims["exp"])
    assert record.api_token_fingerprint == fingerprint(api_token)


def test_a_tampered_jwt_does_not_verify(rig: Rig) -> None:
    """Keeps the signature check above honest: it really verifies something."""
    token = rig.exchange(rig.source(rig.token()))
    header_b64, claims_b64, signature_b64 = token.access_token.split(".")
    public_key = serialization.load_pem_public_key(rig.standin.public_key_pem())
    assert isinstance(public_key, rsa.RSAPublicKey)

    with pytest.raises(InvalidSignature):
        public_key.verify(
            _unb64(signature_b64),
            f"{header_b64}.{claims_b64}x".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )


def test_request_carries_grant_type_in_the_form_body_and_basic_apitoken_auth(rig: Rig) -> None:
    api_token = rig.token()

    rig.exchange(rig.source(api_token))

    request = rig.standin.last_request
    assert request is not None
    assert (request.method, request.path) == ("POST", LEANIX_TOKEN_PATH)
    assert request.grant_type_in == ("body",)
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.client_id == "apitoken"
    assert request.api_token_fingerprint == fingerprint(api_token)
    assert request.scope is None


def test_source_client_id_and_scope_are_sent(rig: Rig) -> None:
    api_token = rig.token(client_id="svc-client")

    rig.exchange(rig.source(api_token, client_id="svc-client", scope="read:all"))

    request = rig.standin.last_request
    assert request is not None
    assert (request.client_id, request.scope) == ("svc-client", "read:all")


def test_the_exchange_asks_for_an_uncompressed_answer(rig: Rig) -> None:
    rig.exchange(rig.source(rig.token()))

    request = rig.standin.last_request
    assert request is not None
    assert request.accept_encoding == "identity"


def test_cookies_the_idp_sets_are_never_sent_back(rig: Rig) -> None:
    rig.standin.answer_headers = {"Set-Cookie": "lb=instance-7; Path=/; Max-Age=3600"}
    exchanger = rig.exchanger()
    rig.exchange(rig.source(rig.token()), exchanger)  # one tenant's answer sets a cookie

    rig.exchange(rig.source(rig.token()), exchanger)  # the next tenant's request

    request = rig.standin.last_request
    assert request is not None
    assert request.cookie is None
    assert "cookie" not in request.header_names


def test_a_changed_principal_shows_in_the_next_token(rig: Rig) -> None:
    api_token = rig.token(workspace_name="acme-prod", role="ADMIN")
    rig.exchange(rig.source(api_token))
    rig.standin.set_principal(api_token, workspace_name="someone-else", role="MEMBER")

    token = rig.exchange(rig.source(api_token))

    assert (token.principal.workspace_name, token.principal.role) == ("someone-else", "MEMBER")


# -- refusals -------------------------------------------------------------------------------------


def test_unknown_api_token_is_rejected_with_401(rig: Rig) -> None:
    exc = rig.fails(rig.source(rig.token(register=False)), ApiTokenRejected)

    assert exc.status == 401


def test_revoked_api_token_is_rejected_with_401(rig: Rig) -> None:
    api_token = rig.token()
    rig.standin.revoke(api_token)

    exc = rig.fails(rig.source(api_token), ApiTokenRejected)

    assert exc.status == 401
    assert rig.standin.issued_count(api_token) == 0


def test_403_is_api_token_rejected(rig: Rig) -> None:
    rig.standin.set_fault("status", status=403)

    exc = rig.fails(rig.source(rig.token()), ApiTokenRejected)

    assert exc.status == 403


def test_429_with_retry_after_seconds_is_rate_limited_for_that_long(rig: Rig) -> None:
    rig.standin.set_fault("status", status=429, retry_after="7")

    exc = rig.fails(rig.source(rig.token()), RateLimited)

    assert exc.retry_after == 7


def test_429_with_an_http_date_retry_after_waits_until_that_date(rig: Rig) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    rig.standin.set_fault("status", status=429, retry_after=email.utils.format_datetime(when, True))

    exc = rig.fails(rig.source(rig.token()), RateLimited)

    # The date has whole seconds; the exchange itself takes a moment.
    assert 110 <= exc.retry_after <= 120


def test_429_without_retry_after_has_no_retry_after(rig: Rig) -> None:
    rig.standin.set_fault("status", status=429)

    exc = rig.fails(rig.source(rig.token()), RateLimited)

    assert exc.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_idp_unavailable(rig: Rig, status: int) -> None:
    rig.standin.set_fault("status", status=status)

    rig.fails(rig.source(rig.token()), IdPUnavailable)


def test_400_is_request_refused_naming_only_the_oauth_error_code(rig: Rig) -> None:
    api_token = rig.token()
    body = json.dumps({"error": "invalid_scope", "error_description": f"bad {api_token}"})
    rig.standin.set_fault("status", status=400, body=body.encode())

    exc = rig.fails(rig.source(api_token), RequestRefused)

    assert exc.status == 400
    assert "(invalid_scope)" in str(exc)
    assert "bad" not in str(exc)


def test_a_wrong_token_path_is_request_refused_with_404(rig: Rig) -> None:
    url = rig.standin.base_url + "/services/mtm/v2/oauth2/token"

    exc = rig.fails(rig.source(rig.token(), url), RequestRefused)

    assert exc.status == 404


def test_a_failed_exchange_is_not_retried_behind_the_callers_back(rig: Rig) -> None:
    rig.standin.set_fault("status", status=503)

    rig.fails(rig.source(rig.token()), IdPUnavailable)

    assert rig.standin.requests_total == 1


# -- transport failures -------------------------------------------------------------------------


def test_an_idp_hanging_past_the_timeout_is_idp_unavailable_within_bound(rig: Rig) -> None:
    rig.standin.set_fault("hang", seconds=3)
    exchanger = rig.exchanger(timeout=0.5)
    started = time.monotonic()

    rig.fails(rig.source(rig.token()), IdPUnavailable, exchanger)

    # A correctness bound (the timeout is honoured), not a speed target.
    assert time.monotonic() - started < 2.5
    assert rig.standin.requests_total == 1


def test_an_idp_dripping_its_headers_fails_at_the_overall_deadline(rig: Rig) -> None:
    """The status line, then a header byte every 0.1 s: each read gets data well within the read
    timeout, so only the overall deadline (twice the timeout) ends the exchange."""
    rig.standin.set_fault("drip", interval=0.1)
    exchanger = rig.exchanger(timeout=0.5)
    started = time.monotonic()

    exc = rig.fails(rig.source(rig.token()), IdPUnavailable, exchanger)

    elapsed = time.monotonic() - started
    assert "within the deadline" in str(exc)
    assert 0.9 < elapsed < 2 * 0.5 + 1.0  # the deadline, plus slack for a loaded machine


def test_a_status_line_whose_headers_never_end_is_no_answer(rig: Rig) -> None:
    """Cut mid-headers, http.client takes the end of the stream for the end of the headers: a
    401 whose headers never ended must not count as the API token being rejected."""
    rig.standin.set_fault("drip", interval=0.1, status=401)

    exc = rig.fails(rig.source(rig.token()), IdPUnavailable, rig.exchanger(timeout=0.5))

    assert "within the deadline" in str(exc)


def test_an_exchange_answered_in_time_is_not_cut_and_keeps_its_connection(rig: Rig) -> None:
    rig.standin.latency_seconds = 0.3  # most of the 1 s deadline of a 0.5 s timeout
    exchanger = rig.exchanger(timeout=0.5)
    rig.exchange(rig.source(rig.token()), exchanger)
    # Wait until the first exchange's deadline has passed: the watchdog handles deadlines in
    # order, so once a later one expired, the earlier one was dealt with.
    with WATCHDOG.deadline(1.0) as later:
        wait_until(lambda: later.expired, timeout=5)

    rig.exchange(rig.source(rig.token()), exchanger)

    assert rig.standin.connections_total == 1  # the pooled connection survived its deadline


def test_a_connection_cut_at_its_deadline_is_not_reused(rig: Rig) -> None:
    rig.standin.set_fault("drip", interval=0.1, count=1)
    exchanger = rig.exchanger(timeout=0.5)
    rig.fails(rig.source(rig.token()), IdPUnavailable, exchanger)

    rig.exchange(rig.source(rig.token()), exchanger)

    assert rig.standin.connections_total == 2


def test_the_exchange_deadline_is_twice_the_timeout(rig: Rig) -> None:
    # README: shorter than a claim's lease (3 x timeout_seconds + 15 s), so no other instance
    # can take the claim over while this exchange may still succeed.
    assert rig.exchanger(timeout=7).deadline_seconds == 14


def test_a_connection_closed_without_an_answer_is_idp_unavailable(rig: Rig) -> None:
    rig.standin.set_fault("close")

    rig.fails(rig.source(rig.token()), IdPUnavailable)


def test_nothing_listening_is_idp_unavailable(rig: Rig, standin_key: rsa.RSAPrivateKey) -> None:
    with LeanIXStandIn(private_key=standin_key) as gone:
        url = gone.token_url
    # `gone` is stopped: its port refuses connections (nothing else binds it this quickly).

    rig.fails(rig.source(rig.token(), url), IdPUnavailable)


# -- unusable 200 answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("garbage", {}),
        ("no_access_token", {}),
        ("expired", {}),
        ("not_jwt", {}),
        ("expires_in", {"value": 0}),
        ("expires_in", {"value": -5}),
        ("expires_in", {"value": "3599"}),
    ],
    ids=["garbage", "no-access-token", "expired-true", "not-a-jwt", "expires-in-0",
         "expires-in-negative", "expires-in-string"],
)  # fmt: skip
def test_an_unusable_200_answer_is_invalid_response(
    rig: Rig, mode: str, params: dict[str, Any]
) -> None:
    rig.standin.set_fault(mode, **params)

    rig.fails(rig.source(rig.token()), InvalidResponse)


def test_a_jwt_whose_exp_has_passed_is_invalid_response(rig: Rig) -> None:
    rig.standin.lifetime_seconds = -5
    rig.standin.set_fault("expires_in", value=3599)

    rig.fails(rig.source(rig.token()), InvalidResponse)


def test_a_huge_body_is_invalid_response(rig: Rig) -> None:
    rig.standin.set_fault("huge")  # 1 MiB, far over the exchanger's cap

    rig.fails(rig.source(rig.token()), InvalidResponse)


def test_deeply_nested_json_is_invalid_response(rig: Rig) -> None:
    rig.standin.set_fault("deep")  # 100 000 levels

    rig.fails(rig.source(rig.token()), InvalidResponse)


def test_deeply_nested_json_within_the_size_cap_is_invalid_response_not_a_crash(rig: Rig) -> None:
    # 30 000 levels fit under the 64 KiB cap, so this reaches the JSON parser's recursion limit.
    rig.standin.set_fault("deep", depth=30_000)

    exc = rig.fails(rig.source(rig.token()), InvalidResponse)

    assert "JSON" in str(exc)  # refused by the parser, not by the size cap


# -- where a token may go -----------------------------------------------------------------------


def test_a_redirect_is_refused_and_its_target_receives_nothing(
    rig: Rig, standin_key: rsa.RSAPrivateKey
) -> None:
    api_token = rig.token()
    with LeanIXStandIn(private_key=standin_key) as target:
        target.add_token(api_token)
        rig.standin.set_fault("redirect", location=target.token_url)

        rig.fails(rig.source(api_token), RedirectRefused)

        assert target.requests_total == 0
    assert rig.standin.requests_total == 1


def test_a_host_outside_the_allowlist_is_refused_before_any_request(rig: Rig) -> None:
    # Same stand-in, named differently: the source was accepted under a wider allowlist.
    url = rig.standin.token_url.replace("127.0.0.1", "localhost")
    source = rig.source(rig.token(), url, allowed=("localhost",), insecure=("localhost",))

    rig.fails(source, HostNotAllowed)

    assert rig.standin.requests_total == 0


def test_plain_http_to_a_host_not_allowed_insecure_is_refused_before_any_request(
    rig: Rig,
) -> None:
    source = rig.source(rig.token())  # accepted when parsed with 127.0.0.1 allowed over http

    rig.fails(source, HostNotAllowed, rig.exchanger(insecure=()))

    assert rig.standin.requests_total == 0


@dataclass(frozen=True)
class Tls:
    cert: Path
    server: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A self-signed certificate for 127.0.0.1 and a server context serving it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test 127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "standin.pem", tmp_path / "standin-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return Tls(cert_path, context)


def test_https_with_a_trusted_self_signed_certificate_succeeds(
    rig: Rig, tls: Tls, standin_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchanger = rig.exchanger(insecure=(), environ={"REQUESTS_CA_BUNDLE": str(tls.cert)})
    with LeanIXStandIn(private_key=standin_key, ssl_context=tls.server) as secure:
        api_token = rig.token(register=False)
        secure.add_token(api_token)

        token = rig.exchange(rig.source(api_token, secure.token_url, insecure=()), exchanger)

        assert secure.token_url.startswith("https://127.0.0.1:")
        assert secure.issued_count(api_token) == 1
        assert token.principal.workspace_name == "demo"
        exchanger.close()  # before the stand-in stops, so the server side ends cleanly


def test_https_with_an_untrusted_certificate_fails_before_the_token_is_sent(
    rig: Rig, tls: Tls, standin_key: rsa.RSAPrivateKey
) -> None:
    with LeanIXStandIn(private_key=standin_key, ssl_context=tls.server) as secure:
        api_token = rig.token(register=False)
        secure.add_token(api_token)

        rig.fails(rig.source(api_token, secure.token_url, insecure=()), IdPUnavailable)

        assert secure.requests_total == 0


# -- the leak checks themselves -----------------------------------------------------------------


def test_the_log_leak_check_sees_debug_records_of_both_sides(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The `rig` fixture's log scan would pass vacuously if nothing were captured."""
    rig.fails(rig.source(rig.token(register=False)), ApiTokenRejected)

    loggers = {record.name for record in caplog.records if record.levelno == logging.DEBUG}
    assert "urllib3.connectionpool" in loggers
    assert "rotator.dev.standin" in loggers


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_an_idp_dripping_its_headers_over_https_fails_at_the_deadline(
    rig: Rig, tls: Tls, standin_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting the socket also ends a read blocked inside TLS."""
    exchanger = rig.exchanger(
        insecure=(), environ={"REQUESTS_CA_BUNDLE": str(tls.cert)}, timeout=0.5
    )
    with LeanIXStandIn(private_key=standin_key, ssl_context=tls.server) as secure:
        api_token = rig.token(register=False)
        secure.add_token(api_token)
        secure.set_fault("drip", interval=0.1)
        started = time.monotonic()

        exc = rig.fails(
            rig.source(api_token, secure.token_url, insecure=()), IdPUnavailable, exchanger
        )

        assert "within the deadline" in str(exc)
        assert time.monotonic() - started < 2 * 0.5 + 1.0
        exchanger.close()
