"""EBS-backed builds in the simulator (backing = "ebs"): the node keeps the disk, the controller uploads
its blocks into a snapshot through the strict region's EBS direct APIs, RegisterImage maps it as root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amidsl.example import example_credentials
from amidsl.model.actions import NodeProgram
from amidsl.run.runner import BuildInterrupted
from amidsl.settings import SettingsError, resolve
from simulator.executor import SimulatorBackend
from tests.simulator.test_native import SECRET_KEY, node_files
from tests.simulator.test_native_faults import failed_in

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EU_KEY = KEY.replace("us-east-1", "eu-west-1")


@pytest.fixture
def ebs_settings(native_settings) -> dict:
    """The example's native build, EBS-backed."""
    return native_settings | {"backing": "ebs"}


def test_an_ebs_build_registers_an_ebs_backed_image_whose_root_is_the_uploaded_snapshot(
    run, ebs_settings, region
):
    simulation = run(ebs_settings)
    assert simulation.error is None, simulation.error
    snapshot_id = simulation.final_settings.snapshot_id
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert image["RootDeviceType"] == "ebs" and "ImageLocation" not in image
    assert (image["RootDeviceName"], image["VirtualizationType"], image["BootMode"]) == (
        "/dev/xvda",
        "hvm",
        "legacy-bios",
    )
    [root] = image["BlockDeviceMappings"]
    assert root["Ebs"]["SnapshotId"] == snapshot_id and root["Ebs"]["VolumeType"] == "gp3"
    snapshot = region.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["State"] == "completed"
    assert {"Key": "amidsl:built-by", "Value": "amidsl"} in snapshot["Tags"]
    # No S3 bundle was made, and nothing is left on the node.
    assert not [key for _, key in region.object_acls]
    assert not simulation.node.exists("/tmp/image.disk") and not simulation.node.exists("/opt/ami-tools")


def test_the_snapshot_read_back_is_the_bootable_disk_with_hygiene_applied(run, ebs_settings):
    simulation = run(ebs_settings)
    inspection = simulation.inspect_image()
    assert inspection.manifest is None and inspection.snapshot[0] == simulation.final_settings.snapshot_id
    assert "read back block by block" in inspection.source
    assert "partition 1: Linux (0x83), bootable, from sector 2048" in "\n".join(inspection.layout)
    paths = inspection.paths()
    assert {"/etc/nginx/nginx.conf", "/boot/grub/grub.cfg"} <= paths
    assert not {"/root/.ssh/id_rsa", "/home/admin/.bash_history", "/opt/ami-tools"} & paths


def test_no_signing_key_aws_secret_or_url_ever_reach_the_node_in_an_ebs_build(run, ebs_settings, node):
    simulation = run(ebs_settings, ["install", "configure", "ami-bundle", "ami-upload"])
    assert simulation.error is None, simulation.error
    key_pem, _ = example_credentials()
    key_body = key_pem.strip().splitlines()[2].encode()
    for path in node_files(node):
        data = path.read_bytes()
        assert key_body not in data and SECRET_KEY.encode() not in data, path
        assert b"X-Amz-Signature" not in data, path
    # The disk waits for cleanup, private to root.
    assert node.mode("/tmp/image.disk") == 0o600


def test_a_kernel_without_the_nitro_drivers_stops_an_ebs_build_at_the_node_check(run, ebs_settings, node):
    node.write_bytes("/lib/modules/6.1.0-28-amd64/modules.builtin", b"kernel/fs/ext4/ext4.ko\n")
    simulation = run(ebs_settings)
    assert simulation.error is not None and simulation.error.phase == "install"
    assert "has no nvme driver" in simulation.error.output and "has no ena driver" in simulation.error.output


