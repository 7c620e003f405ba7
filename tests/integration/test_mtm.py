"""The MTM client, `rotator.mtm.MtmClient`, over real HTTP and HTTPS against the stand-in's
technical-users API, with an access token from the stand-in's token endpoint (obtained through
`TokenExchanger`) as the bearer.

Most tests run once per scheme (`rig`). Tokens are compared, never printed: every call to the
client goes through `Caller`, which takes an `Admin` (its tokens kept out of its repr) so that
pytest's tracebacks, which show each frame's arguments, never show a bearer, and which checks
every error it sees for secrets (str, repr, traceback, chained exceptions) before handing it on
with the client's frames cut off. Assertions about tokens assert booleans computed beforehand.
The `rig` fixture checks the stand-in's records and every log line of the test (urllib3's and the
stand-in's, at DEBUG) for every secret handed out or received.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.dev.standin import LeanIXStandIn
from rotator.errors import FailureKind, MtmError, MtmRefused, MtmUnavailable, TechnicalUserMissing
from rotator.exchange import DEADLINE_FACTOR, TokenExchanger
from rotator.mtm import PAGE_SIZE, MtmClient, TechnicalUser
from rotator.redact import SECRETS, fingerprint
from rotator.sources import Source, parse_source
from tests.integration.conftest import StandinTls
from tests.rawhttp import RawServer, drip

pytestmark = pytest.mark.integration

LOOPBACK = ("127.0.0.1",)
NAME = "acme/prod"
LEAK_WINDOW = 12
SLACK = 1.0  # for a loaded 2-core machine
SHORT_TIMEOUT = 0.5  # the client's connect/read timeout where a test waits for it


def same(a: str, b: str, what: str) -> None:
    """Fail unless two tokens are equal, naming their fingerprints only."""
    if not secrets.compare_digest(a, b):
        raise AssertionError(f"{what}: {fingerprint(a)} is not {fingerprint(b)}")


@dataclass(frozen=True)
class User:
    """A technical user's id and an API token of it; the token stays out of the repr."""

    id: str
    api_token: str = field(repr=False)


@dataclass(frozen=True)
class Admin(User):
    """A User with an access token (the MTM bearer) obtained for its API token."""

    bearer: str = field(repr=False)


@dataclass
class Rig:
    """One stand-in of one scheme, the clients made for it, and every secret the test has seen."""

    standin: LeanIXStandIn
    https: bool
    cert: str
    secrets: list[str] = field(default_factory=list, repr=False)
    clients: list[MtmClient] = field(default_factory=list, repr=False)
    _exchanger: TokenExchanger | None = field(default=None, repr=False)
    _workspace: str | None = None

    @property
    def workspace(self) -> str:
        """The workspace users go to unless a test names another one."""
        if self._workspace is None:
            self._workspace = self.standin.add_workspace("acme")
        return self._workspace

    @property
    def insecure(self) -> tuple[str, ...]:
        return () if self.https else LOOPBACK

    @property
    def environ(self) -> dict[str, str]:
        """The client's environment: the stand-in's certificate trusted over https, no proxies."""
        return {"REQUESTS_CA_BUNDLE": self.cert} if self.https else {}

    @property
    def base(self) -> str:
        return self.standin.mtm_url

    # -- users and their tokens

    def user(self, workspace_id: str | None = None, **options: Any) -> User:
        """A new technical user in `workspace_id` (default: `workspace`); options go to
        `add_token`."""
        api_token = "api-" + secrets.token_urlsafe(24)
        self.secrets.append(api_token)
        workspace_id = workspace_id or self.workspace
        return User(
            self.standin.add_token(api_token, workspace_id=workspace_id, **options), api_token
        )

    def admin(self, workspace_id: str | None = None, **options: Any) -> Admin:
        """A new technical user (ADMIN unless `role` says otherwise) and an access token of it,
        obtained the way rotator does: a Source and TokenExchanger."""
        user = self.user(workspace_id, **options)
        return Admin(user.id, user.api_token, self.exchange(user))

    def source(self, user: User) -> Source:
        data = {"api_token": user.api_token, "token_url": self.standin.token_url}
        return parse_source(NAME, data, 1, LOOPBACK, self.insecure)

    def exchange(self, user: User) -> str:
        """An access token for `user`'s API token (TokenExchanger fails if it is refused)."""
        if self._exchanger is None:
            self._exchanger = TokenExchanger(LOOPBACK, self.insecure, 5.0, environ=self.environ)
        access_token = self._exchanger.exchange(self.source(user)).access_token
        self.secrets.append(access_token)
        return access_token

    def current(self, user_id: str) -> User:
        """The user with the API token the stand-in holds for it now."""
        api_token = self.standin.current_api_token(user_id)
        self.secrets.append(api_token)
        return User(user_id, api_token)

    def accepts(self, user: User) -> bool:
        return self.standin.accepts(user.api_token)

    # -- the client

    def client(
        self,
        *,
        timeout: float = 5.0,
        allowed: tuple[str, ...] = LOOPBACK,
        insecure: tuple[str, ...] | None = None,
        environ: dict[str, str] | None = None,
    ) -> MtmClient:
        client = MtmClient(
            allowed,
            self.insecure if insecure is None else insecure,
            timeout,
            environ=self.environ if environ is None else environ,
        )
        self.clients.append(client)
        return client

    def caller(self, admin: Admin, client: MtmClient | None = None, base: str = "") -> Caller:
        return Caller(self, client or self.client(), admin, base or self.base)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self._exchanger is not None:
            self._exchanger.close()

    # -- leak checks

    def check_error(self, exc: BaseException) -> None:
        """No secret in the error's str, repr, traceback or any exception chained to it."""
        texts = ["".join(traceback.format_exception(exc))]
        link: BaseException | None = exc
        while link is not None:  # suppressed contexts too: error trackers may still walk them
            texts += [str(link), repr(link)]
            link = link.__cause__ or link.__context__
        self.assert_clean("\n".join(texts), type(exc).__name__)

    def assert_clean(self, text: str, what: str) -> None:
        """No secret, nor any 12-character piece of one (a truncated leak is a leak), in `text`."""
        pieces = {
            secret[start : start + LEAK_WINDOW]: secret
            for secret in self.secrets
            for start in range(max(1, len(secret) - LEAK_WINDOW + 1))
        }
        for start in range(max(1, len(text) - LEAK_WINDOW + 1)):
            if (secret := pieces.get(text[start : start + LEAK_WINDOW])) is not None:
                raise AssertionError(f"part of a secret ({fingerprint(secret)}) is in {what}")


