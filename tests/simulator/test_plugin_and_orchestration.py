"""The pytest plugin's fixtures as a user uses them, and make_ami / make_ami_from_group_node simulated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amidsl.crate import server_spec
from amidsl.live.aws import AwsError
from amidsl.model.actions import Exec
from amidsl.model.plan import group_spec
from amidsl.run.runner import BuildError
from simulator.orchestrate import GROUP_TAG, launch_node, make_ami, make_ami_from_group_node


def enable_sites(settings):
    """A user's own install step, next to the crate's."""
    return [Exec(("mkdir", "-p", "/etc/nginx/sites-enabled"), description="enable nginx sites")]


def test_loading_the_plugin_imports_neither_the_simulator_nor_aws_libraries():
    """pytest loads the plugin in every test run on the machine: it must cost next to nothing."""
    code = (
        "import sys, simulator.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('simulator.', 'moto', 'boto', 'amidsl'))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['simulator.pytest_plugin']"


def test_plugin_fixtures_run_a_users_spec(simulate, fake_node, fake_region, example_settings):
    spec = group_spec("web", extends=[server_spec(example_settings)], phases={"install": enable_sites})
    simulation = simulate(spec)
    assert "/etc/nginx/sites-enabled" in simulation.inspect_image().paths()
    assert fake_region.ec2.describe_images(ImageIds=[simulation.image_id])["Images"]
    assert not fake_node.exists("/opt/ami-tools")


def test_plugin_simulate_raises_on_failure(simulate, example_settings):
    with pytest.raises(BuildError, match="phase ami-bundle, action 3 \\(check that the Ruby"):
        simulate(server_spec(example_settings), ["ami-bundle"])


def test_make_ami_launches_builds_and_terminates(region, example_settings):
    spec = group_spec("web", extends=[server_spec(example_settings)])
    progress: list[str] = []
    image_id = make_ami(spec, region, progress=progress.append)
    assert region.ec2.describe_images(ImageIds=[image_id])["Images"][0]["ImageId"] == image_id
    assert progress[0].startswith("launched i-") and progress[-1].startswith("terminated i-")
    assert region.nodes == {}  # the build node is gone
    assert not any(line.startswith("phase cleanup") for line in progress)  # as the crate's make-ami


def test_make_ami_terminates_the_node_after_a_failure(region, example_settings):
    region.faults.reject_register = "InvalidManifest"
    with pytest.raises(BuildError, match="phase ami-register"):
        make_ami(group_spec("web", extends=[server_spec(example_settings)]), region)
    assert region.nodes == {}


def test_make_ami_from_a_running_group_node(region, example_settings):
    instance_id = launch_node(region, "web")
    spec = group_spec("web", extends=[server_spec(example_settings)])
    image_id = make_ami_from_group_node(spec, region)
    assert region.ec2.describe_images(ImageIds=[image_id])["Images"]
    node = region.node(instance_id)
    assert node.running and not node.exists("/opt/ami-tools")  # cleanup ran; the node lives on
    tags = region.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Tags"]
    assert {"Key": GROUP_TAG, "Value": "web"} in tags


def test_make_ami_from_group_node_needs_a_running_node(region, example_settings):
    with pytest.raises(AwsError, match="no running node of group 'db' in us-east-1"):
        make_ami_from_group_node(group_spec("db", extends=[server_spec(example_settings)]), region)