@pytest.mark.parametrize(
    ("given", "setting", "says"),
    [
        ({"bundler": "ami-tools"}, "backing", "ec2-ami-tools make only S3 bundles"),
        ({"virtualization_type": "paravirtual"}, "virtualization_type", "a bootable disk (MBR and GRUB)"),
        ({"bundle_tags": {"team": "ops"}}, "bundle_tags", "makes no S3 bundle"),
        (
            {"block_device_mappings": [{"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}]},
            "block_device_mappings",
            "its root volume only",
        ),
        ({"kms_key_id": KEY}, "kms_key_id", "used only to encrypt"),
        ({"encrypted": True, "kms_key_id": "alias/builds"}, "kms_key_id", "is not a KMS key ARN"),
        ({"encrypted": True, "kms_key_id": EU_KEY}, "kms_key_id", "encrypts only in its own region"),
        ({"encrypted": True, "public_image": True}, "public_image", "does not make an image with encrypted"),
        (
            {"encrypted": True, "launch_permissions": ["111122223333"]},
            "launch_permissions",
            "cannot be shared",
        ),
        (
            {
                "encrypted": True,
                "kms_key_id": KEY,
                "copy_to_regions": ["eu-west-1", "eu-north-1"],
                "launch_permissions": ["111122223333"],
            },
            "copy_kms_key_ids",
            "has no key for eu-west-1, eu-north-1: the copy there would be encrypted with the region's",
        ),
        (
            {"encrypted": True, "kms_key_id": KEY.replace("arn:aws:", "arn:aws-cn:")},
            "kms_key_id",
            "the key's ARN is of partition aws-cn, and us-east-1 is in partition aws",
        ),
        ({"boot_mode": "uefi"}, "boot_mode", "boots through GRUB for BIOS"),
        ({"arch": "arm64"}, "arch", "the images of native builds boot through GRUB for BIOS (i386-pc)"),
        ({"image_size_mb": 16}, "image_size_mb", "16 MB is too small for an hvm disk"),
        (
            {"backing": "instance-store", "snapshot_id": "snap-0123456789abcdef0"},
            "snapshot_id",
            "snapshot_id resumes an EBS-backed build at ami-register",
        ),
        (
            {"encrypted": True, "copy_to_regions": ["eu-west-1"], "copy_kms_key_ids": {"eu-west-1": KEY}},
            "copy_kms_key_ids.eu-west-1",
            "the key is in us-east-1, and a KMS key encrypts only in its own region (eu-west-1)",
        ),
        (
            {"encrypted": True, "copy_kms_key_ids": {"eu-west-1": EU_KEY}},
            "copy_kms_key_ids.eu-west-1",
            "eu-west-1 is not one of copy_to_regions",
        ),
        (
            {"copy_to_regions": ["eu-west-1"], "copy_kms_key_ids": {"eu-west-1": EU_KEY}},
            "copy_kms_key_ids",
            "used only to encrypt",
        ),
        (
            {"encrypted": True, "copy_kms_key_ids": {"eu-wset-1": EU_KEY}},
            "copy_kms_key_ids.eu-wset-1",
            "region",
        ),
        (
            {"encrypted": True, "copy_kms_key_ids": {"eu-west-1": "alias/x"}},
            "copy_kms_key_ids.eu-west-1",
            "ARN",
        ),
        ({"encrypted": True, "copy_kms_key_ids": [EU_KEY]}, "copy_kms_key_ids", "a table of regions"),
        ({"backing": "instance-store", "encrypted": True}, "encrypted", "an S3 bundle is always encrypted"),
        ({"boot_mode": "uefi-preferred"}, "boot_mode", "boots through GRUB for BIOS"),
    ],
)
def test_what_an_ebs_build_cannot_do_is_refused_before_anything_runs(ebs_settings, given, setting, says):
    with pytest.raises(SettingsError) as refused:
        resolve(ebs_settings | given)
    text = str(refused.value)
    assert f"- {setting}: " in text and says in text and "Fix: " in text
    assert "instance-store AMI" not in text  # an EBS build is never told of instance-store limits


def test_a_malformed_copy_key_is_one_problem_not_also_a_missing_one(ebs_settings):
    given = {
        "encrypted": True,
        "kms_key_id": KEY,
        "copy_to_regions": ["eu-west-1"],
        "copy_kms_key_ids": {"eu-west-1": "alias/builds"},
        "launch_permissions": ["111122223333"],
    }
    with pytest.raises(SettingsError) as refused:
        resolve(ebs_settings | given)
    assert [p.setting for p in refused.value.problems] == ["copy_kms_key_ids.eu-west-1"]


def test_an_unshared_copy_without_a_key_of_its_own_gets_its_regions_default_key(ebs_settings):
    settings = resolve(
        ebs_settings | {"encrypted": True, "kms_key_id": KEY, "copy_to_regions": ["eu-west-1"]}
    )
    assert settings.copy_kms_key_ids == ()


def test_an_encrypted_build_encrypts_the_snapshot_with_the_key_and_shares_the_image(
    run, ebs_settings, region
):
    settings = ebs_settings | {"encrypted": True, "kms_key_id": KEY, "launch_permissions": ["111122223333"]}
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    snapshot_id = simulation.final_settings.snapshot_id
    (snapshot,) = region.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert (snapshot["Encrypted"], snapshot["KmsKeyId"]) == (True, KEY)
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert (
        f"modelled: the snapshot's encryption with {KEY} (the key ARN's form and region are checked"
        in "\n".join(simulation.inspect_image().modelled)
    )
    shared = region.ec2.describe_image_attribute(ImageId=simulation.image_id, Attribute="launchPermission")
    assert shared["LaunchPermissions"] == [{"UserId": "111122223333"}]


def test_copies_of_an_ebs_image_are_ebs_backed_in_their_regions_on_their_own_snapshots(
    run, ebs_settings, region
):
    simulation = run(ebs_settings | {"copy_to_regions": ["eu-west-1"], "encrypted": True})
    assert simulation.error is None, simulation.error
    [(copy_region, copy_id)] = simulation.result.copies.items()
    assert copy_region == "eu-west-1"
    (copy,) = region.call("ec2", "DescribeImages", {"ImageIds": [copy_id]}, region="eu-west-1")["Images"]
    assert copy["RootDeviceType"] == "ebs" and copy["Name"] == "amidsl-example-ami"
    assert {"Key": "amidsl:built-by", "Value": "amidsl"} in copy["Tags"]
    root = copy["BlockDeviceMappings"][0]["Ebs"]
    assert root["Encrypted"] is True and root["SnapshotId"] != simulation.final_settings.snapshot_id
    eu = region.strict_client("ec2", "eu-west-1")
    (snapshot,) = eu.describe_snapshots(SnapshotIds=[root["SnapshotId"]])["Snapshots"]
    assert snapshot["State"] == "completed" and ":eu-west-1:" in snapshot["KmsKeyId"]
    assert {"Key": "amidsl:built-by", "Value": "amidsl"} in snapshot["Tags"]  # as the original's


def test_each_copy_of_an_encrypted_image_is_encrypted_with_its_regions_key(run, ebs_settings, region):
    north_key = KEY.replace("us-east-1", "eu-north-1")
    settings = ebs_settings | {
        "encrypted": True,
        "kms_key_id": KEY,
        "copy_to_regions": ["eu-west-1", "eu-north-1"],
        "copy_kms_key_ids": {"eu-west-1": EU_KEY, "eu-north-1": north_key},
        "launch_permissions": ["111122223333"],
    }
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    for copy_region, key in (("eu-west-1", EU_KEY), ("eu-north-1", north_key)):
        copy_id = simulation.result.copies[copy_region]
        (copy,) = region.call("ec2", "DescribeImages", {"ImageIds": [copy_id]}, region=copy_region)["Images"]
        client = region.strict_client("ec2", copy_region)
        (snapshot,) = client.describe_snapshots(
            SnapshotIds=[copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]]
        )["Snapshots"]
        assert (snapshot["Encrypted"], snapshot["KmsKeyId"]) == (True, key)
        shared = region.client("ec2", copy_region).describe_image_attribute(
            ImageId=copy_id, Attribute="launchPermission"
        )
        assert shared["LaunchPermissions"] == [{"UserId": "111122223333"}]


def test_force_deregister_replaces_an_older_ebs_image_and_deletes_its_snapshot(run, ebs_settings, region):
    first = run(ebs_settings)
    assert first.error is None, first.error
    old_image, old_snapshot = first.image_id, first.final_settings.snapshot_id
    second = run(ebs_settings | {"force_deregister": True})
    assert second.error is None, second.error
    said = "\n".join(record.output for record in second.transcript)
    assert (
        f"image {old_image} ('amidsl-example-ami') in us-east-1, and its snapshot(s) {old_snapshot}" in said
    )
    images = region.call("ec2", "DescribeImages", {"Owners": ["self"]})["Images"]
    assert [image["ImageId"] for image in images] == [second.image_id]
    gone = region.ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [old_snapshot]}])
    assert gone["Snapshots"] == []