@dataclass
class Caller:
    """The client's three calls with one admin's bearer. Errors are leak-checked, then raised
    again without the client's frames (pytest would show their `bearer` argument)."""

    rig: Rig
    client: MtmClient
    admin: Admin
    base: str

    def get(self, user_id: str) -> TechnicalUser:
        return self._run(
            lambda: self.client.technical_user(self.base, self.admin.bearer, user_id, name=NAME)
        )

    def list(self) -> list[TechnicalUser]:
        return self._run(
            lambda: self.client.technical_users(self.base, self.admin.bearer, name=NAME)
        )

    def replace(self, user_id: str) -> TechnicalUser:
        return self._run(
            lambda: self.client.replace_token(self.base, self.admin.bearer, user_id, name=NAME)
        )

    def call(self, operation: str, user_id: str) -> Any:
        """`operation` ("get", "list" or "replace") on `user_id` (ignored by "list")."""
        if operation == "list":
            return self.list()
        return self.get(user_id) if operation == "get" else self.replace(user_id)

    def fails(self, operation: str, user_id: str, expected: type[MtmError]) -> Any:
        """The error `expected` (exactly that class) from `operation`."""
        with pytest.raises(MtmError) as info:
            self.call(operation, user_id)
        exc = info.value
        assert type(exc) is expected, f"{type(exc).__name__} ({exc}), not {expected.__name__}"
        return exc

    def _run(self, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except BaseException as exc:
            self.rig.check_error(exc)
            raise exc.with_traceback(None) from None
        if isinstance(result, TechnicalUser) and result.api_token is not None:
            self.rig.secrets.append(result.api_token)
        return result


@pytest.fixture
def make_rig(
    standin_key: rsa.RSAPrivateKey, standin_tls: StandinTls, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[..., Rig]]:
    """Makes rigs of a scheme ("http" or "https"; options go to LeanIXStandIn); afterwards
    checks the stand-ins' records and the test's logs for every secret seen."""
    caplog.set_level(logging.DEBUG)
    made: list[Rig] = []
    seen: list[str] = []

    def make(scheme: str, **options: Any) -> Rig:
        https = scheme == "https"
        standin = LeanIXStandIn(
            private_key=standin_key, ssl_context=standin_tls.server if https else None, **options
        ).start()
        rig = Rig(standin, https, str(standin_tls.cert), secrets=seen)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.close()  # before the stand-in stops, so the server side ends cleanly
            rig.standin.stop()
    for rig in made:
        assert rig.standin.base_url.startswith("https://" if rig.https else "http://")
        records = repr(rig.standin.mtm_requests) + repr(rig.standin.technical_users())
        rig.assert_clean(records + repr(rig.standin.last_request), "the stand-in's records")
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(formatter.format(record) for record in records)
    if made:
        made[0].assert_clean(text, "the logs")


@pytest.fixture(params=["http", "https"])
def rig(request: pytest.FixtureRequest, make_rig: Callable[..., Rig]) -> Rig:
    return make_rig(request.param)


@pytest.fixture
def http_rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig("http")


@pytest.fixture
def https_rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig("https")


def mtm_queries(rig: Rig) -> list[tuple[tuple[str, str], ...]]:
    """The paging queries of the listings the stand-in received, in order."""
    return [
        record.query
        for record in rig.standin.mtm_requests
        if (record.method, record.path) == ("GET", "/services/mtm/v1/technicalusers")
    ]


def page_query(page: int) -> tuple[tuple[str, str], ...]:
    return (("page", str(page)), ("size", str(PAGE_SIZE)))


# -- technical_user ------------------------------------------------------------------------------


def test_the_base_is_the_sources_mtm_base(rig: Rig) -> None:
    assert rig.source(rig.user()).mtm_base == rig.base


@pytest.mark.parametrize("expiry_format", ["iso", "epoch_ms"])
@pytest.mark.parametrize("millis", [0, 250], ids=["whole-second", "with-milliseconds"])
def test_technical_user_reads_id_name_role_workspace_and_expiry(
    rig: Rig, expiry_format: str, millis: int
) -> None:
    rig.standin.expiry_format = expiry_format
    workspace = rig.standin.add_workspace("acme")
    expiry = datetime(2027, 12, 1, 10, 0, 0, millis * 1000, tzinfo=UTC)
    target = rig.user(workspace, user_name="ci-bot", role="MEMBER", expiry=expiry)
    admin = rig.admin(workspace)

    user = rig.caller(admin).get(target.id)

    held = rig.standin.technical_user(target.id)
    assert (user.id, user.user_name, user.role, user.workspace_id) == (
        target.id,
        "ci-bot",
        "MEMBER",
        workspace,
    )
    assert user.expires_at is not None
    assert user.expires_at.utcoffset() == timedelta(0)  # aware, in UTC
    assert user.expires_at == held.expiry == expiry  # to the millisecond, in either format
    assert user.api_token is None
    (record,) = rig.standin.mtm_requests
    assert (record.method, record.path) == ("GET", f"/services/mtm/v1/technicalusers/{target.id}")
    assert (record.status, record.caller_id, record.query) == (200, admin.id, ())


def test_technical_user_reads_an_admin_itself(rig: Rig) -> None:
    admin = rig.admin(role="ADMIN")

    user = rig.caller(admin).get(admin.id)

    assert (user.id, user.role) == (admin.id, "ADMIN")
    assert user.expires_at == rig.standin.technical_user(admin.id).expiry


@pytest.mark.parametrize(
    "expiry",
    ["soon", "", "²", "٢٠٢٧", "2027-12-01T10:00:00", "0001-01-01T00:00:00Z", True, None, [], -1],
    ids=["word", "empty", "superscript-digit", "arabic-indic-digits", "no-zone", "year-1",
         "bool", "null", "list", "before-1970"],
)  # fmt: skip
def test_an_unreadable_expiry_is_none_and_the_rest_of_the_user_is_read(
    rig: Rig, expiry: Any
) -> None:
    admin = rig.admin()
    document = {
        "status": "OK",
        "data": {"id": admin.id, "userName": "ci-bot", "apiTokenData": {"expiry": expiry}},
    }
    rig.standin.set_mtm_fault("status", status=200, body=document, count=1)

    user = rig.caller(admin).get(admin.id)

    assert (user.id, user.user_name, user.expires_at) == (admin.id, "ci-bot", None)
    assert (user.role, user.workspace_id) == (None, None)


@pytest.mark.parametrize(
    "document",
    [
        {"status": "OK", "data": None},
        {"status": "OK", "data": []},
        {"status": "OK", "data": {"userName": "no-id"}},
        {"status": "OK", "data": {"id": ""}},
        {"status": "OK", "data": {"id": 42}},
        {"status": "OK"},
    ],
    ids=["data-null", "data-list", "no-id", "empty-id", "numeric-id", "no-data"],
)
def test_a_200_that_holds_no_technical_user_is_mtm_unavailable(
    rig: Rig, document: dict[str, Any]
) -> None:
    admin = rig.admin()
    rig.standin.set_mtm_fault("status", status=200, body=document, count=1)

    exc = rig.caller(admin).fails("get", admin.id, MtmUnavailable)

    assert exc.definite is False
    assert repr(NAME) in str(exc)


def test_a_200_whose_json_is_no_object_is_mtm_unavailable(rig: Rig) -> None:
    admin = rig.admin()
    rig.standin.set_mtm_fault("status", status=200, body=b'["not", "an", "object"]', count=1)

    exc = rig.caller(admin).fails("get", admin.id, MtmUnavailable)

    assert "not a JSON object" in str(exc)


def test_an_answer_larger_than_the_cap_is_mtm_unavailable(rig: Rig) -> None:
    admin = rig.admin()
    body = b'{"status": "OK", "padding": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    rig.standin.set_mtm_fault("status", status=200, body=body, count=1)

    exc = rig.caller(admin).fails("get", admin.id, MtmUnavailable)

    assert "exceeds" in str(exc)


# -- technical_users -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "pages"),
    [(1, 1), (99, 1), (100, 1), (101, 2), (200, 2), (205, 3)],
)
def test_technical_users_reads_every_page_and_stops_at_the_total(
    rig: Rig, users: int, pages: int
) -> None:
    workspace = rig.standin.add_workspace("acme")
    admin = rig.admin(workspace)
    for _ in range(users - 1):
        rig.standin.add_token("bulk-" + secrets.token_urlsafe(24), workspace_id=workspace)

    listed = rig.caller(admin).list()

    expected = [user.id for user in rig.standin.technical_users(workspace)]
    assert len(expected) == users
    assert [user.id for user in listed] == expected  # every one, once, in MTM's order
    # No page beyond the last: with exactly 100 or 200 users the total says the list is done.
    assert mtm_queries(rig) == [page_query(page) for page in range(1, pages + 1)]
    assert all(record.status == 200 for record in rig.standin.mtm_requests)


