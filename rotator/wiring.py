"""Wiring a `Rotator` and its API-token keeper from a config: the Vault, IdP and MTM adapters.

What every verb needs. The daemon's own parts (the scheduler, metrics, alert sinks, Sentry) are
`service.py`'s, which the one-shot commands never import: `rotator rotate` starts without
APScheduler, prometheus-client and sentry-sdk loaded (some 80 ms of CPU less per run).
"""

from __future__ import annotations

from rotator.config import Config
from rotator.exchange import TokenExchanger
from rotator.mtm import MtmClient
from rotator.replacement import ApiTokens
from rotator.rotation import Rotator, worker_threads
from rotator.vault import VaultStore


def build_rotator(config: Config, previous: Rotator | None = None) -> Rotator:
    """Wire the adapters for `config`. Raises VaultError / ConfigError from the Vault login.

    With `previous` (a reload), the new rotator takes over its memory (failures, backoff, held
    tokens), exchange hook and instance id, so a reload neither forgets a backoff nor re-issues
    a token it holds."""
    workers = config.exchange.max_workers
    store = VaultStore.connect(config.vault, pool_size=worker_threads(config) + 2)
    exchanger = TokenExchanger(
        config.exchange.allowed_hosts,
        config.exchange.insecure_http_hosts,
        config.exchange.timeout_seconds,
        pool_size=workers,
    )
    if previous is None:
        return Rotator(config, store, exchanger)
    return Rotator(
        config,
        store,
        exchanger,
        memory=previous.memory,
        on_exchange=previous.on_exchange,
        instance_id=previous.instance_id,
        exchange_slots=previous.exchange_slots,  # max_workers changes only with a restart
    )


def build_api_tokens(rotator: Rotator) -> ApiTokens:
    """The keeper of `rotator`'s long-lived API tokens, with its own MTM client."""
    exchange = rotator.config.exchange
    mtm = MtmClient(exchange.allowed_hosts, exchange.insecure_http_hosts, exchange.timeout_seconds)
    return ApiTokens(rotator, mtm)