def test_a_failed_ebs_build_takes_the_disk_off_the_node_with_the_node_program(
    run, ebs_settings, node, region
):
    region.faults.reject_register = "InvalidParameterValue"
    simulation = run(ebs_settings)
    assert simulation.error is not None and simulation.error.phase == "ami-register"
    assert not node.exists("/tmp/image.disk") and not node.exists("/opt/ami-tools")
    assert "The disk /tmp/image.disk was removed too." in str(simulation.error)


def running_block_streams(program: Path) -> list[int]:
    """The pids of `blocks` runs of this node program (the fake node's copy) on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(program).encode() in argv and b"blocks" in argv:
            found.append(int(entry.name))
    return found


def test_a_block_stream_the_controller_stops_reading_ends_the_node_program(run, ebs_settings, node, region):
    simulation = run(ebs_settings, ["install", "configure", "ami-bundle"])
    assert simulation.error is None, simulation.error
    settings = simulation.final_settings
    backend = SimulatorBackend(node, region, settings)
    program = NodeProgram("/opt/ami-tools/amidsl_node.py", "blocks", (), result_name="")
    stream = backend.stream_node_program(program, json.dumps({"disk": "/tmp/image.disk"}).encode())
    first = next(iter(stream))
    running = node.host_path(program.program)
    assert len(first[1]) == 512 * 1024 and running_block_streams(running)
    stream.close()  # as after a failed upload: the rest is never read
    assert running_block_streams(running) == []


def uploaded_snapshots(region) -> list[dict]:
    """The snapshots of the example's root disk in the region, whatever their state."""
    uploaded = [{"Name": "description", "Values": ["root disk of amidsl-example-ami"]}]
    return region.ec2.describe_snapshots(Filters=uploaded)["Snapshots"]


