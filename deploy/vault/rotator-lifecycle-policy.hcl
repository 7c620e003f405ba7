# The API-token lifecycle (README, "API-token lifecycle"): rotator writes new versions of the
# source secrets whose API token it replaces at LeanIX MTM, and records each replacement in
# their custom_metadata before it happens. Apply this policy in addition to rotator-policy.hcl,
# and only for the tokens rotator manages this way: narrow the paths below to them (one path
# per managed token, or a folder of them), so that rotator stays read-only on every other
# source. `bootstrap.sh` applies it when LIFECYCLE=1.

# Write a new version of a managed source (check-and-set; every other field kept).
path "secret/data/leanix/api-tokens/*" {
  capabilities = ["read", "update"]
}

# Record a replacement before it happens (custom_metadata), and clear it after.
path "secret/metadata/leanix/api-tokens/*" {
  capabilities = ["read", "update", "list"]
}
