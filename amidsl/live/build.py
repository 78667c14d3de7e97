"""Live builds, as the original crate orchestrates them: on a named node, on a group's node, or on a
node launched for the build and terminated afterwards.

All three resolve the settings, plan the phases, open ONE SSH connection and hand the plan to the
shared runner (`amidsl.run.runner.run_plan`) with the live back-end. A failure is a `BuildError` naming the
phase and action; unless `on_error="abort"` the credentials are removed and a launched node terminated.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from botocore.exceptions import WaiterError

from amidsl.live.aws import Aws, AwsError
from amidsl.live.node import LiveBackend
from amidsl.live.settings import GROUP_TAG, LiveSettings
from amidsl.live.ssh import NodeConnectionError, SshNode, resolve_target
from amidsl.model.plan import Plan, Spec, build_plan
from amidsl.run.runner import BuildError, BuildResult, run_plan
from amidsl.settings import AmiSettings
from amidsl.strategies import server_spec

Progress = Callable[[str], None]
# Runs a plan on an instance: the live default waits for it and runs over SSH; the simulator passes its
# own, so that one orchestration serves both.
BuildOnInstance = Callable[[Mapping[str, Any], Plan, str, Progress], BuildResult]
DEFAULT_LIVE = LiveSettings()
SSH_POLL_SECONDS = 5


def _no_progress(line: str) -> None:
    pass


def _open_node(
    host: str, settings: AmiSettings, live: LiveSettings, node_factory: Callable[..., SshNode]
) -> SshNode:
    node = node_factory(resolve_target(host, live, default_user=settings.user))
    node.connect()
    return node


def run_on_node(
    plan: Plan,
    host: str,
    live: LiveSettings,
    *,
    aws: Aws | None = None,
    on_error: str = "cleanup",
    progress: Progress = _no_progress,
    node_factory: Callable[..., SshNode] = SshNode,
) -> BuildResult:
    """Run a plan on one node over one SSH connection; raise BuildError naming a failed action."""
    aws = aws or Aws(plan.settings, live)
    node = _open_node(host, plan.settings, live, node_factory)
    progress(f"connected to {node.target}")
    try:
        backend = LiveBackend(plan, node, aws, progress=progress)
        result = run_plan(
            plan, backend, on_error=on_error, progress=lambda line: progress(f"==> {line.strip()}")
        )
        result.node = str(node.target)
        return result
    except BuildError as err:
        if err.made is not None:
            err.made.node = str(node.target)  # where what it made was made
        raise
    finally:
        node.close()


def build_on_host(
    host: str,
    settings: AmiSettings | Mapping[str, Any],
    *,
    spec: Spec | None = None,
    live: LiveSettings = DEFAULT_LIVE,
    phases: Iterable[str] | None = None,
    **options: Any,
) -> BuildResult:
    """Run the spec's phases (all, cleanup included, unless `phases` names some) on a named node."""
    plan = build_plan(spec or server_spec(settings), settings, phases=phases)
    return run_on_node(plan, host, live, **options)


def find_group_node(group_name: str, aws: Aws, region: str) -> dict[str, Any]:
    """A running instance tagged with the group (the oldest, if several)."""
    found = aws.call(
        "ec2",
        "DescribeInstances",
        {
            "Filters": [
                {"Name": f"tag:{GROUP_TAG}", "Values": [group_name]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        },
    )
    instances = [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances:
        raise AwsError(
            f"no running node of group {group_name!r} in {region}",
            f"start one tagged {GROUP_TAG}={group_name}, or use --launch / --host",
        )
    return sorted(instances, key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))[0]


def node_address(instance: Mapping[str, Any]) -> str:
    """Where to reach an instance over SSH: its public address, else its private one."""
    address = (
        instance.get("PublicDnsName") or instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
    )
    if not address:
        raise AwsError(
            f"instance {instance.get('InstanceId')} has no address", "give it a public or private IP address"
        )
    return address


def make_ami_from_group_node(
    group_name: str,
    settings: AmiSettings | Mapping[str, Any],
    *,
    spec: Spec | None = None,
    live: LiveSettings = DEFAULT_LIVE,
    phases: Iterable[str] | None = None,
    aws: Aws | None = None,
    address_of: Callable[[Mapping[str, Any]], str] = node_address,
    build_on_instance: BuildOnInstance | None = None,
    **options: Any,
) -> BuildResult:
    """Find a running node of the group by its tag and run all phases (cleanup included) on it."""
    plan = build_plan(spec or server_spec(settings), settings, phases=phases)
    aws = aws or Aws(plan.settings, live)
    instance = find_group_node(group_name, aws, plan.settings.region)
    progress = options.get("progress", _no_progress)
    progress(f"node {instance['InstanceId']} of group {group_name}")
    if build_on_instance is not None:
        return build_on_instance(instance, plan, options.get("on_error", "cleanup"), progress)
    return run_on_node(plan, address_of(instance), live, aws=aws, **options)


def launch_node(live: LiveSettings, group_name: str, aws: Aws) -> str:
    """Launch one instance from the [live] launch settings, tagged with the group; return its id."""
    params: dict[str, Any] = {
        "ImageId": live.image_id,
        "InstanceType": live.instance_type,
        "KeyName": live.key_name,
        "MinCount": 1,
        "MaxCount": 1,
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": GROUP_TAG, "Value": group_name},
                    {"Key": "Name", "Value": f"amidsl-{group_name}"},
                ],
            }
        ],
    }
    if live.security_group_ids:
        params["SecurityGroupIds"] = list(live.security_group_ids)
    if live.subnet_id:
        params["SubnetId"] = live.subnet_id
    launched = aws.call("ec2", "RunInstances", params)
    return launched["Instances"][0]["InstanceId"]