def test_technical_users_lists_only_the_callers_workspace(rig: Rig) -> None:
    ours, theirs = rig.standin.add_workspace("acme"), rig.standin.add_workspace("other")
    admin = rig.admin(ours)
    colleague = rig.user(ours, user_name="ci-bot", role="MEMBER")
    for _ in range(3):
        rig.user(theirs)
    rig.admin(theirs)  # another workspace's admin: not ours either

    listed = rig.caller(admin).list()

    assert {user.id for user in listed} == {admin.id, colleague.id}
    assert {user.workspace_id for user in listed} == {ours}
    held = {user.id: user for user in rig.standin.technical_users(ours)}
    for user in listed:
        assert user.user_name == held[user.id].user_name
        assert user.role == held[user.id].role
        assert user.expires_at == held[user.id].expiry
        assert user.api_token is None


def test_an_empty_workspace_lists_nothing_in_one_request(rig: Rig) -> None:
    """The bearer still speaks for the workspace its admin was moved out of, now empty."""
    workspace = rig.standin.add_workspace("acme")
    admin = rig.admin(workspace)
    rig.standin.set_principal(admin.api_token, workspace_id=rig.standin.add_workspace("new"))
    assert rig.standin.technical_users(workspace) == []

    listed = rig.caller(admin).list()

    assert listed == []
    assert mtm_queries(rig) == [page_query(1)]


