"""make_ami when the launched node never comes up: a clear error, and the node terminated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from botocore.exceptions import WaiterError

from amidsl.crate import server_spec
from amidsl.live.aws import AwsError
from amidsl.live.build import make_ami
from amidsl.live.settings import LiveSettings
from amidsl.run.runner import BuildError, BuildResult
from amidsl.settings import resolve

LAUNCH = LiveSettings(image_id="ami-0a1b2c3d", instance_type="t3.micro", key_name="k", wait_seconds=10)


class NodeNeverRuns:
    """EC2 as seen by make_ami: the instance launches but never reaches 'running'."""

    def __init__(self, terminate_fails: bool = False) -> None:
        self.terminate_fails = terminate_fails
        self.operations: list[str] = []

    def call(self, service, operation, params, region=None):
        self.operations.append(operation)
        if operation == "RunInstances":
            return {"Instances": [{"InstanceId": "i-0123456789abcdef0"}]}
        if operation == "TerminateInstances" and self.terminate_fails:
            raise AwsError("not allowed to terminate", "grant ec2:TerminateInstances")
        return {}

    def client(self, service):
        def wait(**kwargs):
            raise WaiterError("InstanceRunning", "Max attempts exceeded", {})

        return SimpleNamespace(get_waiter=lambda name: SimpleNamespace(wait=wait))


class NodeRuns(NodeNeverRuns):
    """EC2 as seen by make_ami: the instance launches (what runs on it is the test's)."""

    def client(self, service):
        return SimpleNamespace(get_waiter=lambda name: SimpleNamespace(wait=lambda **kwargs: None))


def test_a_node_that_never_runs_is_a_clear_error_and_is_terminated(raw_settings):
    aws, progress = NodeNeverRuns(), []
    with pytest.raises(AwsError, match="did not reach the running state within 10 s"):
        make_ami(server_spec(raw_settings), live=LAUNCH, aws=aws, progress=progress.append)
    assert aws.operations == ["RunInstances", "TerminateInstances"]
    assert progress[-1] == "terminated i-0123456789abcdef0"


def test_a_failing_terminate_does_not_hide_the_failure(raw_settings):
    aws, progress = NodeNeverRuns(terminate_fails=True), []
    with pytest.raises(AwsError, match="did not reach the running state"):
        make_ami(server_spec(raw_settings), live=LAUNCH, aws=aws, progress=progress.append)
    assert progress[-1].startswith("could not terminate i-0123456789abcdef0: not allowed to terminate")


def test_a_launched_ebs_build_that_fails_after_its_upload_still_names_the_snapshot_it_left(raw_settings):
    settings = resolve({**raw_settings, "bundler": "native", "backing": "ebs"})
    left = "The snapshot snap-0123456789abcdef0 (completed) stays in eu-west-1. To resume, ..."

    def fail_at_registration(instance, plan, on_error, progress):
        made = BuildResult(plan.settings.with_values(snapshot_id="snap-0123456789abcdef0"))
        raise BuildError("ami-register", 1, "register the image", None, "", "", [], left, made=made)

    with pytest.raises(BuildError) as caught:
        make_ami(server_spec(settings), live=LAUNCH, aws=NodeRuns(), build_on_instance=fail_at_registration)
    assert left in str(caught.value) and "it launches a new node" in str(caught.value)
