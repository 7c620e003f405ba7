"""The stand-in's consumer API (`POST /services/pathfinder/v1/graphql`) over real HTTP: it opens
for a bearer access token the stand-in issued and still honours, and for nothing else.

Tokens are compared, never printed: no assertion here puts a token into its message.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from typing import Any

import pytest
import requests

from rotator.dev.standin import GRAPHQL_ANSWER, LeanIXStandIn

pytestmark = pytest.mark.integration

QUERY = {"query": "{ allFactSheets { totalCount } }"}


def access_token(standin: LeanIXStandIn, api_token: str) -> str:
    """An access token from the stand-in's token endpoint, the way a client exchanges."""
    response = requests.post(
        standin.token_url,
        auth=("apitoken", api_token),
        data={"grant_type": "client_credentials"},
        timeout=5,
    )
    assert response.status_code == 200
    return str(response.json()["access_token"])


def registered(standin: LeanIXStandIn) -> str:
    api_token = "api-" + secrets.token_urlsafe(24)
    standin.add_token(api_token)
    return api_token


def call_api(standin: LeanIXStandIn, token: str | None, body: Any = QUERY) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(standin.graphql_url, json=body, headers=headers, timeout=5)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_the_api_url_is_the_pathfinder_graphql_path(standin: LeanIXStandIn) -> None:
    assert standin.graphql_url == standin.base_url + "/services/pathfinder/v1/graphql"


def test_an_issued_access_token_opens_the_api(
    standin: LeanIXStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    token = access_token(standin, registered(standin))

    with caplog.at_level(logging.DEBUG):
        response = call_api(standin, token)

    assert response.status_code == 200
    assert response.json() == GRAPHQL_ANSWER
    assert not any(token in record.getMessage() for record in caplog.records), "token logged"


def test_no_authorization_is_401_with_a_bearer_challenge(standin: LeanIXStandIn) -> None:
    response = call_api(standin, None)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_the_api_token_itself_does_not_open_the_api(standin: LeanIXStandIn) -> None:
    api_token = registered(standin)

    basic = requests.post(standin.graphql_url, json=QUERY, auth=("apitoken", api_token), timeout=5)
    bearer = call_api(standin, api_token)

    assert (basic.status_code, bearer.status_code) == (401, 401)


def test_a_token_with_altered_claims_is_401(standin: LeanIXStandIn) -> None:
    token = access_token(standin, registered(standin))
    header, _, signature = token.split(".")
    claims = _claims(token)
    claims["principal"]["role"] = "SUPERUSER"
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"

    assert call_api(standin, forged).status_code == 401


def test_a_token_with_an_altered_signature_is_401(standin: LeanIXStandIn) -> None:
    token = access_token(standin, registered(standin))
    header, claims, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))

    assert call_api(standin, f"{header}.{claims}.{flipped}").status_code == 401


def test_an_unsigned_token_is_401(standin: LeanIXStandIn) -> None:
    token = access_token(standin, registered(standin))
    _, claims, _ = token.split(".")
    none = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())

    assert call_api(standin, f"{none}.{claims}.").status_code == 401


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "e30.e30.", "x" * 5000])
def test_garbage_bearer_tokens_are_401(standin: LeanIXStandIn, garbage: str) -> None:
    assert call_api(standin, garbage).status_code == 401


def test_an_expired_token_is_401(standin: LeanIXStandIn) -> None:
    standin.lifetime_seconds = 0  # exp is the second it was issued in: already past
    token = access_token(standin, registered(standin))

    assert call_api(standin, token).status_code == 401


def test_a_token_signed_with_another_key_is_401(standin: LeanIXStandIn) -> None:
    with LeanIXStandIn() as other:  # its own, freshly generated key
        token = access_token(other, registered(other))

    assert call_api(standin, token).status_code == 401


def test_a_token_another_stand_in_issued_with_the_same_key_is_401(
    standin: LeanIXStandIn, standin_key: Any
) -> None:
    with LeanIXStandIn(private_key=standin_key) as twin:
        token = access_token(twin, registered(twin))

    assert call_api(standin, token).status_code == 401


def test_a_token_of_a_revoked_api_token_is_401_until_restored(standin: LeanIXStandIn) -> None:
    api_token = registered(standin)
    token = access_token(standin, api_token)

    standin.revoke(api_token)
    revoked = call_api(standin, token).status_code
    standin.restore(api_token)

    assert (revoked, call_api(standin, token).status_code) == (401, 200)


def test_the_api_wants_post_and_a_json_query(standin: LeanIXStandIn) -> None:
    token = access_token(standin, registered(standin))
    headers = {"Authorization": f"Bearer {token}"}

    get = requests.get(standin.graphql_url, headers=headers, timeout=5)
    no_query = call_api(standin, token, body={"variables": {}})
    not_json = requests.post(standin.graphql_url, data=b"{", headers=headers, timeout=5)

    assert (get.status_code, no_query.status_code, not_json.status_code) == (405, 400, 400)


def test_token_faults_leave_the_api_alone(standin: LeanIXStandIn) -> None:
    token = access_token(standin, registered(standin))
    standin.set_fault("status", status=503)

    exchange = requests.post(
        standin.token_url,
        auth=("apitoken", "any"),
        data={"grant_type": "client_credentials"},
        timeout=5,
    )

    assert (exchange.status_code, call_api(standin, token).status_code) == (503, 200)