def test_a_listing_whose_data_is_no_list_is_mtm_unavailable(rig: Rig) -> None:
    admin = rig.admin()
    document = {"status": "OK", "total": 1, "data": {"id": admin.id}}
    rig.standin.set_mtm_fault("status", status=200, body=document, count=1)

    rig.caller(admin).fails("list", "", MtmUnavailable)


def test_a_listing_holding_a_user_without_an_id_is_mtm_unavailable(rig: Rig) -> None:
    admin = rig.admin()
    document = {"status": "OK", "total": 2, "data": [{"id": admin.id}, {"userName": "no-id"}]}
    rig.standin.set_mtm_fault("status", status=200, body=document, count=1)

    rig.caller(admin).fails("list", "", MtmUnavailable)


def _page(count: int, **extra: Any) -> dict[str, Any]:
    """A listing page of `count` made-up users (the stand-in sends it as a `status` fault)."""
    users = [{"id": f"made-up-{n}", "userName": f"user-{n}"} for n in range(count)]
    return {"status": "OK", **extra, "data": users}


def test_a_failing_second_page_fails_the_whole_listing(rig: Rig) -> None:
    admin = rig.admin()
    # A fault for a path wins over a general one: page 1 gets the first, page 2 the second.
    page_1 = _page(PAGE_SIZE, total=PAGE_SIZE + 50)
    rig.standin.set_mtm_fault("status", status=200, body=page_1, count=1, path="/technicalusers")
    rig.standin.set_mtm_fault("status", status=503, count=1)

    exc = rig.caller(admin).fails("list", "", MtmUnavailable)  # not a short list

    assert exc.definite is False
    assert mtm_queries(rig) == [page_query(1), page_query(2)]


def test_without_a_total_a_full_page_is_followed_by_the_next_until_a_short_one(
    rig: Rig,
) -> None:
    admin = rig.admin()
    rig.standin.set_mtm_fault(
        "status", status=200, body=_page(PAGE_SIZE), count=1, path="/technicalusers"
    )

    listed = rig.caller(admin).list()  # page 2 is the stand-in's own: only the admin is there

    assert mtm_queries(rig) == [page_query(1), page_query(2)]
    assert [user.id for user in listed] == [f"made-up-{n}" for n in range(PAGE_SIZE)]


def test_a_total_that_is_no_integer_is_ignored(rig: Rig) -> None:
    admin = rig.admin()
    for total in (True, "1", None):
        rig.standin.reset_counters()
        rig.standin.set_mtm_fault(
            "status", status=200, body=_page(PAGE_SIZE, total=total), count=1,
            path="/technicalusers",
        )  # fmt: skip

        listed = rig.caller(admin).list()

        assert len(listed) == PAGE_SIZE  # page 2 (the stand-in's, past its one user) is empty
        assert mtm_queries(rig) == [page_query(1), page_query(2)], total


# -- replace_token -------------------------------------------------------------------------------


def test_replace_token_returns_a_working_new_token_and_the_old_one_is_refused(rig: Rig) -> None:
    workspace = rig.standin.add_workspace("acme")
    admin = rig.admin(workspace)
    old_expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    target = rig.user(workspace, user_name="ci-bot", role="MEMBER", expiry=old_expiry)

    replaced = rig.caller(admin).replace(target.id)

    assert replaced.api_token is not None
    new = User(target.id, replaced.api_token)
    same(new.api_token, rig.standin.current_api_token(target.id), "the stand-in's new token")
    new_accepted, old_accepted = rig.accepts(new), rig.accepts(target)
    assert new_accepted
    assert not old_accepted
    assert rig.standin.replacements(target.id) == 1
    rig.exchange(new)  # the token endpoint issues for it (TokenExchanger raises otherwise)
    held = rig.standin.technical_user(target.id)
    assert (replaced.id, replaced.user_name, replaced.role, replaced.workspace_id) == (
        target.id,
        "ci-bot",
        "MEMBER",
        workspace,
    )
    assert replaced.expires_at == held.expiry  # the new expiry, a year from now
    assert replaced.expires_at is not None
    assert replaced.expires_at > old_expiry + timedelta(days=300)
    (record,) = rig.standin.mtm_requests
    assert (record.method, record.path, record.status, record.caller_id) == (
        "PUT",
        f"/services/mtm/v1/technicalusers/{target.id}/replaceToken",
        200,
        admin.id,
    )


