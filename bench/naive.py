"""The naive baseline: one token after the other, the way LeanIX's documentation example does
the exchange, with a new connection for every request.

Per token: a fresh hvac client reads the source secret, `requests.post` (no Session, so a new
TCP connection) exchanges the API token, and the same client writes the output secret. Prints one
JSON line with its own timings (the loop's wall clock and CPU); run by `bench/run.py` as a
subprocess, like the rotator command, which measures the whole process's CPU the same way.

    VAULT_TOKEN=... python bench/naive.py --vault-addr URL --source-prefix P --output-prefix Q
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - the start time is taken before any import
import json  # noqa: E402
import os  # noqa: E402

import hvac  # noqa: E402
import requests  # noqa: E402

TIMEOUT = 10


def rotate_all(addr: str, token: str, mount: str, source_prefix: str, output_prefix: str) -> int:
    """Exchange every token under `source_prefix`, one at a time; returns how many."""
    lister = hvac.Client(url=addr, token=token, timeout=TIMEOUT)
    names = lister.secrets.kv.v2.list_secrets(path=source_prefix, mount_point=mount)["data"]["keys"]
    lister.adapter.close()
    for name in names:
        vault = hvac.Client(url=addr, token=token, timeout=TIMEOUT)
        source = vault.secrets.kv.v2.read_secret_version(
            path=f"{source_prefix}/{name}", mount_point=mount, raise_on_deleted_version=True
        )["data"]["data"]
        # As in LeanIX's example: requests.post with Basic apitoken:<API token>.
        response = requests.post(
            source["token_url"],
            auth=("apitoken", source["api_token"]),
            data={"grant_type": "client_credentials"},
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        answer = response.json()
        vault.secrets.kv.v2.create_or_update_secret(
            path=f"{output_prefix}/{name}",
            secret={
                "access_token": answer["access_token"],
                "token_type": answer["token_type"],
                "expires_in": answer["expires_in"],
            },
            mount_point=mount,
        )
        vault.adapter.close()
    return len(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault-addr", required=True)
    parser.add_argument("--mount", default="secret")
    parser.add_argument("--source-prefix", required=True)
    parser.add_argument("--output-prefix", required=True)
    args = parser.parse_args()
    imported = time.perf_counter()
    cpu_before = time.process_time()
    count = rotate_all(
        args.vault_addr,
        os.environ["VAULT_TOKEN"],
        args.mount,
        args.source_prefix,
        args.output_prefix,
    )
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "tokens": count,
                "import_seconds": imported - STARTED,
                "loop_seconds": done - imported,
                "loop_cpu_seconds": time.process_time() - cpu_before,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
