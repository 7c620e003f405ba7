#!/usr/bin/env bash
# Prepare Vault (or OpenBao) for rotator: KV v2 at `secret/`, the AppRole auth method, the
# `rotator` and `leanix-consumer` policies, and the `rotator` role. Writes the role-id and a new
# secret-id (mode 0600) to OUT_DIR for placement on the ops host.
#
#   VAULT_ADDR=https://vault.example.com:8200 VAULT_TOKEN=<admin token> deploy/vault/bootstrap.sh
#
# Environment (all optional):
#   VAULT_CLI      the CLI to use: vault or bao (default: whichever is on PATH)
#   OUT_DIR        where role-id and secret-id are written (default: ./rotator-credentials)
#   TOKEN_TTL      rotator's token TTL (default 1h; it renews at about two thirds of it)
#   TOKEN_MAX_TTL  after this rotator logs in again (default 24h)
#   SECRET_ID_TTL  how long a secret-id works (default 720h, 30 days: a leaked copy stops
#                  working by itself; run this script again, or write a new secret-id, before
#                  then; 0 means no expiry, which is not recommended)
#   SECRET_ID_BOUND_CIDRS  comma-separated CIDRs a secret-id may log in from (the ops hosts,
#                  e.g. 10.1.2.3/32,10.1.2.4/32); unset: left as the role has it (none on a
#                  new role: from anywhere)
#   TOKEN_BOUND_CIDRS      comma-separated CIDRs rotator's Vault tokens may be used from;
#                  unset: left as the role has it (none on a new role)
#   LIFECYCLE      1: also apply rotator-lifecycle-policy.hcl (write access to the source
#                  prefix, for the API tokens rotator replaces at LeanIX MTM; narrow its paths
#                  to those tokens first). Unset: rotator stays read-only on the sources.
# Set the two CIDR lists where the ops hosts' addresses are known: a secret-id or token copied
# off the host is then useless elsewhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cli="${VAULT_CLI:-$(command -v vault || command -v bao || true)}"
[ -n "$cli" ] || { echo "bootstrap: neither vault nor bao is on PATH" >&2; exit 2; }
out="${OUT_DIR:-./rotator-credentials}"

# The lists are read whole before matching: with pipefail, `cli ... | grep -q` fails whenever grep
# exits before the CLI finishes writing (SIGPIPE), and the mount would be enabled twice.
mounts="$("$cli" secrets list -format=json)"
if [[ "$mounts" != *'"secret/"'* ]]; then
  "$cli" secrets enable -path=secret -version=2 kv
fi
auths="$("$cli" auth list -format=json)"
if [[ "$auths" != *'"approle/"'* ]]; then
  "$cli" auth enable approle
fi
"$cli" policy write rotator "$here/rotator-policy.hcl"
"$cli" policy write leanix-consumer "$here/consumer-policy.hcl"
policies=rotator
if [ "${LIFECYCLE:-}" = 1 ]; then
  "$cli" policy write rotator-lifecycle "$here/rotator-lifecycle-policy.hcl"
  policies=rotator,rotator-lifecycle
fi
bounds=()
[ -z "${SECRET_ID_BOUND_CIDRS:-}" ] || bounds+=("secret_id_bound_cidrs=$SECRET_ID_BOUND_CIDRS")
[ -z "${TOKEN_BOUND_CIDRS:-}" ] || bounds+=("token_bound_cidrs=$TOKEN_BOUND_CIDRS")
"$cli" write auth/approle/role/rotator \
  token_policies="$policies" \
  token_ttl="${TOKEN_TTL:-1h}" \
  token_max_ttl="${TOKEN_MAX_TTL:-24h}" \
  secret_id_ttl="${SECRET_ID_TTL:-720h}" \
  token_no_default_policy=true \
  ${bounds[@]+"${bounds[@]}"} >/dev/null

umask 077
mkdir -p "$out"
"$cli" read -field=role_id auth/approle/role/rotator/role-id > "$out/role-id"
"$cli" write -f -field=secret_id auth/approle/role/rotator/secret-id > "$out/secret-id"
echo "bootstrap: role-id and secret-id written to $out (mode 0600)"
