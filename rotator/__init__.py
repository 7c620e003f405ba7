"""rotator: keeps short-lived access tokens in Vault fresh, exchanged from long-lived API tokens."""

__version__ = "0.1.0"
