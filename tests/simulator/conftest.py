"""Fixtures for simulator tests: the example's settings, and a simulation helper that always closes."""

from __future__ import annotations

import pytest

from amidsl.crate import server_spec
from amidsl.example import example_config_path
from amidsl.settings import load_toml
from simulator import simulate, template_node


@pytest.fixture
def example_settings() -> dict:
    """The example's settings with the ami-tools strategy (tests of native builds ask for it)."""
    return load_toml(example_config_path()) | {"bundler": "ami-tools"}


@pytest.fixture
def native_settings() -> dict:
    """The example's settings as they are: a native build."""
    return load_toml(example_config_path())


@pytest.fixture
def node():
    made = template_node(payload_mb=1)
    yield made
    made.close()


@pytest.fixture
def run(node, region):
    """Simulate settings (a dict) on the test's node and region; failures come back, not raised."""

    simulations = []

    def go(settings: dict, phases=None, **kwargs):
        kwargs.setdefault("raise_on_failure", False)
        simulations.append(simulate(server_spec(settings), phases, node=node, region=region, **kwargs))
        return simulations[-1]

    yield go
    for simulation in simulations:
        simulation.discard_downloads()
