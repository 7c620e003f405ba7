"""The stand-in's MTM technical-users API over real HTTP and HTTPS, called with plain `requests`
the way a client would: an access token from the token endpoint, then `GET /technicalusers`,
`GET /technicalusers/{id}` and `PUT /technicalusers/{id}/replaceToken` with it as the bearer.

Every test runs once per scheme. Tokens are compared, never printed: assertions see statuses,
documents with the token taken out and booleans computed beforehand (pytest's assertion rewriting
would show a token passed to a call inside an `assert`), and `same`/`differ` fail naming
fingerprints only. The `make_mtm` fixture checks every answer body as it arrives, the stand-in's
records and every log line of the test (the stand-in's and urllib3's, at DEBUG) for every secret
handed out or received.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.dev.standin import LeanIXStandIn
from rotator.redact import fingerprint
from tests.integration.conftest import StandinTls

pytestmark = pytest.mark.integration

LEAK_WINDOW = 12
ISO_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
USER_FIELDS = {
    "id",
    "userName",
    "email",
    "permissionRole",
    "customerRoles",
    "accountId",
    "workspaceId",
    "apiTokenData",
}
TOKEN_DATA_FIELDS = {"id", "expiry", "description"}


def same(a: str, b: str, what: str) -> None:
    """Fail unless two tokens are equal, naming their fingerprints only."""
    if not secrets.compare_digest(a, b):
        raise AssertionError(f"{what}: {fingerprint(a)} is not {fingerprint(b)}")


def differ(a: str, b: str, what: str) -> None:
    if secrets.compare_digest(a, b):
        raise AssertionError(f"{what}: both are {fingerprint(a)}")


@dataclass
class Answer:
    """An MTM answer with any `apiTokenData.token` taken out of `document` into `token`."""

    status: int
    document: Any  # the JSON body, None if it was no JSON
    headers: dict[str, str]
    token: str | None = field(default=None, repr=False)
    raw: bytes = field(default=b"", repr=False)

    def new_user(self) -> User:
        """The replaced user with the new API token this answer carried."""
        assert self.token is not None, "no token in the answer"
        return User(self.data["id"], self.token)

    @property
    def data(self) -> Any:
        return self.document["data"]

    @property
    def error(self) -> str:
        assert self.document["status"] == "ERROR"
        assert self.document["data"] is None
        return str(self.document["errors"][0]["message"])


@dataclass(frozen=True)
class User:
    """A technical user's id and an API token of it; the token stays out of every repr, so pytest
    can explain an assertion about a call taking a User without showing it."""

    id: str
    api_token: str = field(repr=False)


@dataclass(frozen=True)
class Admin(User):
    """A User with an access token obtained for its API token (ADMIN unless made otherwise)."""

    access_token: str = field(repr=False)


@dataclass
class Mtm:
    """One stand-in, a `requests` session to it, and every secret the test has seen."""

    standin: LeanIXStandIn
    session: requests.Session
    verify: str | bool
    secrets: list[str] = field(repr=False)

    def user(self, workspace_id: str | None = None, **options: Any) -> User:
        """A new technical user (options go to `add_token`)."""
        api_token = "api-" + secrets.token_urlsafe(24)
        self.secrets.append(api_token)
        return User(
            self.standin.add_token(api_token, workspace_id=workspace_id, **options), api_token
        )

    def admin(self, workspace_id: str | None = None, **options: Any) -> Admin:
        """A new technical user and an access token of it."""
        user = self.user(workspace_id, **options)
        return Admin(user.id, user.api_token, self.access_token(user))

    def current(self, user_id: str) -> User:
        """The user with the API token the stand-in holds for it now."""
        api_token = self.standin.current_api_token(user_id)
        self.secrets.append(api_token)
        return User(user_id, api_token)

    def exchange(self, user: User, client_id: str = "apitoken") -> requests.Response:
        response = self.session.post(
            self.standin.token_url,
            auth=(client_id, user.api_token),
            data={"grant_type": "client_credentials"},
            timeout=5,
            verify=self.verify,
        )
        if response.status_code == 200:
            self.secrets.append(response.json()["access_token"])
        return response

    def exchange_status(self, user: User, client_id: str = "apitoken") -> int:
        return self.exchange(user, client_id).status_code

    def access_token(self, user: User) -> str:
        response = self.exchange(user)
        assert response.status_code == 200
        return str(response.json()["access_token"])

    def accepts(self, user: User) -> bool:
        return self.standin.accepts(user.api_token)

    def call(
        self,
        method: str,
        path: str,
        bearer: Admin | str | None,
        *,
        timeout: float = 5,
        **params: Any,
    ) -> Answer:
        """`bearer`: an Admin's access token, or a literal string that is not a secret."""
        if isinstance(bearer, Admin):
            bearer = bearer.access_token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        response = self.session.request(
            method,
            self.standin.mtm_url + path,
            params=params,
            headers=headers,
            timeout=timeout,
            verify=self.verify,
        )
        raw = response.content
        self.assert_clean(raw.decode(errors="replace"), f"the answer to {method} {path}")
        try:
            document = response.json()
        except ValueError:
            return Answer(response.status_code, None, dict(response.headers), raw=raw)
        token = None
        data = document.get("data") if isinstance(document, dict) else None
        token_data = data.get("apiTokenData") if isinstance(data, dict) else None
        if isinstance(token_data, dict) and "token" in token_data:
            token = token_data.pop("token")
            self.secrets.append(token)
            # the new token appears once, in apiTokenData.token, and nowhere else
            self.assert_clean(json.dumps(document), f"the rest of the answer to {method} {path}")
        return Answer(response.status_code, document, dict(response.headers), token, raw)

    def list(self, bearer: Admin | str | None, **params: Any) -> Answer:
        return self.call("GET", "/technicalusers", bearer, **params)

    def get(self, user_id: str, bearer: Admin | str | None) -> Answer:
        return self.call("GET", f"/technicalusers/{user_id}", bearer)

    def replace(self, user_id: str, bearer: Admin | str | None, **params: Any) -> Answer:
        return self.call("PUT", f"/technicalusers/{user_id}/replaceToken", bearer, **params)

    def assert_clean(self, text: str, what: str) -> None:
        """No secret, nor any 12-character piece of one (a truncated leak is a leak), in `text`:
        every 12-character piece of `text` is looked up among the secrets' pieces."""
        pieces = {
            secret[start : start + LEAK_WINDOW]: secret
            for secret in self.secrets
            for start in range(max(1, len(secret) - LEAK_WINDOW + 1))
        }
        for start in range(max(1, len(text) - LEAK_WINDOW + 1)):
            if (secret := pieces.get(text[start : start + LEAK_WINDOW])) is not None:
                raise AssertionError(f"part of a secret ({fingerprint(secret)}) is in {what}")


