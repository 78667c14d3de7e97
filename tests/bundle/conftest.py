"""Shared fixtures: throwaway RSA keys and X.509 certificates, generated at test time only."""

import datetime
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    """A key pair and its self-signed certificate, as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def make_identity(common_name: str) -> Identity:
    """Generate an RSA key and a self-signed certificate for it."""
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
    return Identity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )


@pytest.fixture(scope="session")
def user() -> Identity:
    """The bundling user's key and certificate."""
    return make_identity("amidsl test user")


@pytest.fixture(scope="session")
def ec2() -> Identity:
    """A stand-in for EC2's key and certificate."""
    return make_identity("amidsl test ec2")


@pytest.fixture(scope="session")
def stranger() -> Identity:
    """Somebody else's key and certificate."""
    return make_identity("amidsl test stranger")


def write_sparse_file(path, size: int, regions: list[tuple[int, bytes]]) -> None:
    """Create a file of size bytes that holds data only at the given offsets (holes elsewhere)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in regions:
            f.seek(offset)
            f.write(data)


@pytest.fixture(scope="session")
def sparse_file():
    """The write_sparse_file helper, for tests that make their own sparse files."""
    return write_sparse_file


@pytest.fixture
def sample_image(tmp_path):
    """A 3 MiB sparse image file with random and compressible data around holes."""
    import os

    path = tmp_path / "disk.img"
    write_sparse_file(
        path,
        3 * 1024 * 1024,
        [
            (0, os.urandom(200_000)),
            (700_000, b"compressible text " * 20_000),
            (2 * 1024 * 1024 + 5, os.urandom(100_000)),
        ],
    )
    return path
