"""Shared fixtures: throwaway RSA keys and X.509 certificates, generated at test time only."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from amidsl.keypairs import self_signed_pair


@dataclass(frozen=True)
class Identity:
    """A key pair and its self-signed certificate, as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def make_identity(common_name: str) -> Identity:
    """Generate an RSA key and a self-signed certificate for it."""
    key_pem, cert_pem = self_signed_pair(common_name, days=30)
    return Identity(cert_pem=cert_pem.encode("ascii"), key_pem=key_pem.encode("ascii"))


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


def bundle_into(image, out, user: Identity, ec2: Identity, **options):
    """Bundle `image` into the new directory `out` as the user (prefix web); the manifest."""
    from amidsl.bundle import bundle_image

    out.mkdir()
    return bundle_image(
        image,
        out,
        prefix="web",
        user_id="123456789012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        **options,
    )