def test_ctrl_c_during_the_snapshot_upload_deletes_the_unfinished_snapshot_and_says_so(
    run, ebs_settings, node, region
):
    node.faults.ctrl_c_program = "blocks"  # Ctrl-C once the node program streams the disk's blocks
    simulation = run(ebs_settings)
    error = simulation.error
    assert isinstance(error, BuildInterrupted) and (error.phase, error.index) == ("ami-upload", 1)
    assert "was interrupted (Ctrl-C)" in str(error)
    [said] = [line for line in str(error).splitlines() if "The unfinished snapshot" in line]
    assert said.startswith("The unfinished snapshot snap-") and said.endswith(
        " was deleted; nothing is left in us-east-1"
    )
    assert (
        uploaded_snapshots(region) == []
        and error.made is not None
        and error.made.settings.snapshot_id is None
    )
    assert running_block_streams(node.host_path("/opt/ami-tools/amidsl_node.py")) == []
    assert not node.exists("/tmp/image.disk") and not node.exists("/opt/ami-tools")


class CtrlCWhileWaiting:
    """The region's EC2 client, where the user hits Ctrl-C while amidsl waits for the snapshot to complete."""

    def __init__(self, client):
        self.client, self.meta = client, client.meta

    def __getattr__(self, method):
        return getattr(self.client, method)

    def describe_snapshots(self, **params):
        raise KeyboardInterrupt


