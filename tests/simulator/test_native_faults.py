"""Native builds meet the node's and S3's faults: each ends with a message naming what failed and the fix,
nothing registered, and nothing of amidsl's left where the message does not say."""

from __future__ import annotations

import os

import pytest

from amidsl.cli.main import run as amidsl_command
from amidsl.run.runner import BuildInterrupted

BUCKET = "amidsl-example-bundles"
PLACE = f"s3://{BUCKET}/images/example"
DELETE_COMMAND = f"amidsl delete-bundle -b {BUCKET}/images/example -p image --partial --region us-east-1"


@pytest.fixture
def three_parts(node):
    """A node whose image makes three 10 MiB parts (25 MiB that do not compress)."""
    node.write_bytes("/srv/blob", os.urandom(25 * 1024 * 1024))
    return node


def keys_in_bucket(region) -> list[str]:
    listed = region.s3.list_objects_v2(Bucket=BUCKET, Prefix="images/example/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def nothing_registered(region) -> bool:
    return region.ec2.describe_images(Owners=["self"])["Images"] == []


def bundle_files_on(node) -> list[str]:
    """Parts, images and chunks the node program left in destination_dir (/tmp)."""
    return sorted(p.name for p in node.host_path("/tmp").iterdir() if "image" in p.name)


def failed_in(simulation, phase: str, status: int | None = 1) -> str:
    """The failure's message, once checked to be in `phase` with the exit status (None: interrupted)."""
    error = simulation.error
    assert error is not None, "the build should have failed"
    assert (error.phase, error.status) == (phase, status), error
    return str(error)


def interrupted_in(simulation, phase: str, index: int) -> str:
    """The message of a build interrupted (Ctrl-C) during that action."""
    assert isinstance(simulation.error, BuildInterrupted), simulation.error
    assert (simulation.error.phase, simulation.error.index) == (phase, index)
    assert "was interrupted (Ctrl-C)" in str(simulation.error)
    return str(simulation.error)


def made(node, region) -> list[str]:
    """What the build left: the node program, bundle files on the node, keys in the bucket, images."""
    left = ["/opt/ami-tools"] if node.exists("/opt/ami-tools") else []
    left += bundle_files_on(node) + keys_in_bucket(region)
    return left + [image["ImageId"] for image in region.ec2.describe_images(Owners=["self"])["Images"]]


def test_a_node_without_python3_stops_the_install_naming_python3_and_the_fix(
    run, native_settings, node, region
):
    node.packages.discard("python3")
    message = failed_in(run(native_settings), "install")
    assert "python3 is not installed on the node: the native bundler needs python3 >= 3.8" in message
    assert 'or set bundler = "ami-tools"' in message
    assert made(node, region) == []


@pytest.mark.parametrize(
    ("package", "version", "said"),
    [
        ("python3", "3.6.9", "python3 3.6.9 is too old: the amidsl node program needs Python 3.8 or newer"),
        ("e2fsprogs", None, "mke2fs is not installed; install e2fsprogs"),
        ("e2fsprogs", "1.42.9", "mke2fs is version 1.42.9; building an image needs e2fsprogs >= 1.43"),
    ],
)
def test_an_old_python3_or_a_missing_or_old_mke2fs_stops_the_install_naming_it_and_the_fix(
    run, native_settings, node, region, package, version, said
):
    if version is None:
        node.packages.discard(package)
    else:
        node.versions[package] = version
    assert said in failed_in(run(native_settings), "install")
    assert made(node, region) == []


def test_too_little_space_in_destination_dir_stops_the_install_with_the_figures(
    run, native_settings, node, region
):
    node.faults.disk_full_under = "/tmp"
    message = failed_in(run(native_settings), "install")
    assert "destination_dir /tmp has 0 MB free but bundling / needs about " in message
    assert "free some space or choose another destination_dir" in message
    assert made(node, region) == []


def test_presigned_urls_expiring_mid_upload_are_presigned_again_and_the_upload_finishes(
    run, native_settings, three_parts, region
):
    region.faults.expire_urls_at = 2  # the first part went up; the others meet expired URLs
    simulation = run(native_settings)
    assert simulation.error is None, simulation.error
    upload = next(r for r in simulation.transcript if r.phase == "ami-upload" and r.command == "node")
    assert "amidsl: 2 presigned URL(s) expired; presigning those parts again" in upload.output
    assert len(simulation.inspect_image().manifest.parts) == 3  # verified and unbundled
    assert region.put_requests == 5, upload.output  # three parts, two of them twice


def test_a_part_s3_refuses_fails_the_upload_naming_it_and_how_to_delete_what_went_up(
    run, native_settings, three_parts, region
):
    region.faults.refuse_part = 1
    message = failed_in(run(native_settings), "ami-upload")
    assert "part image.part.1 could not be uploaded (HTTP 403: AccessDenied: Access Denied)" in message
    assert "Nothing was registered" in message and nothing_registered(region)
    assert f"left in S3: {PLACE}/image.part.0, {PLACE}/image.part.2" in message
    assert f"Remove them with: {DELETE_COMMAND}" in message
    assert "The bundle's parts stay on the node in /tmp/image.part.* until the cleanup phase" in message
    assert bundle_files_on(three_parts) == ["image.part.0", "image.part.1", "image.part.2"]
    assert not three_parts.exists("/opt/ami-tools")
    # The command the message gives deletes the partial bundle (its manifest never went up).
    assert amidsl_command([*DELETE_COMMAND.split()[1:], "--yes"]) == 0
    assert keys_in_bucket(region) == []


def test_ctrl_c_while_the_node_program_bundles_leaves_nothing_on_the_node_or_in_s3(
    run, native_settings, three_parts, region
):
    three_parts.faults.ctrl_c_program = "bundle"
    message = interrupted_in(run(native_settings), "ami-bundle", 3)
    assert "AES key and IV were only ever in memory" in message
    assert "The node program removes its partial image and parts from /tmp" in message
    assert made(three_parts, region) == []
    assert not [p for p in three_parts.root.iterdir() if p.name.startswith(".amidsl-staging")]


def test_ctrl_c_while_the_node_program_uploads_says_what_is_left_on_the_node_and_in_s3(
    run, native_settings, three_parts, region
):
    three_parts.faults.ctrl_c_program = "upload"
    message = interrupted_in(run(native_settings), "ami-upload", 2)
    assert "The bundle's parts stay on the node in /tmp/image.part.*" in message
    uploaded = keys_in_bucket(region)
    assert uploaded and "images/example/image.manifest.xml" not in uploaded
    assert f"Remove them with: {DELETE_COMMAND}" in message
    assert not three_parts.exists("/opt/ami-tools") and nothing_registered(region)


def test_ctrl_c_at_a_node_action_stops_the_build_there(run, native_settings, node, region):
    node.faults.ctrl_c_at = ("ami-bundle", 1)
    message = interrupted_in(run(native_settings), "ami-bundle", 1)
    assert "amidsl's node program was removed (/opt/ami-tools)" in message
    assert made(node, region) == []


def test_a_dropped_connection_at_a_node_action_fails_it_and_the_reconnect_cleans_up(
    run, native_settings, node
):
    node.faults.interrupt_at = ("install", 3)
    message = failed_in(run(native_settings), "install", status=255)
    assert "connection to the node was lost" in message
    assert not node.exists("/opt/ami-tools")


@pytest.mark.parametrize(
    ("setting", "said"), [("fail_put_number", "InternalError"), ("s3_5xx_burst", "SlowDown")]
)
def test_passing_s3_errors_are_retried_by_the_node_program(run, native_settings, region, setting, said):
    setattr(region.faults, setting, 1)
    simulation = run(native_settings)
    assert simulation.error is None, simulation.error
    upload = next(r for r in simulation.transcript if r.phase == "ami-upload" and r.command == "node")
    assert f"upload of image.part.0: HTTP {503 if said == 'SlowDown' else 500} {said}" in upload.output
    assert "images/example/image.part.0" in keys_in_bucket(region)
