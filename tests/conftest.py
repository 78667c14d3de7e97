"""Shared fixtures: throwaway signing credentials and a valid settings mapping, built at run time."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Credentials:
    """A signing key pair written to files, as a user would have them."""

    key_pem: str
    cert_pem: str
    key_path: Path
    cert_path: Path


def make_key_and_cert(common_name: str = "amidsl test") -> tuple[str, str]:
    """A fresh RSA key and self-signed certificate, PEM text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@pytest.fixture(scope="session")
def key_and_cert() -> tuple[str, str]:
    return make_key_and_cert()


@pytest.fixture
def credentials(tmp_path: Path, key_and_cert: tuple[str, str]) -> Credentials:
    key_pem, cert_pem = key_and_cert
    key_path, cert_path = tmp_path / "pk.pem", tmp_path / "cert.pem"
    key_path.write_text(key_pem)
    cert_path.write_text(cert_pem)
    return Credentials(key_pem, cert_pem, key_path, cert_path)


@pytest.fixture
def raw_settings(credentials: Credentials) -> dict:
    """A complete, valid settings mapping for a build."""
    return {
        "image_name": "web-server-2026-11",
        "image_description": "web server base image",
        "region": "eu-west-1",
        "user_id": "1234-5678-9012",
        "s3_bucket": "acme-ami-bundles",
        "s3_path": "web/2026-11",
        "private_key_source": {"local_file": str(credentials.key_path)},
        "certificate_source": {"local_file": str(credentials.cert_path)},
    }
