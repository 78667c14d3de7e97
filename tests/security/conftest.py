"""Fixtures for hostile-input tests: throwaway identities and a genuine bundle to attack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crafting import bundle_bytes, craft_bundle

from amidsl.bundle import read_manifest
from tests.bundle import conftest as bundle_tests

# The bundle tests' session identities, shared rather than generated again.
user, ec2 = bundle_tests.user, bundle_tests.ec2


@pytest.fixture
def make_bundle(user, ec2):
    """A function bundling bytes as an image named prefix into a directory (manifest path back)."""
    return lambda directory, data, prefix="image": bundle_bytes(directory, data, user, ec2, prefix)


@pytest.fixture
def craft(user, ec2):
    """craft_bundle with the test identities: any tar or gzip stream under the user's signature."""
    return lambda directory, tar=b"", **fields: craft_bundle(directory, user, ec2, tar, **fields)


@pytest.fixture
def genuine(tmp_path, make_bundle) -> Path:
    """The manifest path of a genuine bundle of random bytes, in its own directory."""
    directory = tmp_path / "bundle"
    directory.mkdir()
    path = make_bundle(directory, os.urandom(10_000))
    assert read_manifest(path).parts
    return path