def test_ctrl_c_while_waiting_for_the_completed_snapshot_keeps_it_and_the_build_resumes_on_it(
    run, ebs_settings, node, region, monkeypatch
):
    made = SimulatorBackend.client
    monkeypatch.setattr(
        SimulatorBackend,
        "client",
        lambda backend, service, name: (
            CtrlCWhileWaiting(made(backend, service, name))
            if service == "ec2"
            else made(backend, service, name)
        ),
    )
    error = run(ebs_settings).error
    assert isinstance(error, BuildInterrupted) and (error.phase, error.index) == ("ami-upload", 1)
    [snapshot] = uploaded_snapshots(region)
    snapshot_id = snapshot["SnapshotId"]
    assert snapshot["State"] == "completed"
    message = str(error)
    assert f"The snapshot {snapshot_id} was completed (CompleteSnapshot succeeded) and is kept" in message
    assert f"--phase ami-register --phase cleanup --set snapshot_id={snapshot_id}" in message
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in message
    assert "was deleted" not in message and "from phase install" not in message
    assert error.made is not None and error.made.settings.snapshot_id == snapshot_id  # the JSON's too

    monkeypatch.undo()
    resumed = run(ebs_settings | {"snapshot_id": snapshot_id}, ["ami-register", "cleanup"])
    assert resumed.error is None, resumed.error
    image = region.call("ec2", "DescribeImages", {"ImageIds": [resumed.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot_id


def test_a_connection_lost_during_the_snapshot_upload_deletes_the_unfinished_snapshot(
    run, ebs_settings, node, region
):
    node.faults.drop_program = "blocks"  # the connection drops while the blocks stream
    simulation = run(ebs_settings)
    error = simulation.error
    assert error is not None and (error.phase, error.index) == ("ami-upload", 1)
    assert "ssh: connection to the node was lost" in str(error)
    assert "The unfinished snapshot snap-" in str(error) and "nothing is left in us-east-1" in str(error)
    assert uploaded_snapshots(region) == []


def test_a_failed_ebs_registration_names_its_snapshot_and_resumes_on_it(run, ebs_settings, region):
    region.faults.reject_register = "InvalidParameterValue"
    failed = run(ebs_settings)
    message = str(failed.error)
    uploaded = [{"Name": "description", "Values": ["root disk of amidsl-example-ami"]}]
    [snapshot] = region.ec2.describe_snapshots(Filters=uploaded)["Snapshots"]
    snapshot_id = snapshot["SnapshotId"]
    assert f"The snapshot {snapshot_id} (completed) stays in us-east-1" in message
    assert f"--set snapshot_id={snapshot_id}" in message and "S3" not in message and "AES" not in message
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in message

    region.faults.reject_register = None  # the cause, fixed
    resumed = run(ebs_settings | {"snapshot_id": snapshot_id}, ["ami-register", "cleanup"])
    assert resumed.error is None, resumed.error
    image = region.call("ec2", "DescribeImages", {"ImageIds": [resumed.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot_id


S3_BUNDLE_ONLY = ("s3_bucket", "user_id", "private_key_source", "certificate_source")


def test_an_ebs_build_needs_no_bucket_account_or_signing_pair(run, ebs_settings, region):
    settings = {
        key: value for key, value in ebs_settings.items() if key.replace("-", "_") not in S3_BUNDLE_ONLY
    }
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert image["RootDeviceType"] == "ebs"
    assert region.s3.list_buckets()["Buckets"] == []


def test_an_s3_bundle_still_needs_them_and_says_ebs_does_not(ebs_settings):
    settings = {
        key: value for key, value in ebs_settings.items() if key.replace("-", "_") not in S3_BUNDLE_ONLY
    }
    with pytest.raises(SettingsError) as refused:
        resolve(settings | {"backing": "instance-store"})
    problems = [str(p) for p in refused.value.problems]
    assert sorted(p.split(":")[0] for p in problems) == sorted(S3_BUNDLE_ONLY)
    assert problems[-1] == (
        "s3_bucket: is required for backing = 'instance-store'. Fix: set s3_bucket in the [ami] table, or "
        "choose backing = 'ebs' (native builds)."
    )


def test_an_ebs_root_disk_can_be_larger_than_an_s3_image_and_only_its_data_is_sent(run, ebs_settings, region):
    simulation = run(ebs_settings | {"image_size_mb": 20480})
    assert simulation.error is None, simulation.error
    snapshot_id = simulation.final_settings.snapshot_id
    (snapshot,) = region.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert snapshot["VolumeSize"] == 20
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 20
    blocks = region.strict_client("ebs").list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=10000)
    assert len(blocks["Blocks"]) < 200  # 40960 blocks of 512 KiB, nearly all of them free space
    assert "partition 1: Linux (0x83), bootable, from sector 2048" in "\n".join(
        simulation.inspect_image().layout
    )


def test_an_s3_image_stays_within_10240_mb(ebs_settings):
    with pytest.raises(SettingsError) as refused:
        resolve(ebs_settings | {"backing": "instance-store", "image_size_mb": 20480})
    assert "image_size_mb: 20480 MB is more than an S3-backed image may have (10240 MB)" in str(refused.value)


def test_force_deregister_on_a_resumed_registration_keeps_the_snapshot_being_registered(
    run, ebs_settings, region
):
    first = run(ebs_settings)
    assert first.error is None, first.error
    snapshot_id = first.final_settings.snapshot_id
    resumed = run(
        ebs_settings | {"snapshot_id": snapshot_id, "force_deregister": True}, ["ami-register", "cleanup"]
    )
    assert resumed.error is None, resumed.error
    said = "\n".join(record.output for record in resumed.transcript)
    assert f"the snapshot {snapshot_id} stays: this build registers it" in said
    image = region.call("ec2", "DescribeImages", {"ImageIds": [resumed.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot_id


def test_an_ebs_image_that_fails_after_registering_is_named_on_its_snapshot_with_no_s3_talk(
    run, ebs_settings, region
):
    region.faults.fail_image_in = {"us-east-1": "simulated failure"}
    failed = run(ebs_settings)
    message = str(failed.error)
    assert failed.error is not None and failed.error.phase == "ami-register"
    assert "The image was registered before this failure and stays, on its EBS snapshot: ami-" in message
    assert "S3" not in message and "s3://" not in message
    assert "add --set force_deregister=true, which keeps this snapshot" in message


def test_an_ebs_disk_stays_within_what_an_mbr_partition_holds(ebs_settings):
    with pytest.raises(SettingsError) as refused:
        resolve(ebs_settings | {"image_size_mb": 2 * 1024 * 1024 + 1})
    assert "2097153 is not a size from 1 to 2097152 MB" in str(refused.value)
    assert resolve(ebs_settings | {"image_size_mb": 2 * 1024 * 1024}).image_size_mb == 2097152


def test_too_little_space_for_the_disk_stops_the_install_saying_the_disk_needs_it(run, ebs_settings, node):
    node.faults.disk_full_under = "/tmp"
    message = failed_in(run(ebs_settings), "install")
    assert "destination_dir /tmp has 0 MB free but imaging / into a disk needs about " in message
    assert "kept whole for the EBS snapshot" in message and "parts" not in message
