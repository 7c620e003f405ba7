# OpenBao Agent (`bao agent -config=agent.hcl`) or Vault Agent (`vault agent -config=agent.hcl`):
# keeps one consumer's LeanIX access token in a file and tells the consumer when it changes.
#
# rotator writes a new access token to Vault after about 80 % of the old one's lifetime; this
# agent reads the secret every `static_secret_render_interval`, renders the token to
# `destination` (mode 0600) when it changed, and then runs the consumer's reload command. The
# consumer reads the file whenever it needs the token (or when reloaded), never Vault itself.
#
# Files (adjust the paths; the consumer's user must be able to read `destination`):
#   /etc/leanix-consumer/agent.hcl            this file
#   /etc/leanix-consumer/access-token.ctmpl   the template: names the secret to render
#   /etc/leanix-consumer/role-id, secret-id   AppRole credentials (0600, the agent's user)
#   /run/leanix-consumer/access-token         the rendered token (0600); create the directory
#                                             0700 for the consumer's user, e.g. with systemd's
#                                             RuntimeDirectory=leanix-consumer

vault {
  address = "https://vault.example.com:8200"
  # ca_cert = "/etc/ssl/vault-ca.pem"
}

auto_auth {
  # AppRole with a role whose token policy reads only this consumer's token
  # (deploy/vault/consumer-policy.hcl is that policy for acme/production).
  method "approle" {
    mount_path = "auth/approle"
    config = {
      role_id_file_path                   = "/etc/leanix-consumer/role-id"
      secret_id_file_path                 = "/etc/leanix-consumer/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }

  # Or, with a Vault token that something else keeps valid, replace the method above by:
  # method "token_file" {
  #   config = {
  #     token_file_path = "/etc/leanix-consumer/vault-token"
  #   }
  # }
}

template_config {
  # KV v2 secrets have no lease, so the agent re-reads them on this interval: it is how late the
  # file may show a token rotator already replaced. rotator replaces a token once about 80 % of
  # its lifetime has passed (up to 5 % earlier, to spread refreshes), so the token in the file
  # still has at least 20 % of its lifetime left when a new one lands in Vault. Keep the interval
  # well under that: for LeanIX's 3600 s tokens (720 s of margin), 1 to 5 minutes. Shorter costs
  # one Vault read per interval per agent; longer eats the margin meant for outages.
  static_secret_render_interval = "2m"

  # false: when Vault is unreachable the agent keeps retrying and the file keeps the last token,
  # which stays valid until its expires_at.
  exit_on_retry_failure = false
}

template {
  source               = "/etc/leanix-consumer/access-token.ctmpl"
  destination          = "/run/leanix-consumer/access-token"
  perms                = "0600"
  error_on_missing_key = true
  backup               = false # no .bak copy of the previous token next to the file

  # Runs after each render that changed the file (the first one too); it must return within
  # `timeout`. An argv list, not a shell line.
  exec {
    command = ["systemctl", "reload", "leanix-consumer.service"]
    timeout = "30s"
  }
}