def wait_for_node(instance_id: str, aws: Aws, live: LiveSettings) -> dict[str, Any]:
    """Wait until the instance runs; return its description."""
    waiter = aws.client("ec2").get_waiter("instance_running")
    try:
        waiter.wait(
            InstanceIds=[instance_id],
            WaiterConfig={
                "Delay": SSH_POLL_SECONDS,
                "MaxAttempts": max(1, live.wait_seconds // SSH_POLL_SECONDS),
            },
        )
    except WaiterError as err:
        raise AwsError(
            f"instance {instance_id} did not reach the running state within {live.wait_seconds} s ({err})",
            "look at the instance's state reason and console output; raise wait_seconds in [live] for a "
            "slow image",
        ) from None
    found = aws.call("ec2", "DescribeInstances", {"InstanceIds": [instance_id]})
    return found["Reservations"][0]["Instances"][0]


def wait_for_ssh(host: str, port: int, seconds: int, progress: Progress = _no_progress) -> None:
    """Wait until the node's SSH port answers with an SSH banner (a fresh node boots slowly)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=SSH_POLL_SECONDS) as sock:
                sock.settimeout(SSH_POLL_SECONDS)
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise NodeConnectionError(
                f"{host}:{port} did not answer SSH within {seconds} s. Fix: check that the security group "
                "lets SSH in from here, that the subnet gives the node an address you can reach, and that "
                "the image runs sshd"
            )
        progress(f"waiting for SSH on {host}:{port}")
        time.sleep(SSH_POLL_SECONDS)


def _terminate_after_failure(instance_id: str, aws: Aws, progress: Progress) -> str:
    """Terminate a launched node after a failure; never let a failing terminate hide the failure."""
    try:
        terminate_node(instance_id, aws)
    except Exception as err:
        progress(f"could not terminate {instance_id}: {err}")
        return f"The node {instance_id} could NOT be terminated ({err}): terminate it by hand."
    progress(f"terminated {instance_id}")
    return f"The node {instance_id} was terminated."


def terminate_node(instance_id: str, aws: Aws) -> None:
    """Terminate a node amidsl launched."""
    aws.call("ec2", "TerminateInstances", {"InstanceIds": [instance_id]})


def make_ami(group: Spec, settings: AmiSettings | Mapping[str, Any] | None = None, **options: Any) -> str:
    """Launch a node for the group, build the image on it, terminate it; return the AMI id.

    The phases default to every phase of the spec but cleanup (the node is terminated anyway).
    """
    result = build_on_launched_node(group, settings, **options)
    if result.image_id is None:
        raise AwsError("the build registered no image", "include the ami-register phase")
    return result.image_id


def build_on_launched_node(
    group: Spec,
    settings: AmiSettings | Mapping[str, Any] | None = None,
    *,
    live: LiveSettings = DEFAULT_LIVE,
    phases: Iterable[str] | None = None,
    on_error: str = "cleanup",
    aws: Aws | None = None,
    progress: Progress = _no_progress,
    address_of: Callable[[Mapping[str, Any]], str] = node_address,
    build_on_instance: BuildOnInstance | None = None,
    **options: Any,
) -> BuildResult:
    """make_ami, returning the build's result (the node: the instance and its address)."""
    chosen = list(phases) if phases else [p for p in group.phase_names() if p != "cleanup"]
    plan = build_plan(group, settings, phases=chosen)
    aws = aws or Aws(plan.settings, live)
    group_name = live.group or group.name
    instance_id = launch_node(live, group_name, aws)
    progress(f"launched {instance_id} for group {group_name}")
    host = instance_id  # until its address is known
    try:
        if build_on_instance is not None:
            result = build_on_instance({"InstanceId": instance_id}, plan, on_error, progress)
        else:
            instance = wait_for_node(instance_id, aws, live)
            host = address_of(instance)
            port = live.port or resolve_target(host, live).port
            wait_for_ssh(host, port, live.wait_seconds, progress)
            result = run_on_node(plan, host, live, aws=aws, on_error=on_error, progress=progress, **options)
    except BuildError as err:
        if err.made is not None:
            err.made.node = f"{instance_id} ({err.made.node or host})"
        if on_error != "abort":
            note = f"{err.cleanup_note} {_terminate_after_failure(instance_id, aws, progress)}"
            resume = "To retry, fix the cause and run the build again (it launches a new node)."
        else:
            note = f"{err.cleanup_note} The node {instance_id} ({host}) still runs: terminate it when done."
            resume = (
                f"To resume on it, fix the cause and run again with --host {host} from phase {err.phase}."
            )
        if err.made is not None and err.made.settings.snapshot_id:
            # A snapshot the build made stays in AWS, whatever becomes of the node: the strategy's advice
            # names it, how to register it, and how to delete it.
            resume = f"{err.resume} {resume}"
        raise type(err)(
            err.phase,
            err.index,
            err.description,
            err.status,
            err.output,
            note,
            err.transcript,
            resume,
            err.cause,
            err.made,
        ) from None
    except BaseException:
        if on_error != "abort":
            _terminate_after_failure(instance_id, aws, progress)
        raise
    terminate_node(instance_id, aws)
    progress(f"terminated {instance_id}")
    result.node = instance_id if host == instance_id else f"{instance_id} ({result.node or host})"
    return result
