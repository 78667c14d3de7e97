"""The UploadSnapshot step: the node's block stream uploaded into a snapshot, checked against what the
node reported, and no snapshot left behind when the upload fails."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest

from amidsl.model.actions import UploadSnapshot
from amidsl.node.amidsl_node import END_OF_BLOCKS
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import BLOCK_SIZE
from amidsl.run.snapshot_step import SnapshotStepFailed, run_upload_snapshot
from simulator import FakeRegion

ACTION = UploadSnapshot(
    "/opt/ami-tools/amidsl_node.py",
    from_result="bundle",
    result_name="snapshot",
    region="us-east-1",
    tags=({"Key": "amidsl:built-by", "Value": "amidsl"},),
    snapshot_description="root disk of a test image",
    concurrency=2,
)
BLOCKS = [(0, b"\x01" * BLOCK_SIZE), (3, b"\x02" * BLOCK_SIZE)]


def frames(blocks, complete: bool = True) -> bytes:
    """What the node program's `blocks` writes: frames, then the end and its result (if it finishes)."""
    out = b"".join(index.to_bytes(8, "big") + data for index, data in blocks)
    return out + (END_OF_BLOCKS.to_bytes(8, "big") + b'{"sent": 2}\n' if complete else b"")


def report(blocks) -> dict:
    """The node's bundle report of a disk made of these blocks."""
    linear = hashlib.sha256(b"".join(hashlib.sha256(data).digest() for _, data in blocks)).digest()
    checksum = base64.b64encode(linear).decode()
    return {"disk": "/tmp/image.disk", "volume_size_gib": 1, "blocks": len(blocks), "checksum": checksum}


class Backend:
    """The step's back-end over a fake region; the node's output is given."""

    def __init__(self, region: FakeRegion, output: bytes, status: int = 0) -> None:
        self.region, self.output, self.status = region, output, status
        self.requests: list[dict] = []

    def stream_node_program(self, action, request: bytes) -> BlockStream:
        self.requests.append({"command": action.command, **json.loads(request)})
        data = io.BytesIO(self.output)
        return BlockStream(data.read, lambda: (self.status, "amidsl-node: error: disk read failed\n"))

    def client(self, service: str, region: str):
        return self.region.strict_client(service, region) if service == "ebs" else self.region.client(service)

    def pause(self, seconds: float) -> None:
        pass


@pytest.fixture
def region():
    made = FakeRegion("us-east-1")
    yield made
    made.close()


def snapshots(region: FakeRegion) -> list[dict]:
    """The snapshots the step made (moto's account holds others of its own)."""
    mine = [{"Name": "description", "Values": [ACTION.snapshot_description]}]
    return region.ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]


def test_the_blocks_become_a_completed_snapshot_whose_id_is_kept(region):
    backend = Backend(region, frames(BLOCKS))
    results = {"bundle": report(BLOCKS)}
    said = run_upload_snapshot(ACTION, backend, results, lambda line: None)
    snapshot_id = results["snapshot"]["SnapshotId"]
    assert said.startswith(f"uploaded 2 blocks (1.0 MB) of /tmp/image.disk into {snapshot_id}")
    assert backend.requests == [{"command": "blocks", "disk": "/tmp/image.disk"}]
    [snapshot] = snapshots(region)
    assert (snapshot["SnapshotId"], snapshot["State"]) == (snapshot_id, "completed")


def test_a_stream_the_node_cut_short_deletes_the_unfinished_snapshot_and_says_so(region):
    backend = Backend(region, frames(BLOCKS, complete=False)[: 8 + BLOCK_SIZE + 100], status=1)
    with pytest.raises(SnapshotStepFailed) as failed:
        run_upload_snapshot(ACTION, backend, {"bundle": report(BLOCKS)}, lambda line: None)
    assert "disk read failed" in str(failed.value)
    assert "was deleted; nothing is left in us-east-1" in str(failed.value)
    assert snapshots(region) == []


def test_a_snapshot_that_does_not_hold_what_the_node_reported_is_named_with_its_removal(region):
    backend = Backend(region, frames(BLOCKS[:1]))
    with pytest.raises(SnapshotStepFailed) as failed:
        run_upload_snapshot(ACTION, backend, {"bundle": report(BLOCKS)}, lambda line: None)
    [snapshot] = snapshots(region)
    assert f"the snapshot {snapshot['SnapshotId']} does not hold the disk the node made" in str(failed.value)
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot['SnapshotId']}" in str(
        failed.value
    )


def test_without_the_bundle_report_it_says_to_run_ami_bundle_in_the_same_build(region):
    with pytest.raises(SnapshotStepFailed, match="run ami-bundle and the phases after it in one build"):
        run_upload_snapshot(ACTION, Backend(region, b""), {}, lambda line: None)
