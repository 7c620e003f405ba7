"""Integration fixtures for the LeanIX stand-in only (Vault fixtures live in tests/conftest.py).

One RSA key serves every stand-in of the session: generating a 2048-bit key costs ~0.1 s, and a
fresh stand-in per test keeps faults, registrations and counters from leaking between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.dev.standin import LeanIXStandIn


@pytest.fixture(scope="session")
def standin_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def standin(standin_key: rsa.RSAPrivateKey) -> Iterator[LeanIXStandIn]:
    """A started stand-in on a free loopback port, stopped (every connection closed) afterwards."""
    with LeanIXStandIn(private_key=standin_key) as idp:
        yield idp
