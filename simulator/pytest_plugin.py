"""pytest plugin: fixtures for testing your own amidsl specs and phases in the simulator.

Installed with amidsl (entry point `pytest11`), so these fixtures are there in any test suite:

- `fake_region_name`: the region the fake region plays (override it to match your settings);
- `fake_region`: a FakeRegion (moto in-process, with EC2's strict RegisterImage checks);
- `fake_node`: a FakeNode from the template (a small Debian server);
- `simulate`: `simulate(spec, phases=None, **options)` runs a spec on that node and region and returns
  the Simulation (transcript, image id, `inspect_image()`); a failed build raises BuildError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

# The plugin loads in every pytest run on a machine with amidsl installed: the simulator (moto, boto3)
# is imported only when a test asks for one of these fixtures.
if TYPE_CHECKING:
    from amidsl.model.plan import Plan, Spec
    from simulator.executor import Simulation
    from simulator.node import FakeNode
    from simulator.region import FakeRegion


@pytest.fixture
def fake_region_name() -> str:
    """The region the fake region plays; override this fixture to match your settings' region."""
    return "us-east-1"


@pytest.fixture
def fake_region(fake_region_name: str) -> Iterator[FakeRegion]:
    """A fake AWS region (and account) for one test."""
    from simulator.region import FakeRegion
    from simulator.template import template_node

    region = FakeRegion(fake_region_name, node_factory=lambda: template_node(payload_mb=1))
    yield region
    region.close()


@pytest.fixture
def fake_node() -> Iterator[FakeNode]:
    """A fake Debian node from the template, for one test."""
    from simulator.template import template_node

    node = template_node(payload_mb=1)
    yield node
    node.close()


@pytest.fixture
def simulate(fake_node: FakeNode, fake_region: FakeRegion) -> Iterator[Callable[..., Simulation]]:
    """Run a spec (or plan) on the test's fake node and region."""
    from simulator.executor import simulate as run_simulation

    simulations: list[Simulation] = []

    def run(spec: Spec | Plan, phases: Sequence[str] | None = None, **options: Any) -> Simulation:
        simulation = run_simulation(spec, phases, node=fake_node, region=fake_region, **options)
        simulations.append(simulation)
        return simulation

    yield run
    for simulation in simulations:
        simulation.discard_downloads()
