# Example consumer policy: read one workspace's access token, nothing else.
# Name the token path(s) the consumer needs; never grant the source prefix.
path "secret/data/leanix/access-tokens/acme/production" {
  capabilities = ["read"]
}

# Optional: freshness from metadata alone (custom_metadata.expires_at).
path "secret/metadata/leanix/access-tokens/acme/production" {
  capabilities = ["read"]
}
