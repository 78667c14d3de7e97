"""Fixtures for hostile-input tests: throwaway identities and a genuine bundle to attack."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amidsl.bundle import bundle_image, read_manifest
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


@pytest.fixture
def make_bundle(user, ec2):
    """A function bundling bytes as an image named prefix into a directory (manifest path back)."""
    return lambda directory, data, prefix="image": bundle_files(directory, data, user, ec2, prefix)


def bundle_files(directory: Path, data: bytes, user: Identity, ec2: Identity, prefix: str = "image") -> Path:
    """Bundle data as an image named prefix into directory; return the manifest path."""
    image = directory / f"{prefix}.source"
    image.write_bytes(data)
    bundle_image(
        image,
        directory,
        prefix=prefix,
        user_id="123456789012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        part_size=4096,
    )
    image.unlink()
    return directory / f"{prefix}.manifest.xml"


@pytest.fixture
def genuine(tmp_path, make_bundle) -> Path:
    """The manifest path of a genuine bundle of random bytes, in its own directory."""
    directory = tmp_path / "bundle"
    directory.mkdir()
    path = make_bundle(directory, os.urandom(10_000))
    assert read_manifest(path).parts
    return path
