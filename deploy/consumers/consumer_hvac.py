#!/usr/bin/env python3
"""Read one LeanIX access token from Vault with hvac, as a consumer that talks to Vault itself.

    VAULT_ADDR=https://vault.example.com:8200 VAULT_TOKEN=... \\
        python3 consumer_hvac.py [SECRET_PATH] [--mount secret] [--api-url URL] [--print-token]

SECRET_PATH is the output secret below the mount: the first argument, else $LEANIX_TOKEN_SECRET,
else leanix/access-tokens/acme/production. It prints when the token expires, never the token
itself unless --print-token asks for it (to pipe it on). With --api-url (LeanIX's GraphQL API,
https://acme.leanix.net/services/pathfinder/v1/graphql) it sends one query with the token and
prints the HTTP status. VAULT_CACERT and VAULT_NAMESPACE are honoured. Needs hvac and requests.

Exit 0 on success, 1 when Vault or the API refuses, 2 on a usage error.

Read the secret again whenever the token is needed, or at the latest at its `expires_at`:
rotator replaces it after about 80 % of its lifetime, so a fresh read always has at least 20 %
of the lifetime left. Do not cache the token past its `expires_at`.
"""

from __future__ import annotations

import argparse
import os
import sys

import hvac
import hvac.exceptions
import requests

DEFAULT_SECRET = "leanix/access-tokens/acme/production"  # noqa: S105 - a path, not a secret
QUERY = "{ allFactSheets { totalCount } }"
TIMEOUT_SECONDS = 10


def read_access_token(client: hvac.Client, path: str, mount: str = "secret") -> dict[str, str]:
    """The output secret's fields (`access_token`, `expires_at`, ...): KV v2
    `GET <mount>/data/<path>`. Raises hvac's InvalidPath, Forbidden, VaultError."""
    secret = client.secrets.kv.v2.read_secret_version(
        path, mount_point=mount, raise_on_deleted_version=True
    )
    return dict(secret["data"]["data"])


def call_api(api_url: str, access_token: str) -> int:
    """POST one GraphQL query with the access token as Bearer; the HTTP status."""
    response = requests.post(
        api_url,
        json={"query": QUERY},
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=TIMEOUT_SECONDS,
    )
    return response.status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Read a LeanIX access token from Vault.")
    parser.add_argument("path", nargs="?", default=os.environ.get("LEANIX_TOKEN_SECRET"))
    parser.add_argument("--mount", default="secret", help="the KV v2 mount (default: secret)")
    parser.add_argument("--api-url", help="call this LeanIX GraphQL URL with the token")
    parser.add_argument("--print-token", action="store_true", help="print the token itself")
    args = parser.parse_args(argv)
    path = args.path or DEFAULT_SECRET
    if not os.environ.get("VAULT_ADDR") or not os.environ.get("VAULT_TOKEN"):
        parser.error("set VAULT_ADDR and VAULT_TOKEN")

    client = hvac.Client(
        url=os.environ["VAULT_ADDR"],
        token=os.environ["VAULT_TOKEN"],
        verify=os.environ.get("VAULT_CACERT") or True,
        namespace=os.environ.get("VAULT_NAMESPACE") or None,
        timeout=TIMEOUT_SECONDS,
    )
    try:
        fields = read_access_token(client, path, args.mount)
    except hvac.exceptions.InvalidPath:
        print(f"no access token at {args.mount}/{path} (yet?)", file=sys.stderr)
        return 1
    except hvac.exceptions.Forbidden:
        print(f"this Vault token may not read {args.mount}/data/{path}", file=sys.stderr)
        return 1
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        print(f"Vault: {type(error).__name__}", file=sys.stderr)  # its text could hold a URL
        return 1

    access_token = fields["access_token"]
    if args.print_token:
        print(access_token)
    else:
        print(f"{args.mount}/{path}: access token valid until {fields['expires_at']}")
    if args.api_url:
        status = call_api(args.api_url, access_token)
        print(f"{args.api_url}: HTTP {status}")
        return 0 if status == 200 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