def test_the_new_token_is_registered_with_the_redactor_and_kept_out_of_the_repr(
    rig: Rig,
) -> None:
    admin = rig.admin()
    target = rig.user()

    replaced = rig.caller(admin).replace(target.id)

    assert replaced.api_token is not None
    new_token = replaced.api_token
    redacted = SECRETS.redact(f"token={new_token};")
    unredacted = new_token in redacted
    assert not unredacted
    assert redacted == f"token=[REDACTED:{fingerprint(new_token)}];"
    shown = repr(replaced) + str(replaced) + repr([replaced])
    in_repr = new_token in shown
    assert not in_repr
    assert target.id in shown  # the repr does show the rest


def test_replace_keeps_expiry_is_read_back_as_the_old_expiry_in_epoch_ms(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig("https", expiry_format="epoch_ms", replace_keeps_expiry=True)
    admin = rig.admin()
    old_expiry = datetime(2027, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    target = rig.user(expiry=old_expiry)

    replaced = rig.caller(admin).replace(target.id)

    assert replaced.expires_at == old_expiry
    assert rig.standin.replacements(target.id) == 1


def test_an_admin_replacing_its_own_token_keeps_its_bearer(rig: Rig) -> None:
    """The default admin_source is the token itself: its access token outlives the
    replacement, so the calls that follow still work."""
    admin = rig.admin()
    caller = rig.caller(admin)

    replaced = caller.replace(admin.id)

    assert caller.get(admin.id).expires_at == replaced.expires_at
    old_accepted = rig.accepts(admin)
    assert not old_accepted


def test_two_replacements_in_a_row_each_return_the_current_token(rig: Rig) -> None:
    admin = rig.admin()
    target = rig.user()
    caller = rig.caller(admin)

    first = caller.replace(target.id)
    second = caller.replace(target.id)

    assert first.api_token is not None and second.api_token is not None
    same(second.api_token, rig.standin.current_api_token(target.id), "the current token")
    first_accepted = rig.accepts(User(target.id, first.api_token))
    assert not first_accepted
    assert rig.standin.replacements(target.id) == 2


@pytest.mark.parametrize(
    "token",
    [
        "absent",
        None,
        42,
        ["{random}"],
        "",
        "   ",
        "with a space {random}",
        "tab\t{random}",
        "non-ascii-tökén-{random}",
        "nul\x00{random}",
        "{random}" * 300,
    ],
    ids=["absent", "null", "number", "list", "empty", "blank", "space", "tab", "non-ascii",
         "nul", "too-long"],
)  # fmt: skip
def test_a_replace_answer_without_a_usable_token_is_mtm_unavailable(rig: Rig, token: Any) -> None:
    """Made with a 200 `status` fault: the stand-in replaces nothing then, the client cannot
    know that. A real replacement whose answer is lost is `drop_after_replace`'s test."""
    admin = rig.admin()
    target = rig.user()
    random = secrets.token_urlsafe(24)
    if isinstance(token, str):
        token = token.format(random=random)
    elif isinstance(token, list):
        token = [item.format(random=random) for item in token]
    rig.secrets.append(random)
    token_data: dict[str, Any] = {"expiry": "2027-12-01T10:00:00Z"}
    if token != "absent":
        token_data["token"] = token
    document = {"status": "OK", "data": {"id": target.id, "apiTokenData": token_data}}
    rig.standin.set_mtm_fault("status", status=200, body=document, path="*/replaceToken")

    exc = rig.caller(admin).fails("replace", target.id, MtmUnavailable)

    assert exc.definite is False
    assert "holds no" in str(exc)
    assert rig.standin.mtm_count("PUT") == 1


def test_a_replace_answer_without_token_data_is_mtm_unavailable(rig: Rig) -> None:
    admin = rig.admin()
    target = rig.user()
    document = {"status": "OK", "data": {"id": target.id, "userName": "ci-bot"}}
    rig.standin.set_mtm_fault("status", status=200, body=document, path="*/replaceToken")

    rig.caller(admin).fails("replace", target.id, MtmUnavailable)


def test_a_token_in_an_otherwise_unusable_replace_answer_is_still_redacted(rig: Rig) -> None:
    admin = rig.admin()
    target = rig.user()
    token = "lost-" + secrets.token_urlsafe(24)
    rig.secrets.append(token)
    document = {"status": "OK", "data": {"apiTokenData": {"token": token}}}  # no id
    rig.standin.set_mtm_fault("status", status=200, body=document, path="*/replaceToken")

    rig.caller(admin).fails("replace", target.id, MtmUnavailable)

    unredacted = token in SECRETS.redact(token)
    assert not unredacted


# -- refusals: definite, nothing changed ---------------------------------------------------------

OPERATIONS = ["get", "list", "replace"]


def _bearer(rig: Rig, kind: str) -> Admin:
    """An ADMIN technical user whose bearer MTM refuses, as `kind` says."""
    if kind == "empty":
        user = rig.user()
        return Admin(user.id, user.api_token, "")
    if kind == "garbage":
        user = rig.user()
        return Admin(user.id, user.api_token, "not-a-jwt")
    if kind == "api-token":  # the API token itself is no bearer
        user = rig.user()
        return Admin(user.id, user.api_token, user.api_token)
    if kind == "expired":
        rig.standin.lifetime_seconds = -5  # TokenExchanger would refuse such a token: plain
        user = rig.user()
        with requests.Session() as session:
            response = session.post(
                rig.standin.token_url,
                auth=("apitoken", user.api_token),
                data={"grant_type": "client_credentials"},
                timeout=5,
                verify=rig.cert if rig.https else False,
            )
        assert response.status_code == 200
        bearer = str(response.json()["access_token"])
        rig.secrets.append(bearer)
        rig.standin.lifetime_seconds = 3599
        return Admin(user.id, user.api_token, bearer)
    admin = rig.admin()
    if kind == "tampered":
        head, claims, signature = admin.bearer.split(".")
        tampered = f"{head}.{claims}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        rig.secrets.append(tampered)
        return Admin(admin.id, admin.api_token, tampered)
    if kind == "revoked":
        rig.standin.revoke(admin.api_token)
    elif kind == "deleted":
        rig.standin.delete_technical_user(admin.id)
    return admin


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    "kind", ["empty", "garbage", "api-token", "expired", "tampered", "revoked", "deleted"]
)
def test_a_bearer_mtm_does_not_take_is_mtm_refused_401_and_definite(
    rig: Rig, operation: str, kind: str
) -> None:
    admin = _bearer(rig, kind)
    target = rig.user()

    exc = rig.caller(admin).fails(operation, target.id, MtmRefused)

    assert exc.status == 401
    assert exc.definite is True
    assert exc.retryable is False
    assert "401" in str(exc)
    assert rig.standin.replacements(target.id) == 0
    target_accepted = rig.accepts(target)
    assert target_accepted
    assert [record.status for record in rig.standin.mtm_requests] == [401]  # not retried


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_members_bearer_is_mtm_refused_403(rig: Rig, operation: str) -> None:
    workspace = rig.standin.add_workspace("acme")
    member = rig.admin(workspace, role="MEMBER")
    target = rig.user(workspace)

    exc = rig.caller(member).fails(operation, target.id, MtmRefused)

    assert (exc.status, exc.definite) == (403, True)
    assert rig.standin.replacements(target.id) == 0
    assert [record.caller_id for record in rig.standin.mtm_requests] == [member.id]


@pytest.mark.parametrize("operation", ["get", "replace"])
@pytest.mark.parametrize("kind", ["unknown", "deleted", "other-workspace"])
def test_a_user_mtm_does_not_know_is_technical_user_missing(
    rig: Rig, operation: str, kind: str
) -> None:
    admin = rig.admin(rig.standin.add_workspace("acme"))
    if kind == "unknown":
        user_id = str(uuid.uuid4())
    elif kind == "deleted":
        user_id = rig.user().id
        rig.standin.delete_technical_user(user_id)
    else:
        foreign = rig.user(rig.standin.add_workspace("other"))
        user_id = foreign.id

    exc = rig.caller(admin).fails(operation, user_id, TechnicalUserMissing)

    assert exc.definite is True
    assert exc.retryable is False
    if kind == "other-workspace":
        assert rig.standin.replacements(foreign.id) == 0
        foreign_accepted = rig.accepts(foreign)
        assert foreign_accepted
    assert [record.status for record in rig.standin.mtm_requests] == [404]


# -- MTM faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_mtm_unavailable_not_definite_and_not_retried(
    rig: Rig, operation: str, status: int
) -> None:
    admin = rig.admin()
    target = rig.user()
    rig.standin.set_mtm_fault("status", status=status, retry_after=7)

    exc = rig.caller(admin).fails(operation, target.id, MtmUnavailable)

    assert exc.definite is False
    assert exc.retryable is True
    assert exc.kind is FailureKind.TRANSIENT
    assert str(status) in str(exc)
    assert rig.standin.mtm_count() == 1


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", [400, 405, 409, 422])
def test_other_4xx_are_mtm_refused_with_their_status(rig: Rig, operation: str, status: int) -> None:
    admin = rig.admin()
    target = rig.user()
    rig.standin.set_mtm_fault("status", status=status)

    exc = rig.caller(admin).fails(operation, target.id, MtmRefused)

    assert (exc.status, exc.definite) == (status, True)
    assert rig.standin.mtm_count() == 1