@pytest.fixture(params=["http", "https"])
def make_mtm(
    request: pytest.FixtureRequest,
    standin_key: rsa.RSAPrivateKey,
    standin_tls: StandinTls,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Callable[..., Mtm]]:
    """Makes harnesses on started stand-ins (options go to LeanIXStandIn) of the test's scheme;
    afterwards checks the stand-ins' records and the test's logs for every secret seen."""
    caplog.set_level(logging.DEBUG)
    https = request.param == "https"
    seen: list[str] = []
    made: list[Mtm] = []
    with ExitStack() as stack:

        def make(**options: Any) -> Mtm:
            context = standin_tls.server if https else None
            standin = stack.enter_context(
                LeanIXStandIn(private_key=standin_key, ssl_context=context, **options)
            )
            session = stack.enter_context(requests.Session())  # closed before the stand-in
            mtm = Mtm(standin, session, str(standin_tls.cert) if https else False, seen)
            made.append(mtm)
            return mtm

        yield make
        for mtm in made:
            assert mtm.standin.base_url.startswith(request.param + "://")
            records = repr(mtm.standin.mtm_requests) + repr(mtm.standin.technical_users())
            mtm.assert_clean(records, "the stand-in's records")
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    made[0].assert_clean("\n".join(formatter.format(r) for r in records), "the logs")


@pytest.fixture
def mtm(make_mtm: Callable[..., Mtm]) -> Mtm:
    return make_mtm()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


# -- technical users are the registrations ------------------------------------------------------


def test_the_mtm_url_is_the_token_url_without_oauth2_token(mtm: Mtm) -> None:
    assert mtm.standin.token_url == mtm.standin.mtm_url + "/oauth2/token"


