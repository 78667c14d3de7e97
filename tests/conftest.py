"""Shared fixtures: throwaway signing credentials and a valid settings mapping, built at run time."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amidsl.keypairs import self_signed_pair


@dataclass(frozen=True)
class Credentials:
    """A signing key pair written to files, as a user would have them."""

    key_pem: str
    cert_pem: str
    key_path: Path
    cert_path: Path


def make_key_and_cert(common_name: str = "amidsl test") -> tuple[str, str]:
    """A fresh RSA key and self-signed certificate, PEM text."""
    return self_signed_pair(common_name, days=30)


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
    """A complete, valid settings mapping for a build with the ami-tools strategy.

    Tests of native builds set `bundler` themselves (native is the default without this key).
    """
    return {
        "bundler": "ami-tools",
        "image_name": "web-server-2026-11",
        "image_description": "web server base image",
        "region": "eu-west-1",
        "user_id": "1234-5678-9012",
        "s3_bucket": "acme-ami-bundles",
        "s3_path": "web/2026-11",
        "private_key_source": {"local_file": str(credentials.key_path)},
        "certificate_source": {"local_file": str(credentials.cert_path)},
    }


# Why a test of a group in tests/serial.py may not run: pytest-xdist could not make its group take turns.
GROUP_APART = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n`, note each test of a group of tests/serial.py that would not take turns.

    pytest-xdist's loadgroup (on a worker, before this hook) ends a grouped test's id with '@group' and
    schedules by that suffix; where it could not add it, the group's tests would run side by side.
    """
    if not getattr(config.option, "loadgroup", False):
        return  # not a worker of `pytest -n` with --dist loadgroup
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[GROUP_APART] = (
                "pytest-xdist could not group this test with the others of its group in tests/serial.py, "
                "so they would run side by side: install the pytest and pytest-xdist versions "
                "pyproject.toml names"
            )


@pytest.fixture(autouse=True)
def grouped_tests_take_turns(request: pytest.FixtureRequest) -> None:
    """Fail a grouped test that would run beside the others of its group (see above)."""
    reason = request.node.stash.get(GROUP_APART, None)
    if reason is not None:
        pytest.fail(reason)


@pytest.fixture(scope="session", autouse=True)
def one_botocore_loader() -> Iterator[None]:
    """Every boto3 session of the test process shares one botocore data loader.

    Each new session (every fake region, every moto mock, every live build) would otherwise parse the
    service models, megabytes of JSON, again: about a third of a second each, hundreds of times a run.
    The models are the same files either way.
    """
    import botocore.loaders
    import botocore.session

    shared = functools.cache(botocore.loaders.create_loader)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", shared)
        yield


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1: S3, EC2 and STS over real HTTP."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def region():
    """A fake region (us-east-1) whose launched nodes are small template nodes."""
    from simulator import FakeRegion, template_node  # the simulator only where a test asks for it

    made = FakeRegion("us-east-1", node_factory=lambda: template_node(payload_mb=1))
    yield made
    made.close()