@pytest.mark.parametrize("operation", ["get", "replace"])
def test_a_404_for_a_users_url_is_technical_user_missing(rig: Rig, operation: str) -> None:
    admin = rig.admin()
    rig.standin.set_mtm_fault("status", status=404)

    exc = rig.caller(admin).fails(operation, admin.id, TechnicalUserMissing)

    assert exc.definite is True


def test_a_404_for_the_listing_is_mtm_refused_not_a_missing_user(rig: Rig) -> None:
    """No user is named: the listing's 404 says MTM is not at that base."""
    admin = rig.admin()
    rig.standin.set_mtm_fault("status", status=404)

    exc = rig.caller(admin).fails("list", "", MtmRefused)

    assert (exc.status, exc.definite) == (404, True)
    assert "does not know the technical user" not in str(exc)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("mode", ["garbage", "close"])
def test_garbage_and_a_closed_connection_are_mtm_unavailable(
    rig: Rig, operation: str, mode: str
) -> None:
    admin = rig.admin()
    target = rig.user()
    rig.standin.set_mtm_fault(mode)

    exc = rig.caller(admin).fails(operation, target.id, MtmUnavailable)

    assert exc.definite is False
    assert rig.standin.mtm_count() == 1  # not retried behind the caller's back
    assert rig.standin.replacements(target.id) == 0


