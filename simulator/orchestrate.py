"""make_ami and make_ami_from_group_node, simulated: the crate's orchestration on a FakeRegion."""

from __future__ import annotations

from collections.abc import Callable

from amidsl.plan import Spec
from amidsl.runner import BuildError
from simulator.executor import simulate
from simulator.region import FakeRegion

GROUP_TAG = "amidsl:group"
# make_ami builds on a fresh node and terminates it, so it skips cleanup, as the crate's make-ami did.
MAKE_AMI_PHASES = ("install", "configure", "ami-bundle", "ami-upload", "ami-register")


def launch_node(
    region: FakeRegion, group: str, image_id: str = "ami-0a1b2c3d", instance_type: str = "t3.small"
) -> str:
    """Start one instance tagged with the group, as make_ami does; return its id."""
    reservation = region.call(
        "ec2",
        "RunInstances",
        {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": GROUP_TAG, "Value": group}]}],
        },
    )
    return reservation["Instances"][0]["InstanceId"]


def group_instances(region: FakeRegion, group: str) -> list[str]:
    """Running instances tagged with the group."""
    found = region.ec2.describe_instances(
        Filters=[
            {"Name": f"tag:{GROUP_TAG}", "Values": [group]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def make_ami(
    spec: Spec,
    region: FakeRegion,
    progress: Callable[[str], None] = lambda line: None,
    on_error: str = "cleanup",
) -> str:
    """Launch a node for the spec's group, build the image on it, terminate it; return the AMI id."""
    instance_id = launch_node(region, spec.name)
    progress(f"launched {instance_id} for group {spec.name}")

    def terminate() -> None:
        region.call("ec2", "TerminateInstances", {"InstanceIds": [instance_id]})
        progress(f"terminated {instance_id}")

    try:
        node = region.node(instance_id)
        simulation = simulate(
            spec, MAKE_AMI_PHASES, node=node, region=region, progress=progress, on_error=on_error
        )
    except BuildError:
        if on_error == "cleanup":  # "abort" leaves the node running for debugging
            terminate()
        raise
    terminate()
    assert simulation.image_id is not None
    return simulation.image_id


def make_ami_from_group_node(
    spec: Spec, region: FakeRegion, progress: Callable[[str], None] = lambda line: None
) -> str:
    """Build on a running node of the spec's group, every phase including cleanup; return the AMI id."""
    instances = group_instances(region, spec.name)
    if not instances:
        raise LookupError(f"no running node of group {spec.name!r} (tag {GROUP_TAG}={spec.name})")
    progress(f"building on {instances[0]} of group {spec.name}")
    simulation = simulate(spec, node=region.node(instances[0]), region=region, progress=progress)
    assert simulation.image_id is not None
    return simulation.image_id
