"""What the live tests check in the image a build registered, and how they remove it again: shared by the
real runs (live_tests/) and their offline run against the simulator's strict region (tests/live/).

The checks are what a user relies on: for an EBS-backed image, that EC2 describes it as registered (an
EBS root on a completed snapshot, EnaSupport and BootMode, amidsl's tag), that the snapshot holds the
blocks the build uploaded, and that its first block is the disk's MBR. Removing goes through amidsl's own
deletion code (find_image, plan_deletion, delete_image), as `amidsl delete` does, and never raises: it
returns what it could not remove, so a test can clean up in a `finally` without hiding its own failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from amidsl.live.aws import Aws
from amidsl.live.build import build_on_host, build_on_launched_node
from amidsl.live.settings import LiveSettings
from amidsl.model.plan import Spec
from amidsl.run.ebs_upload import BLOCK_SIZE
from amidsl.run.images import (
    ImageError,
    ImageSummary,
    delete_image,
    find_image,
    plan_deletion,
)
from amidsl.run.runner import ActionRecord, BuildResult
from amidsl.settings import resolve
from amidsl.snapshots import delete_snapshots_command
from amidsl.tags import BUILT_BY_TAG, BUILT_BY_VALUE

# The EBS-backed variant of the live build: the node program's hvm disk, uploaded into a snapshot.
EBS_BUILD = {"backing": "ebs", "bundler": "native", "virtualization_type": "hvm"}
# What RegisterImage gets for an EBS-backed image unless the settings say otherwise (native_ebs).
EBS_DEFAULTS = {"EnaSupport": True, "BootMode": "legacy-bios"}
# The ami-upload phase's sentence about the snapshot it completed (amidsl/run/snapshot_step.py).
UPLOADED = re.compile(r"uploaded (\d+) blocks \([^)]*\) of \S+ into (snap-[0-9a-f]+) ")
MBR_SIGNATURE = b"\x55\xaa"  # bytes 510-511 of sector 0
PARTITION_1 = 446  # the first partition entry of the MBR: status, CHS, type, CHS, first LBA, sectors
BOOTABLE, LINUX = 0x80, 0x83


def ebs_build_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The live build's settings, EBS-backed, under a name of its own (AMI names are unique), in the
    build's region only (what the test removes) and without bundle_tags (there is no S3 bundle)."""
    settings = {**raw, **EBS_BUILD, "image_name": f"{raw['image_name']}-ebs"}
    for key in ("copy_to_regions", "bundle_tags"):
        settings.pop(key, None)
    return settings


def removal_build_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The live build's settings under a name and an S3 folder of their own, so removing that image and
    bundle touches nothing the other live tests made."""
    name = f"{raw['image_name']}-removed"
    folder = "/".join(p for p in (str(raw.get("s3_path", "")).strip("/"), name) if p)
    settings = {**raw, "image_name": name, "s3_path": folder}
    settings.pop("s3_manifest_path", None)  # derived from s3_path again
    return settings


def aws_for(raw: Mapping[str, Any], live: LiveSettings) -> Aws:
    """The AWS session the build itself uses (the settings' keys, else [live] profile or default chain)."""
    return Aws(resolve(raw), live)


def build(group: Spec, raw: Mapping[str, Any], live: LiveSettings) -> BuildResult:
    """Run the group's build on the [live] node (every phase, cleanup included) or on a node launched for
    it (terminated afterwards), printing progress."""
    if live.host:
        return build_on_host(live.host, raw, spec=group, live=live, progress=print)
    return build_on_launched_node(group, raw, live=live, progress=print)


def described_image(ec2: Any, image_id: str) -> dict[str, Any]:
    """The account's image as DescribeImages returns it."""
    [image] = ec2.describe_images(Owners=["self"], ImageIds=[image_id])["Images"]
    return image


def root_mapping(image: Mapping[str, Any]) -> dict[str, Any]:
    """The block device mapping of the image's root device."""
    [root] = [m for m in image.get("BlockDeviceMappings", []) if m["DeviceName"] == image["RootDeviceName"]]
    return root


def snapshot_state(ec2: Any, snapshot_id: str) -> str:
    """The snapshot's state in DescribeSnapshots (pending, completed, error...)."""
    [snapshot] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return snapshot["State"]


def uploaded_blocks(transcript: Iterable[ActionRecord]) -> dict[str, int]:
    """The snapshots the build's ami-upload phase completed, with the number of blocks it wrote."""
    found = {}
    for record in transcript:
        if record.phase == "ami-upload":
            for count, snapshot_id in UPLOADED.findall(record.output):
                found[snapshot_id] = int(count)
    return found


def listed_blocks(ebs: Any, snapshot_id: str) -> list[dict[str, Any]]:
    """Every block ListSnapshotBlocks lists for a completed snapshot (index and token), page by page."""
    blocks: list[dict[str, Any]] = []
    request: dict[str, Any] = {"SnapshotId": snapshot_id, "MaxResults": 10000}
    while True:
        page = ebs.list_snapshot_blocks(**request)
        blocks += page.get("Blocks", [])
        if not page.get("NextToken"):
            return blocks
        request["NextToken"] = page["NextToken"]


def first_block(ebs: Any, snapshot_id: str, blocks: list[dict[str, Any]]) -> bytes:
    """Block 0 of the snapshot (the disk's first 512 KiB) read back with GetSnapshotBlock."""
    [zero] = [block for block in blocks if block["BlockIndex"] == 0]
    got = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=zero["BlockToken"])
    return got["BlockData"].read()