def test_a_replacement_whose_answer_is_lost_did_happen(rig: Rig) -> None:
    """The caller must treat MtmUnavailable as "may have happened": here it did."""
    admin = rig.admin()
    target = rig.user()
    rig.standin.set_mtm_fault("drop_after_replace", count=1)

    exc = rig.caller(admin).fails("replace", target.id, MtmUnavailable)

    assert exc.definite is False
    assert rig.standin.replacements(target.id) == 1  # once: a PUT is never retried
    assert rig.standin.mtm_count("PUT") == 1
    old_accepted, current_accepted = rig.accepts(target), rig.accepts(rig.current(target.id))
    assert not old_accepted
    assert current_accepted


@pytest.mark.parametrize("operation", ["get", "replace"])
def test_mtm_hanging_past_the_deadline_is_mtm_unavailable_in_time(rig: Rig, operation: str) -> None:
    admin = rig.admin()
    target = rig.user()
    client = rig.client(timeout=SHORT_TIMEOUT)
    rig.standin.set_mtm_fault("hang", seconds=30, count=1)
    started = time.monotonic()

    exc = rig.caller(admin, client).fails(operation, target.id, MtmUnavailable)

    elapsed = time.monotonic() - started
    assert client.deadline_seconds == DEADLINE_FACTOR * SHORT_TIMEOUT
    assert elapsed < client.deadline_seconds + SLACK
    # A hang sends nothing at all, so the read timeout (half the deadline) ends it first.
    assert elapsed >= SHORT_TIMEOUT * 0.9
    assert "no answer in time" in str(exc)
    assert exc.definite is False
    assert rig.standin.replacements(target.id) == 0  # the stand-in was still waiting
    # A request is recorded when its hang ends; the hang was for one request only, so a retry
    # would have been answered and recorded at once: there was none.
    assert rig.standin.mtm_count() == 0


# -- the overall deadline, against a raw server dripping its answer --------------------------


@pytest.fixture
def raw_servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


