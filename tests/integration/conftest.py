"""Integration fixtures for the LeanIX stand-in only (Vault fixtures live in tests/conftest.py).

One RSA key serves every stand-in of the session: generating a 2048-bit key costs ~0.1 s, and a
fresh stand-in per test keeps faults, registrations and counters from leaking between tests. One
self-signed certificate serves every HTTPS stand-in of the session (`standin_tls`).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rotator.dev.standin import LeanIXStandIn


@pytest.fixture(scope="session")
def standin_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def standin(standin_key: rsa.RSAPrivateKey) -> Iterator[LeanIXStandIn]:
    """A started stand-in on a free loopback port, stopped (every connection closed) afterwards."""
    with LeanIXStandIn(private_key=standin_key) as idp:
        yield idp


@dataclass(frozen=True)
class StandinTls:
    """A self-signed certificate for 127.0.0.1 (`cert`, for a client's `verify`) and a server
    context serving it (the stand-in's `ssl_context`)."""

    cert: Path
    server: ssl.SSLContext


@pytest.fixture(scope="session")
def standin_tls(tmp_path_factory: pytest.TempPathFactory) -> StandinTls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test 127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("standin-tls")
    cert_path, key_path = folder / "standin.pem", folder / "standin-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return StandinTls(cert_path, context)