def assert_registered_ebs_image(ec2: Any, ebs: Any, result: BuildResult) -> None:
    """What a user relies on in an EBS-backed build's image: EC2 describes it as registered, on a
    completed snapshot holding exactly the blocks the build uploaded, whose first block is a bootable MBR."""
    settings = result.settings
    assert result.image_id and result.image_id.startswith("ami-"), result.image_id
    image = described_image(ec2, result.image_id)
    assert (image["Name"], image["State"]) == (settings.image_name, "available")
    assert (image["RootDeviceType"], image["VirtualizationType"]) == ("ebs", "hvm")
    assert "ImageLocation" not in image  # no S3 bundle behind it
    expected = {
        "EnaSupport": EBS_DEFAULTS["EnaSupport"] if settings.ena_support is None else settings.ena_support,
        "BootMode": settings.boot_mode or EBS_DEFAULTS["BootMode"],
    }
    assert {key: image.get(key) for key in expected} == expected
    assert {"Key": BUILT_BY_TAG, "Value": BUILT_BY_VALUE} in image.get("Tags", [])

    root = root_mapping(image)["Ebs"]
    snapshot_id = root["SnapshotId"]
    assert snapshot_id == settings.snapshot_id == ImageSummary.of(image).root_snapshot
    assert snapshot_state(ec2, snapshot_id) == "completed"

    blocks = listed_blocks(ebs, snapshot_id)
    assert uploaded_blocks(result.transcript) == {snapshot_id: len(blocks)}
    assert len(blocks) * BLOCK_SIZE <= root["VolumeSize"] * 1024**3
    sector = first_block(ebs, snapshot_id, blocks)[:512]
    assert sector[510:512] == MBR_SIGNATURE
    assert (sector[PARTITION_1], sector[PARTITION_1 + 4]) == (BOOTABLE, LINUX)


def remove_built_image(
    ec2: Any, s3: Any, image_name: str, progress: Callable[[str], None] = print
) -> list[str]:
    """Deregister the image of this name and delete its snapshots or its bundle with amidsl's deletion
    code; return what is left (empty when nothing is), each with how to remove it. Never raises."""
    left: list[str] = []
    kept: set[str] = set()
    try:
        image = find_image(ec2, image_name)
    except ImageError:
        image = None  # the build registered none
    if image is not None:
        try:
            deletion = plan_deletion(ec2, s3, image)
            removed = delete_image(ec2, s3, deletion)
            progress(f"removed {image.image_id} and {', '.join(removed) or 'nothing else'}")
            kept |= set(deletion.snapshots_kept)
            left += [
                f"the snapshot {snapshot_id}, which {', '.join(users)} use(s) too"
                for snapshot_id, users in deletion.snapshots_kept.items()
            ]
            if deletion.note:
                progress(f"  ({deletion.note})")
        except Exception as err:  # report it: never hide the test's own failure
            left.append(f"{image.image_id} ({image.backing}): {err}")
    left += _orphan_snapshots(ec2, image_name, kept)
    for line in left:
        progress(f"LEFT BEHIND: {line}")
    return left


def _orphan_snapshots(ec2: Any, image_name: str, kept: set[str]) -> list[str]:
    """Snapshots an EBS-backed build of this image uploaded that no image uses (its registration
    failed), found by the description the build gives them (amidsl/strategies/native_ebs.py)."""
    try:
        found = ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "description", "Values": [f"root disk of {image_name}"]}]
        )["Snapshots"]
    except Exception as err:  # report it, as above
        return [f"could not look for snapshots of {image_name!r}: {err}"]
    region = getattr(getattr(ec2, "meta", None), "region_name", "") or ""
    orphans = [s["SnapshotId"] for s in found if s["SnapshotId"] not in kept]
    return [
        f"the snapshot {s}, which no image uses: {delete_snapshots_command([s], region)}" for s in orphans
    ]