@pytest.mark.parametrize(
    ("head", "byte"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X"),
        (b"HTTP/1.1 404 Not Found\r\n", b"X"),
        (b"HTTP/1.1 401 Unauthorized\r\n", b"X"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{", b" "),
    ],
    ids=["headers-200", "headers-404", "headers-401", "body"],
)
def test_an_answer_dripping_past_the_deadline_is_mtm_unavailable_naming_it(
    raw_servers: list[RawServer], head: bytes, byte: bytes
) -> None:
    """Each read gets a byte well within the read timeout: only the overall deadline ends the
    call, and a status line whose headers never ended is no refusal and no 404."""
    server = RawServer(drip(head, byte, every=0.05))
    raw_servers.append(server)
    client = MtmClient(LOOPBACK, LOOPBACK, SHORT_TIMEOUT, environ={})
    started = time.monotonic()
    try:
        with pytest.raises(MtmError) as info:
            client.technical_user(
                server.url + "/services/mtm/v1", "not-a-secret", "user-1", name=NAME
            )
    finally:
        client.close()

    elapsed = time.monotonic() - started
    assert type(info.value) is MtmUnavailable
    assert f"within the deadline ({client.deadline_seconds:g} s)" in str(info.value)
    assert client.deadline_seconds * 0.9 < elapsed < client.deadline_seconds + SLACK


# -- where the bearer may go -------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_host_outside_the_allowlist_is_refused_before_any_request(
    rig: Rig, operation: str
) -> None:
    admin = rig.admin()
    target = rig.user()
    before = rig.standin.requests_total
    base = rig.base.replace("127.0.0.1", "localhost")  # the same stand-in, named differently
    caller = rig.caller(admin, base=base)

    exc = caller.fails(operation, target.id, MtmRefused)

    assert "allowed_hosts" in str(exc)
    assert exc.definite is True
    assert rig.standin.requests_total == before
    assert rig.standin.mtm_requests == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_plain_http_to_a_host_not_allowed_insecure_is_refused_before_any_request(
    http_rig: Rig, operation: str
) -> None:
    admin = http_rig.admin()
    target = http_rig.user()
    before = http_rig.standin.requests_total
    caller = http_rig.caller(admin, http_rig.client(insecure=()))

    exc = caller.fails(operation, target.id, MtmRefused)

    assert "insecure_http_hosts" in str(exc)
    assert http_rig.standin.requests_total == before
    assert http_rig.standin.mtm_requests == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_redirect_is_refused_and_its_target_receives_nothing(
    rig: Rig, make_rig: Callable[..., Rig], operation: str
) -> None:
    target_rig = make_rig("https" if rig.https else "http")
    admin = rig.admin()
    user = rig.user()
    elsewhere = target_rig.user()  # a user the redirect's target knows
    suffix = {"get": "", "list": "", "replace": "/replaceToken"}[operation]
    location = f"{target_rig.base}/technicalusers" + (
        f"/{elsewhere.id}{suffix}" if operation != "list" else ""
    )
    rig.standin.answer_headers = {"Location": location}
    rig.standin.set_mtm_fault("status", status=302, body=b"")

    exc = rig.caller(admin).fails(operation, user.id, MtmRefused)

    assert (exc.status, exc.definite) == (302, True)
    assert target_rig.standin.requests_total == 0
    assert rig.standin.mtm_count() == 1
    assert rig.standin.replacements(user.id) == 0
    assert target_rig.standin.replacements(elsewhere.id) == 0


def test_https_with_an_untrusted_certificate_fails_before_the_bearer_is_sent(
    https_rig: Rig,
) -> None:
    admin = https_rig.admin()
    before = https_rig.standin.requests_total
    client = https_rig.client(environ={})  # the system's trust store: the stand-in is unknown

    exc = https_rig.caller(admin, client).fails("get", admin.id, MtmUnavailable)

    assert "SSLError" in str(exc)
    assert https_rig.standin.requests_total == before
    assert https_rig.standin.mtm_requests == []


def test_https_to_a_name_the_certificate_does_not_cover_fails_before_the_bearer_is_sent(
    https_rig: Rig,
) -> None:
    admin = https_rig.admin()
    before = https_rig.standin.requests_total
    client = https_rig.client(allowed=("localhost",))  # the certificate names 127.0.0.1 only
    base = https_rig.base.replace("127.0.0.1", "localhost")

    exc = https_rig.caller(admin, client, base).fails("get", admin.id, MtmUnavailable)

    assert "SSLError" in str(exc)
    assert https_rig.standin.requests_total == before


def test_https_with_the_trusted_certificate_works(https_rig: Rig) -> None:
    admin = https_rig.admin()

    user = https_rig.caller(admin).get(admin.id)

    assert https_rig.base.startswith("https://127.0.0.1:")
    assert user.id == admin.id


def test_cookies_mtm_sets_are_never_sent_back(rig: Rig) -> None:
    admin = rig.admin()
    target = rig.user()
    rig.standin.answer_headers = {"Set-Cookie": "lb=instance-7; Path=/; Max-Age=3600"}
    client = rig.client()
    caller = rig.caller(admin, client)
    caller.get(target.id)  # answered with a cookie

    for call in (caller.get, caller.replace):
        call(target.id)
        request = rig.standin.last_request
        assert request is not None
        assert request.path.startswith("/services/mtm/v1/technicalusers/")
        assert request.cookie is None
        assert "cookie" not in request.header_names
    caller.list()
    request = rig.standin.last_request
    assert request is not None
    assert (request.path, request.cookie) == ("/services/mtm/v1/technicalusers", None)
    assert "cookie" not in request.header_names


def test_calls_share_one_pooled_connection(rig: Rig) -> None:
    admin = rig.admin()
    target = rig.user()
    caller = rig.caller(admin)
    rig.standin.reset_counters()  # the exchanger's connection is counted no more

    caller.get(target.id)
    caller.list()
    caller.replace(target.id)
    caller.get(target.id)

    assert rig.standin.mtm_count() == 4
    assert rig.standin.connections_total == 1


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_request_asks_for_an_uncompressed_answer_and_carries_only_the_bearer(
    rig: Rig, operation: str
) -> None:
    admin = rig.admin()
    target = rig.user()

    rig.caller(admin).call(operation, target.id)

    request = rig.standin.last_request
    assert request is not None
    assert request.path.startswith("/services/mtm/v1/technicalusers")
    assert request.accept_encoding == "identity"
    sent = set(request.header_names) - {"content-length"}  # PUT's "0"
    assert sent == {"host", "user-agent", "accept", "accept-encoding", "authorization"}
    assert (request.client_id, request.api_token_fingerprint) == (None, None)  # no Basic
    assert request.content_type is None  # replaceToken has no body
    assert "cookie" not in request.header_names
    assert rig.standin.mtm_requests[-1].caller_id == admin.id  # the bearer was the admin's


def test_the_deadline_is_the_factor_times_the_timeout(rig: Rig) -> None:
    assert rig.client(timeout=7).deadline_seconds == DEADLINE_FACTOR * 7 == 14


# -- no secret in the logs ---------------------------------------------------------------------


def test_no_bearer_or_api_token_reaches_any_log_record_at_debug(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call, a replacement and failures at DEBUG; the fixture's scan covers this test's
    records too, this test shows that scan is not vacuous and checks each record itself."""
    admin = rig.admin()
    target = rig.user()
    caller = rig.caller(admin)
    caller.get(target.id)
    caller.list()
    replaced = caller.replace(target.id)
    rig.standin.set_mtm_fault("drop_after_replace", count=1)
    caller.fails("replace", target.id, MtmUnavailable)
    rig.standin.set_mtm_fault("status", status=500, count=1)
    caller.fails("get", target.id, MtmUnavailable)
    caller.fails("get", str(uuid.uuid4()), TechnicalUserMissing)
    lost = rig.current(target.id)  # the token the dropped answer would have carried

    assert replaced.api_token is not None
    watched = [admin.bearer, admin.api_token, target.api_token, replaced.api_token, lost.api_token]
    records = caplog.get_records("call")
    loggers = {record.name for record in records if record.levelno == logging.DEBUG}
    assert {"urllib3.connectionpool", "rotator.dev.standin"} <= loggers
    urllib3_lines = [r.getMessage() for r in records if r.name.startswith("urllib3")]
    assert any("/technicalusers" in line for line in urllib3_lines)
    leaks = [
        fingerprint(secret)
        for record in records
        for secret in watched
        if secret in record.getMessage() or secret in repr(record.__dict__)
    ]
    assert leaks == []
