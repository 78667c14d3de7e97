"""Orchestration against moto's EC2: launch a tagged node, build, terminate; or find a group's node.

moto's instances are records, not machines: `address_of` maps them to the sshd node on 127.0.0.1, so
launch, tagging, waiting, SSH, the phases and termination all run for real against the two servers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from amidsl.live.build import make_ami, make_ami_from_group_node
from amidsl.live.settings import GROUP_TAG, resolve_live
from amidsl.run.runner import BuildError
from live_tests.body import live_test_group
from tests.live.node_settings import aws_client, build_settings, no_credentials_in, node_has_no_credentials


@pytest.fixture(scope="module")
def launch_settings(aws_endpoint: str) -> dict:
    """What [live] needs to launch a node in moto: a base image, a key pair, a security group."""
    ec2 = aws_client("ec2", aws_endpoint)
    base = ec2.register_image(Name="debian-base-for-amidsl-tests", Architecture="x86_64")["ImageId"]
    ec2.create_key_pair(KeyName="amidsl-test")
    group = ec2.create_security_group(GroupName="amidsl-ssh", Description="ssh from the controller")
    return {
        "image_id": base,
        "instance_type": "t3.micro",
        "key_name": "amidsl-test",
        "security_group_ids": [group["GroupId"]],
        "group": "web",
    }


@pytest.fixture(autouse=True)
def forget_the_launched_node(node):
    """A launched node is terminated, not cleaned: remove what it leaves on this machine."""
    yield
    for run in node.root.glob("run-*"):
        shutil.rmtree(run)


def instance(endpoint: str, instance_id: str) -> dict:
    found = aws_client("ec2", endpoint).describe_instances(InstanceIds=[instance_id])
    return found["Reservations"][0]["Instances"][0]


def launched_instances(endpoint: str, group: str) -> list[dict]:
    found = aws_client("ec2", endpoint).describe_instances(
        Filters=[{"Name": f"tag:{GROUP_TAG}", "Values": [group]}]
    )
    return [i for r in found["Reservations"] for i in r["Instances"]]


def to_local_node(described: dict) -> str:
    return "127.0.0.1"


def test_make_ami_launches_a_tagged_node_builds_on_it_and_terminates_it(
    node, fake_tools, aws_endpoint, bucket, launch_settings, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    live = resolve_live({**config["live"], **launch_settings, "host": None, "trust_on_first_use": True})
    before = {i["InstanceId"] for i in launched_instances(aws_endpoint, "web")}
    progress: list[str] = []
    image_id = make_ami(
        live_test_group(config["ami"]),
        config["ami"],
        live=live,
        progress=progress.append,
        address_of=to_local_node,
    )
    [launched] = [i for i in launched_instances(aws_endpoint, "web") if i["InstanceId"] not in before]
    assert launched["ImageId"] == launch_settings["image_id"] and launched["KeyName"] == "amidsl-test"
    assert instance(aws_endpoint, launched["InstanceId"])["State"]["Name"] == "terminated"
    images = aws_client("ec2", aws_endpoint).describe_images(ImageIds=[image_id])["Images"]
    assert images[0]["Name"] == config["ami"]["image_name"]
    # The node is terminated instead of cleaned up; the test phase ran before that.
    assert "==> phase cleanup" not in progress and "==> phase test" in progress
    assert progress[-1] == f"terminated {launched['InstanceId']}"


def test_a_failed_launched_build_terminates_the_node_and_says_so(
    node, fake_tools, aws_endpoint, launch_settings, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"]["s3_bucket"] = "amidsl-no-such-bucket"
    live = resolve_live({**config["live"], **launch_settings, "host": None, "trust_on_first_use": True})
    with pytest.raises(BuildError) as caught:
        make_ami(live_test_group(config["ami"]), config["ami"], live=live, address_of=to_local_node)
    message = str(caught.value)
    assert caught.value.phase == "ami-upload" and "was terminated." in message
    assert message.endswith("To retry, fix the cause and run the build again (it launches a new node).")
    instance_id = message.split("The node ")[1].split()[0]
    assert instance(aws_endpoint, instance_id)["State"]["Name"] == "terminated"
    assert no_credentials_in(config["ami"]["credential_dir"])


def test_abort_leaves_a_launched_node_running_and_says_how_to_resume_on_it(
    node, fake_tools, aws_endpoint, launch_settings, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"]["s3_bucket"] = "amidsl-no-such-bucket"
    live = resolve_live({**config["live"], **launch_settings, "host": None, "trust_on_first_use": True})
    with pytest.raises(BuildError) as caught:
        make_ami(
            live_test_group(config["ami"]),
            config["ami"],
            live=live,
            on_error="abort",
            address_of=to_local_node,
        )
    message = str(caught.value)
    assert "on_error=abort: everything is left in place" in message
    assert message.endswith("run again with --host 127.0.0.1 from phase ami-upload.")
    instance_id = message.split("The node ")[1].split()[0]
    assert instance(aws_endpoint, instance_id)["State"]["Name"] == "running"
    assert Path(config["ami"]["credential_dir"], "pk").exists()  # left for debugging, as asked


def test_make_ami_from_group_node_finds_the_group_node_and_runs_every_phase(
    node, fake_tools, aws_endpoint, bucket, launch_settings, credentials, tmp_path
):
    ec2 = aws_client("ec2", aws_endpoint)
    running = ec2.run_instances(
        ImageId=launch_settings["image_id"],
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": GROUP_TAG, "Value": "db"}]}],
    )["Instances"][0]["InstanceId"]
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    group = live_test_group(config["ami"])
    result = make_ami_from_group_node(
        "db", config["ami"], spec=group, live=resolve_live(config["live"]), address_of=to_local_node
    )
    assert result.phases[-2:] == ["cleanup", "test"] and result.image_id.startswith("ami-")
    assert instance(aws_endpoint, running)["State"]["Name"] == "running"  # not ours to terminate
    node_has_no_credentials(node, result.settings, credentials.key_pem)
    with pytest.raises(Exception, match="no running node of group 'nobody'"):
        make_ami_from_group_node("nobody", config["ami"], live=resolve_live(config["live"]))
