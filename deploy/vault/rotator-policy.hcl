# Least privilege for rotator under the default mount (`secret`) and prefixes
# (`leanix/api-tokens` for sources, `leanix/access-tokens` for outputs). Adjust the paths if you
# change [vault] mount, source_prefix or output_prefix.

# Discover API tokens: LIST on the source prefix and every folder below it.
path "secret/metadata/leanix/api-tokens" {
  capabilities = ["list"]
}
path "secret/metadata/leanix/api-tokens/*" {
  capabilities = ["list"]
}

# Read API tokens (never write them), also an earlier version an output was exchanged from.
path "secret/data/leanix/api-tokens/*" {
  capabilities = ["read"]
}

# The periodic check lists every source's current version in one request per folder (OpenBao's
# detailed metadata listing), so a token job reads a source only when it changed.
path "secret/detailed-metadata/leanix/api-tokens" {
  capabilities = ["list"]
}
path "secret/detailed-metadata/leanix/api-tokens/*" {
  capabilities = ["list"]
}

# Write access tokens with check-and-set, and read them back.
path "secret/data/leanix/access-tokens/*" {
  capabilities = ["create", "update", "read"]
}

# custom_metadata (expiry, issuance log, the vouch for the version written), max_versions, and
# the version history that counts issuances per hour.
path "secret/metadata/leanix/access-tokens/*" {
  capabilities = ["create", "update", "read"]
}

# The periodic check lists every output's metadata in one request per folder where the server
# offers it (OpenBao's detailed metadata listing); without it rotator reads them one by one.
path "secret/detailed-metadata/leanix/access-tokens" {
  capabilities = ["list"]
}
path "secret/detailed-metadata/leanix/access-tokens/*" {
  capabilities = ["list"]
}

# `rotator replace-api-token --dry-run` asks which of the paths above it may write.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# rotator's own token: look it up (health probe, TTL) and renew it.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Per-token claims, so that several rotator instances exchange each token once between them.
path "secret/data/rotator-claims/leanix/access-tokens/*" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/rotator-claims/leanix/access-tokens/*" {
  capabilities = ["create", "update"]
}

# The instance registry: each daemon announces itself (custom_metadata only) at every check,
# lists the others, and withdraws when it stops. Without these, every refresh claims.
path "secret/metadata/rotator-instances/leanix/access-tokens/*" {
  capabilities = ["create", "update", "read", "delete", "list"]
}
path "secret/metadata/rotator-instances/leanix/access-tokens" {
  capabilities = ["list"]
}
path "secret/detailed-metadata/rotator-instances/leanix/access-tokens" {
  capabilities = ["list"]
}
