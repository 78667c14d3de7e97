"""make_ami and make_ami_from_group_node, simulated: the live orchestration (amidsl.live.build) with the
fake region as AWS and the simulator as the way a plan runs on an instance."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from amidsl.live import build as live_build
from amidsl.live.settings import GROUP_TAG, LiveSettings
from amidsl.model.plan import Plan, Spec
from amidsl.run.runner import BuildResult
from simulator.executor import simulate
from simulator.region import FakeRegion

__all__ = ["GROUP_TAG", "launch_node", "make_ami", "make_ami_from_group_node"]

# What make_ami launches in the fake region (moto records the instance; the region makes a FakeNode).
SIMULATED_LAUNCH = LiveSettings(
    image_id="ami-0a1b2c3d", instance_type="t3.small", key_name="amidsl-simulated"
)


def _on_fake_node(region: FakeRegion) -> live_build.BuildOnInstance:
    """Run a plan on the FakeNode behind an instance of the region."""

    def build(
        instance: Mapping[str, Any], plan: Plan, on_error: str, progress: Callable[[str], None]
    ) -> BuildResult:
        node = region.node(instance["InstanceId"])
        simulation = simulate(plan, node=node, region=region, on_error=on_error, progress=progress)
        assert simulation.result is not None  # simulate raises BuildError otherwise
        return simulation.result

    return build


def launch_node(region: FakeRegion, group: str) -> str:
    """Start one instance tagged with the group, as make_ami does; return its id."""
    return live_build.launch_node(SIMULATED_LAUNCH, group, region)


def make_ami(
    spec: Spec,
    region: FakeRegion,
    progress: Callable[[str], None] = lambda line: None,
    on_error: str = "cleanup",
) -> str:
    """Launch a node for the spec's group, build the image on it, terminate it; return the AMI id."""
    return live_build.make_ami(
        spec,
        live=SIMULATED_LAUNCH,
        aws=region,  # the fake region answers the same call(service, operation, params)
        on_error=on_error,
        progress=progress,
        build_on_instance=_on_fake_node(region),
    )


def make_ami_from_group_node(
    spec: Spec, region: FakeRegion, progress: Callable[[str], None] = lambda line: None
) -> str:
    """Build on a running node of the spec's group, every phase including cleanup; return the AMI id."""
    result = live_build.make_ami_from_group_node(
        spec.name,
        spec.settings or {},
        spec=spec,
        aws=region,
        progress=progress,
        build_on_instance=_on_fake_node(region),
    )
    assert result.image_id is not None
    return result.image_id
