"""The environment's HTTP settings, resolved once instead of on every request.

requests with `trust_env` on re-reads the whole environment for proxies on every request; on a
busy daemon that was a quarter of its CPU. Sessions run with `trust_env` off and take the
proxies resolved here, once per destination.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests.utils


def environ_proxies(url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What requests' trust_env would use for `url`: the *_PROXY variables, unless NO_PROXY
    excludes its host."""
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY")
    if requests.utils.should_bypass_proxies(url, no_proxy=no_proxy):
        return {}
    proxies = {}
    for scheme in ("http", "https", "all"):
        value = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
        if value:
            proxies[scheme] = value
    return proxies