def test_add_token_returns_the_technical_user_that_the_jwt_names(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    user = mtm.admin(workspace, user_name="ci-bot", role="MEMBER")

    principal = _claims(user.access_token)["principal"]
    held = mtm.standin.technical_user(user.id)

    assert principal["id"] == user.id
    assert principal["username"] == "ci-bot" == held.user_name
    assert principal["permission"]["workspaceId"] == workspace == held.workspace_id
    assert principal["permission"]["workspaceName"] == "acme" == held.workspace_name
    assert principal["account"]["id"] == held.account_id
    assert principal["role"] == "MEMBER" == held.role
    same(fingerprint(user.api_token), held.api_token_fingerprint, "the held token")


def test_default_user_names_are_numbered_per_workspace_and_names_are_unique_there(
    mtm: Mtm,
) -> None:
    workspace = mtm.standin.add_workspace("acme")
    first, second = mtm.user(workspace), mtm.user(workspace)
    mtm.user(workspace, user_name="ci-bot")
    mtm.user(None, user_name="ci-bot")  # another workspace: no clash

    with pytest.raises(ValueError, match="taken"):
        mtm.user(workspace, user_name="ci-bot")
    names = [mtm.standin.technical_user(user.id).user_name for user in (first, second)]
    assert names == ["acme-technical-user-1", "acme-technical-user-2"]


def test_users_of_one_workspace_share_its_account(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    users = [mtm.standin.technical_user(mtm.user(workspace).id) for _ in range(2)]
    other = mtm.standin.technical_user(mtm.user().id)

    assert users[0].account_id == users[1].account_id != other.account_id


def test_re_adding_a_current_token_keeps_its_technical_user(mtm: Mtm) -> None:
    user = mtm.user(role="MEMBER")
    mtm.standin.revoke(user.api_token)

    again = mtm.standin.add_token(user.api_token, role="ADMIN")

    assert again == user.id
    assert mtm.standin.technical_user(user.id).role == "ADMIN"
    assert mtm.exchange_status(user) == 200  # un-revoked


def test_an_api_token_past_its_expiry_is_401_at_the_token_endpoint(mtm: Mtm) -> None:
    user = mtm.user()
    before = mtm.exchange_status(user)

    mtm.standin.set_expiry(user.id, datetime.now(UTC) - timedelta(seconds=1))

    assert (before, mtm.exchange_status(user), mtm.accepts(user)) == (200, 401, False)


def test_an_expiry_must_be_aware(mtm: Mtm) -> None:
    user = mtm.user()

    with pytest.raises(ValueError, match="aware"):
        mtm.standin.set_expiry(user.id, datetime(2030, 1, 1))  # naive, on purpose


# -- GET /technicalusers --------------------------------------------------------------------------


def test_listing_pages_by_user_name_and_counts_the_workspace(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace, user_name="m-admin")
    for name in ["g-seven", "a-one", "C-three", "f-six", "b-two", "e-five"]:
        mtm.user(workspace, user_name=name)

    pages = [mtm.list(admin, page=page, size=3) for page in (1, 2, 3, 4)]

    assert [answer.status for answer in pages] == [200] * 4
    assert [answer.document["total"] for answer in pages] == [7] * 4
    listed = [[user["userName"] for user in answer.data] for answer in pages]
    assert listed == [
        ["a-one", "b-two", "C-three"],
        ["e-five", "f-six", "g-seven"],
        ["m-admin"],
        [],
    ]
    envelope = {key: pages[0].document[key] for key in ("status", "message", "errors")}
    assert envelope == {"status": "OK", "message": None, "errors": []}
    assert isinstance(pages[0].document["type"], str)


def test_listing_defaults_to_page_one_of_thirty(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    for _ in range(31):
        mtm.user(workspace)

    first, second = mtm.list(admin), mtm.list(admin, page=2)

    assert (len(first.data), first.document["total"]) == (30, 32)
    assert len(second.data) == 2
    assert {u["id"] for u in first.data}.isdisjoint(u["id"] for u in second.data)


def test_a_page_of_a_hundred_is_allowed(mtm: Mtm) -> None:
    admin = mtm.admin()

    answer = mtm.list(admin, size=100)

    assert (answer.status, answer.document["total"], len(answer.data)) == (200, 1, 1)


@pytest.mark.parametrize(
    "params",
    [
        {"size": 101},
        {"size": 0},
        {"size": -1},
        {"page": 0},
        {"page": -1},
        {"size": "x"},
        {"page": "1.5"},
    ],
)
def test_listing_out_of_bounds_is_400(mtm: Mtm, params: dict[str, Any]) -> None:
    admin = mtm.admin()

    answer = mtm.list(admin, **params)

    assert answer.status == 400
    assert answer.error


def test_listing_sorts_descending_on_request_and_refuses_other_sorts(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace, user_name="b")
    mtm.user(workspace, user_name="a")

    descending = mtm.list(admin, sort="userName-DESC")
    other = mtm.list(admin, sort="createdAt-DESC")

    assert [user["userName"] for user in descending.data] == ["b", "a"]
    assert other.status == 400


def test_listing_filters_by_query_user_name(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace, user_name="admin")
    mtm.user(workspace, user_name="ci-deploy")
    mtm.user(workspace, user_name="CI-report")

    answer = mtm.list(admin, queryUserName="ci-")

    assert sorted(user["userName"] for user in answer.data) == ["CI-report", "ci-deploy"]
    assert answer.document["total"] == 2


def test_listing_shows_only_the_callers_workspace_and_no_token(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    colleague = mtm.user(workspace, email="ops@example.com")
    mtm.user(mtm.standin.add_workspace("acme"))  # same name, another workspace
    mtm.admin()

    answer = mtm.list(admin)

    assert {user["id"] for user in answer.data} == {admin.id, colleague.id}
    assert answer.document["total"] == 2
    for user in answer.data:
        assert set(user) == USER_FIELDS
        assert set(user["apiTokenData"]) == TOKEN_DATA_FIELDS
        assert user["workspaceId"] == workspace
    carries_a_token = answer.token is not None
    assert not carries_a_token


# -- GET /technicalusers/{id} ---------------------------------------------------------------------


def test_get_answers_the_technical_user_as_mtm_describes_it(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    user = mtm.user(
        workspace, user_name="ci-bot", email="ci@example.com", role="VIEWER", description="CI"
    )
    mtm.standin.set_expiry(user.id, datetime(2027, 12, 1, 10, 0, tzinfo=UTC))
    held = mtm.standin.technical_user(user.id)

    answer = mtm.get(user.id, admin)

    assert answer.status == 200
    assert answer.document["status"] == "OK"
    assert answer.data == {
        "id": user.id,
        "userName": "ci-bot",
        "email": "ci@example.com",
        "permissionRole": "VIEWER",
        "customerRoles": None,
        "accountId": held.account_id,
        "workspaceId": workspace,
        "apiTokenData": {
            "id": held.token_id,
            "expiry": "2027-12-01T10:00:00Z",
            "description": "CI",
        },
    }


def test_get_of_a_user_in_another_workspace_is_404_like_an_unknown_one(mtm: Mtm) -> None:
    admin = mtm.admin()
    elsewhere = mtm.admin()

    foreign, unknown = mtm.get(elsewhere.id, admin), mtm.get("no-such-id", admin)

    assert (foreign.status, unknown.status) == (404, 404)
    assert foreign.document == unknown.document
    assert foreign.error


def test_a_deleted_technical_user_is_404_and_its_tokens_open_nothing(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    doomed = mtm.admin(workspace)

    mtm.standin.delete_technical_user(doomed.id)

    assert mtm.get(doomed.id, admin).status == 404
    assert mtm.list(admin).document["total"] == 1
    assert (mtm.exchange_status(doomed), mtm.accepts(doomed)) == (401, False)
    assert mtm.list(doomed).status == 401  # its access token from before
    with pytest.raises(KeyError):
        mtm.standin.technical_user(doomed.id)


def test_a_token_re_added_after_its_user_was_deleted_makes_a_new_user(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    doomed = mtm.admin(workspace)
    mtm.standin.delete_technical_user(doomed.id)

    reborn = mtm.standin.add_token(doomed.api_token, workspace_id=workspace)

    assert reborn != doomed.id
    assert mtm.get(doomed.id, admin).status == 404
    assert mtm.exchange_status(doomed) == 200  # the token is back, for the new user
    assert mtm.list(doomed).status == 401  # the deleted user's access token stays dead


# -- who may call ---------------------------------------------------------------------------------


def test_a_member_caller_is_403_and_changes_nothing(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    member = mtm.admin(workspace, role="MEMBER")
    user = mtm.user(workspace)

    answers = [
        mtm.list(member),
        mtm.get(user.id, member),
        mtm.replace(user.id, member),
        mtm.replace(member.id, member),
    ]

    assert [answer.status for answer in answers] == [403] * 4
    assert all(answer.error for answer in answers)
    assert mtm.standin.replacements(user.id) == mtm.standin.replacements(member.id) == 0
    assert mtm.exchange_status(user) == 200


def test_no_bearer_is_401_with_a_bearer_challenge(mtm: Mtm) -> None:
    user = mtm.user()

    answers = [mtm.list(None), mtm.get(user.id, None), mtm.replace(user.id, None)]

    assert [answer.status for answer in answers] == [401] * 3
    assert all(answer.headers["WWW-Authenticate"].startswith("Bearer ") for answer in answers)
    assert answers[0].error
    assert mtm.standin.replacements(user.id) == 0


def test_a_tampered_bearer_is_401(mtm: Mtm) -> None:
    member = mtm.admin(role="MEMBER")
    header, _, signature = member.access_token.split(".")
    claims = _claims(member.access_token)
    claims["principal"]["permission"]["role"] = "ADMIN"
    forged = Admin(member.id, member.api_token, f"{header}.{_b64(_compact(claims))}.{signature}")
    mtm.secrets.append(forged.access_token)

    assert mtm.list(forged).status == 401


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c"])
def test_a_garbage_bearer_is_401(mtm: Mtm, garbage: str) -> None:
    mtm.admin()

    assert mtm.list(garbage).status == 401


def test_the_api_token_itself_is_no_bearer(mtm: Mtm) -> None:
    admin = mtm.admin()
    api_token_as_bearer = Admin(admin.id, admin.api_token, admin.api_token)

    assert mtm.list(api_token_as_bearer).status == 401


def test_an_access_token_of_a_revoked_api_token_is_401(mtm: Mtm) -> None:
    admin = mtm.admin()

    mtm.standin.revoke(admin.api_token)

    assert mtm.list(admin).status == 401


def test_unknown_paths_are_404_and_wrong_methods_405(mtm: Mtm) -> None:
    admin = mtm.admin()

    unknown = mtm.call("GET", f"/technicalusers/{admin.id}/changelog/x", admin)
    get_replace = mtm.call("GET", f"/technicalusers/{admin.id}/replaceToken", admin)
    delete = mtm.call("DELETE", f"/technicalusers/{admin.id}", admin)
    post_list = mtm.call("POST", "/technicalusers", admin)

    assert unknown.status == 404
    assert (get_replace.status, get_replace.headers["Allow"]) == (405, "PUT")
    assert (delete.status, delete.headers["Allow"]) == (405, "GET")
    assert post_list.status == 405
    assert mtm.standin.replacements(admin.id) == 0


# -- PUT /technicalusers/{id}/replaceToken -------------------------------------------------------


def test_replace_returns_a_new_token_and_the_old_one_is_401_at_once(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    old = mtm.user(workspace)

    answer = mtm.replace(old.id, admin)

    assert answer.status == 200
    assert answer.document["status"] == "OK"
    assert answer.data["id"] == old.id
    assert set(answer.data["apiTokenData"]) == TOKEN_DATA_FIELDS  # its token taken out
    new = answer.new_user()
    differ(new.api_token, old.api_token, "the replacement")
    same(new.api_token, mtm.current(old.id).api_token, "the stand-in's current token")
    assert (mtm.exchange_status(old), mtm.exchange_status(new)) == (401, 200)
    assert (mtm.accepts(old), mtm.accepts(new)) == (False, True)
    assert mtm.standin.replacements(old.id) == 1
    held = mtm.standin.technical_user(old.id)
    same(fingerprint(new.api_token), held.api_token_fingerprint, "the held token")
    assert answer.data["apiTokenData"]["id"] == held.token_id


def test_the_new_token_speaks_for_the_same_user_workspace_role_and_client_id(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    user = mtm.user(workspace, role="VIEWER", client_id="custom-client")

    new = mtm.replace(user.id, admin).new_user()

    assert mtm.exchange_status(new) == 401  # client id "apitoken" is not the user's
    response = mtm.exchange(new, client_id="custom-client")
    assert response.status_code == 200
    principal = _claims(response.json()["access_token"])["principal"]
    assert (principal["id"], principal["role"]) == (user.id, "VIEWER")
    assert principal["permission"]["workspaceId"] == workspace


def test_an_access_token_from_before_the_replacement_stays_valid(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    user = mtm.admin(workspace)

    assert mtm.replace(user.id, admin).status == 200

    assert mtm.list(user).status == 200  # its access token was issued for the old API token
    graphql = mtm.session.post(
        mtm.standin.graphql_url,
        json={"query": "{ allFactSheets { totalCount } }"},
        headers={"Authorization": f"Bearer {user.access_token}"},
        timeout=5,
        verify=mtm.verify,
    )
    assert graphql.status_code == 200


def test_an_admin_may_replace_its_own_token_and_keeps_working(mtm: Mtm) -> None:
    admin = mtm.admin()

    answer = mtm.replace(admin.id, admin)

    assert answer.status == 200
    new = answer.new_user()
    assert mtm.get(admin.id, admin).status == 200  # the old access token
    assert (mtm.exchange_status(admin), mtm.exchange_status(new)) == (401, 200)
    renewed = Admin(new.id, new.api_token, mtm.access_token(new))
    second = mtm.replace(admin.id, renewed)
    assert (second.status, mtm.standin.replacements(admin.id)) == (200, 2)
    differ(second.new_user().api_token, new.api_token, "the second replacement")


def test_replace_of_an_unknown_or_foreign_user_is_404_and_replaces_nothing(mtm: Mtm) -> None:
    admin = mtm.admin()
    elsewhere = mtm.admin()

    unknown = mtm.replace("no-such-id", admin)
    foreign = mtm.replace(elsewhere.id, admin)

    assert (unknown.status, foreign.status) == (404, 404)
    carry_tokens = (unknown.token is not None, foreign.token is not None)
    assert carry_tokens == (False, False)
    assert mtm.standin.replacements(elsewhere.id) == 0
    assert mtm.exchange_status(elsewhere) == 200


def test_revoke_ends_the_access_tokens_that_a_replacement_leaves_alone(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    replaced, revoked = mtm.admin(workspace), mtm.admin(workspace)

    assert mtm.replace(replaced.id, admin).status == 200
    mtm.standin.revoke(revoked.api_token)

    assert (mtm.list(replaced).status, mtm.list(revoked).status) == (200, 401)


# -- expiry on the wire -------------------------------------------------------------------------


def test_a_replacement_expires_a_year_from_now_in_iso_8601_with_z(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_expiry(admin.id, datetime.now(UTC) + timedelta(days=3))

    before = datetime.now(UTC).replace(microsecond=0)
    answer = mtm.replace(admin.id, admin)
    after = datetime.now(UTC)

    expiry = answer.data["apiTokenData"]["expiry"]
    assert ISO_INSTANT.match(expiry), expiry
    parsed = datetime.fromisoformat(expiry)
    assert before + timedelta(days=365) <= parsed <= after + timedelta(days=365)
    assert parsed == mtm.standin.technical_user(admin.id).expiry


def test_a_millisecond_expiry_keeps_its_milliseconds_in_iso(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_expiry(admin.id, datetime(2027, 12, 1, 10, 0, 0, 250_999, tzinfo=UTC))

    expiry = mtm.get(admin.id, admin).data["apiTokenData"]["expiry"]

    assert expiry == "2027-12-01T10:00:00.250Z"


def test_epoch_ms_mode_sends_the_expiry_as_epoch_milliseconds(make_mtm: Callable[..., Mtm]) -> None:
    mtm = make_mtm(expiry_format="epoch_ms")
    admin = mtm.admin()
    mtm.standin.set_expiry(admin.id, datetime(2027, 12, 1, 10, 0, tzinfo=UTC))

    listed = mtm.list(admin).data[0]["apiTokenData"]["expiry"]
    replaced = mtm.replace(admin.id, admin).data["apiTokenData"]["expiry"]

    assert listed == 1_827_655_200_000  # 2027-12-01T10:00:00Z
    assert isinstance(replaced, int)
    new_expiry = mtm.standin.technical_user(admin.id).expiry
    assert replaced == int(new_expiry.timestamp()) * 1000 + new_expiry.microsecond // 1000


def test_an_unknown_expiry_format_is_refused(standin_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="expiry_format"):
        LeanIXStandIn(private_key=standin_key, expiry_format="rfc822")


def test_replace_keeps_expiry_keeps_the_old_expiry(make_mtm: Callable[..., Mtm]) -> None:
    mtm = make_mtm(replace_keeps_expiry=True)
    admin = mtm.admin()
    mtm.standin.set_expiry(admin.id, datetime(2027, 12, 1, 10, 0, tzinfo=UTC))

    answer = mtm.replace(admin.id, admin)

    assert answer.data["apiTokenData"]["expiry"] == "2027-12-01T10:00:00Z"
    assert mtm.standin.technical_user(admin.id).expiry == datetime(2027, 12, 1, 10, tzinfo=UTC)
    assert mtm.standin.replacements(admin.id) == 1


def test_replace_keeps_expiry_and_the_validity_are_per_user_options_too(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    keeper = mtm.user(workspace, replace_keeps_expiry=True)
    short = mtm.user(workspace, token_validity=timedelta(days=30))
    mtm.standin.set_expiry(keeper.id, datetime(2027, 12, 1, 10, 0, tzinfo=UTC))

    kept = mtm.replace(keeper.id, admin).data["apiTokenData"]["expiry"]
    before = datetime.now(UTC).replace(microsecond=0)
    renewed = datetime.fromisoformat(mtm.replace(short.id, admin).data["apiTokenData"]["expiry"])

    assert kept == "2027-12-01T10:00:00Z"
    assert before + timedelta(days=30) <= renewed <= datetime.now(UTC) + timedelta(days=30)
    assert mtm.standin.technical_user(admin.id).replace_keeps_expiry is False


# -- MTM faults ---------------------------------------------------------------------------------


def test_a_status_fault_answers_that_status_for_count_requests(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("status", status=503, count=2, retry_after=7)

    answers = [mtm.list(admin) for _ in range(3)]

    assert [answer.status for answer in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert answers[0].error
    assert [record.fault for record in mtm.standin.mtm_requests] == ["status", "status", None]


def test_a_status_fault_sends_a_given_body(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("status", status=429, body={"status": "ERROR", "errors": []})

    answer = mtm.list(admin)

    assert (answer.status, answer.document) == (429, {"status": "ERROR", "errors": []})


def test_a_fault_for_a_path_leaves_other_paths_alone_and_wins_over_a_general_one(
    mtm: Mtm,
) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("status", status=500, path="*/replaceToken")
    mtm.standin.set_mtm_fault("status", status=502, path="/technicalusers")
    mtm.standin.set_mtm_fault("status", status=503)

    replaced, listed, got = mtm.replace(admin.id, admin), mtm.list(admin), mtm.get(admin.id, admin)

    assert (replaced.status, listed.status, got.status) == (500, 502, 503)
    assert mtm.standin.replacements(admin.id) == 0
    mtm.standin.clear_mtm_faults()
    assert mtm.list(admin).status == 200


def test_mtm_faults_leave_the_token_endpoint_alone_and_token_faults_leave_mtm(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("status", status=503)
    exchanged = mtm.exchange_status(admin)
    mtm.standin.clear_mtm_faults()
    mtm.standin.set_fault("status", status=503)

    assert (exchanged, mtm.list(admin).status) == (200, 200)


def test_drop_after_replace_replaces_for_real_but_never_answers(mtm: Mtm) -> None:
    workspace = mtm.standin.add_workspace("acme")
    admin = mtm.admin(workspace)
    old = mtm.user(workspace)
    mtm.standin.set_mtm_fault("drop_after_replace", count=1)

    listed = mtm.list(admin)  # not a replacement: answered, the fault kept
    with pytest.raises(requests.ConnectionError):
        mtm.replace(old.id, admin)

    assert listed.status == 200
    assert mtm.standin.replacements(old.id) == 1
    current = mtm.current(old.id)
    differ(current.api_token, old.api_token, "the token after the dropped answer")
    assert (mtm.exchange_status(old), mtm.exchange_status(current)) == (401, 200)
    record = mtm.standin.mtm_requests[-1]
    assert (record.method, record.status, record.fault) == ("PUT", None, "drop_after_replace")
    assert record.caller_id == admin.id
    again = mtm.replace(old.id, admin)  # count=1: the next one is answered
    assert (again.status, mtm.standin.replacements(old.id)) == (200, 2)


def test_drop_after_replace_is_not_spent_on_a_refused_replacement(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("drop_after_replace", count=1)

    refused = mtm.replace("no-such-id", admin)
    with pytest.raises(requests.ConnectionError):
        mtm.replace(admin.id, admin)

    assert refused.status == 404
    assert mtm.standin.replacements(admin.id) == 1


def test_a_hang_fault_answers_normally_after_the_wait(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("hang", seconds=0.5, count=1)

    started = time.monotonic()
    answer = mtm.list(admin)
    elapsed = time.monotonic() - started

    assert (answer.status, answer.document["total"]) == (200, 1)
    assert elapsed >= 0.5
    assert mtm.standin.mtm_requests[-1].fault == "hang"


def test_a_hang_fault_outlasts_a_client_timeout(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("hang", seconds=5, count=1, path="*/replaceToken")

    with pytest.raises(requests.ReadTimeout):
        mtm.call("PUT", f"/technicalusers/{admin.id}/replaceToken", admin, timeout=0.3)

    assert mtm.get(admin.id, admin).status == 200  # other requests go on meanwhile
    assert mtm.standin.replacements(admin.id) == 0  # still hanging


def test_a_garbage_fault_is_a_200_that_is_not_json(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("garbage", count=1)

    answer = mtm.list(admin)

    assert (answer.status, answer.document) == (200, None)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.raw.startswith(b"<html>")


def test_a_close_fault_closes_before_anything_happens(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.standin.set_mtm_fault("close", count=1, path="*/replaceToken")

    with pytest.raises(requests.ConnectionError):
        mtm.replace(admin.id, admin)

    assert mtm.standin.replacements(admin.id) == 0
    assert mtm.exchange_status(admin) == 200


@pytest.mark.parametrize(
    ("mode", "params", "message"),
    [
        ("bogus", {}, "unknown MTM fault mode"),
        ("status", {}, "needs status"),
        ("hang", {"seconds": 1, "status": 500}, "takes no status"),
    ],
)
def test_set_mtm_fault_refuses_what_it_does_not_know(
    mtm: Mtm, mode: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mtm.standin.set_mtm_fault(mode, **params)
    with pytest.raises(ValueError, match="count"):
        mtm.standin.set_mtm_fault("garbage", count=0)


# -- what the stand-in records ------------------------------------------------------------------


def test_mtm_requests_are_recorded_by_method_path_status_and_caller(mtm: Mtm) -> None:
    admin = mtm.admin()
    mtm.list(admin, page=1, size=5)
    mtm.get(admin.id, admin)
    mtm.list(None)

    records = mtm.standin.mtm_requests

    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", "/services/mtm/v1/technicalusers", 200),
        ("GET", f"/services/mtm/v1/technicalusers/{admin.id}", 200),
        ("GET", "/services/mtm/v1/technicalusers", 401),
    ]
    assert records[0].query == (("page", "1"), ("size", "5"))
    assert [r.caller_id for r in records] == [admin.id, admin.id, None]
    assert mtm.standin.mtm_count("GET", "/technicalusers") == 2
    assert mtm.standin.mtm_count("GET") == 3
    assert mtm.standin.mtm_count("PUT", "*/replaceToken") == 0
    mtm.standin.reset_counters()
    assert mtm.standin.mtm_requests == []


def test_the_token_endpoint_is_not_an_mtm_request(mtm: Mtm) -> None:
    mtm.admin()

    assert mtm.standin.mtm_requests == []


# -- the leak checks themselves -----------------------------------------------------------------


def test_the_leak_checks_see_both_sides_logs_and_catch_a_piece_of_a_secret(
    mtm: Mtm, caplog: pytest.LogCaptureFixture
) -> None:
    """The fixture's checks would pass vacuously if nothing were captured or matched."""
    admin = mtm.admin()
    mtm.replace(admin.id, admin)

    loggers = {record.name for record in caplog.records if record.levelno == logging.DEBUG}
    assert {"urllib3.connectionpool", "rotator.dev.standin"} <= loggers
    with pytest.raises(AssertionError, match="part of a secret"):
        mtm.assert_clean("<" + admin.access_token[100:112] + ">", "a sample")
