"""The UploadSnapshot step: the node's block stream uploaded into a snapshot, checked against what the
node reported, and no snapshot left behind when the upload fails."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
from botocore.exceptions import ClientError

from amidsl.model.actions import UploadSnapshot
from amidsl.node.amidsl_node import END_OF_BLOCKS
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import BLOCK_SIZE, SnapshotUploadInterrupted
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

    def __init__(self, region: FakeRegion, output: bytes, status: int = 0, ec2=None) -> None:
        self.region, self.output, self.status = region, output, status
        self.ec2 = ec2 or (lambda client: client)  # wraps the EC2 client, e.g. to meddle with a call
        self.requests: list[dict] = []
        self.streams: list[BlockStream] = []

    def stream_node_program(self, action, request: bytes) -> BlockStream:
        self.requests.append({"command": action.command, **json.loads(request)})
        data = io.BytesIO(self.output)
        stream = BlockStream(data.read, lambda: (self.status, "amidsl-node: error: disk read failed\n"))
        self.streams.append(stream)
        return stream

    def client(self, service: str, region: str):
        if service == "ebs":
            return self.region.strict_client(service, region)
        return self.ec2(self.region.client(service))

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


class EC2With:
    """An EC2 client whose calls named in `instead` do that instead (raise, or answer otherwise)."""

    def __init__(self, client, **instead):
        self.client, self.instead, self.meta = client, instead, client.meta

    def __getattr__(self, method):
        return self.instead.get(method) or getattr(self.client, method)


def ctrl_c(**params):
    raise KeyboardInterrupt


def refused(**params):
    raise ClientError(
        {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}, "DeleteSnapshot"
    )


def test_ctrl_c_while_waiting_for_completed_keeps_the_completed_snapshot_and_says_how_to_resume(region):
    backend = Backend(region, frames(BLOCKS), ec2=lambda ec2: EC2With(ec2, describe_snapshots=ctrl_c))
    results = {"bundle": report(BLOCKS)}
    with pytest.raises(SnapshotUploadInterrupted) as caught:
        run_upload_snapshot(ACTION, backend, results, lambda line: None)
    [snapshot] = snapshots(region)
    snapshot_id = snapshot["SnapshotId"]
    assert snapshot["State"] == "completed"  # kept: it holds the whole disk
    said = f"{caught.value.note}\n{caught.value.resume}"
    assert f"The snapshot {snapshot_id} was completed (CompleteSnapshot succeeded) and is kept" in said
    assert f"--phase ami-register --phase cleanup --set snapshot_id={snapshot_id}" in said
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in said
    assert "deleted" not in caught.value.note
    assert results["snapshot"] == {"SnapshotId": snapshot_id, "Deleted": False}


def test_a_completed_snapshot_still_pending_after_the_wait_is_kept_with_how_to_resume(region):
    def still_pending(**params):
        found = region.ec2.describe_snapshots(**params)
        return {"Snapshots": [item | {"State": "pending"} for item in found["Snapshots"]]}

    backend = Backend(region, frames(BLOCKS), ec2=lambda ec2: EC2With(ec2, describe_snapshots=still_pending))
    results = {"bundle": report(BLOCKS)}
    with pytest.raises(SnapshotStepFailed) as failed:
        run_upload_snapshot(ACTION, backend, results, lambda line: None)
    [snapshot] = snapshots(region)
    snapshot_id = snapshot["SnapshotId"]
    said = f"{failed.value}\n{failed.value.resume}"
    assert "is still pending after 1800 s" in said and "deleted" not in str(failed.value)
    assert f"--set snapshot_id={snapshot_id}" in said
    assert results["snapshot"] == {"SnapshotId": snapshot_id, "Deleted": False}


@pytest.mark.parametrize("deleting", [refused, ctrl_c], ids=["refused", "interrupted"])
def test_a_snapshot_that_could_not_be_deleted_after_ctrl_c_is_named_with_its_delete_command(region, deleting):
    backend = Backend(region, frames(BLOCKS), ec2=lambda ec2: EC2With(ec2, delete_snapshot=deleting))
    results = {"bundle": report(BLOCKS)}

    def ctrl_c_once_started(line):
        if "started" in line:
            raise KeyboardInterrupt

    with pytest.raises(SnapshotUploadInterrupted) as caught:
        run_upload_snapshot(ACTION, backend, results, ctrl_c_once_started)
    [snapshot] = snapshots(region)
    snapshot_id = snapshot["SnapshotId"]
    assert "was deleted" not in caught.value.note
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in caught.value.note
    assert results["snapshot"] == {"SnapshotId": snapshot_id, "Deleted": False}


def test_a_snapshot_deleted_after_a_failed_upload_is_reported_deleted(region):
    backend = Backend(region, frames(BLOCKS, complete=False)[: 8 + BLOCK_SIZE + 100], status=1)
    results = {"bundle": report(BLOCKS)}
    with pytest.raises(SnapshotStepFailed):
        run_upload_snapshot(ACTION, backend, results, lambda line: None)
    assert results["snapshot"]["Deleted"] is True


def test_a_snapshot_that_does_not_hold_what_the_node_reported_is_reported_left(region):
    results = {"bundle": report(BLOCKS)}
    with pytest.raises(SnapshotStepFailed):
        run_upload_snapshot(ACTION, Backend(region, frames(BLOCKS[:1])), results, lambda line: None)
    [snapshot] = snapshots(region)
    assert results["snapshot"] == {"SnapshotId": snapshot["SnapshotId"], "Deleted": False}


def test_ctrl_c_before_start_snapshot_answered_says_no_snapshot_id_is_known(region, monkeypatch):
    backend = Backend(region, frames(BLOCKS))
    ebs = region.strict_client("ebs")
    monkeypatch.setattr(ebs, "start_snapshot", ctrl_c)
    monkeypatch.setattr(
        backend, "client", lambda service, name: ebs if service == "ebs" else region.client(service)
    )
    results = {"bundle": report(BLOCKS)}
    with pytest.raises(SnapshotUploadInterrupted) as caught:
        run_upload_snapshot(ACTION, backend, results, lambda line: None)
    assert "before StartSnapshot answered: no snapshot id is known" in caught.value.note
    assert f'"{ACTION.snapshot_description}"' in caught.value.note
    assert "snapshot" not in results


def test_a_client_that_cannot_be_made_leaves_no_block_stream_open(region, monkeypatch):
    backend = Backend(region, frames(BLOCKS))

    def no_client(service, name):
        raise ValueError(f"no {service} client in {name}")

    monkeypatch.setattr(backend, "client", no_client)
    with pytest.raises(ValueError):
        run_upload_snapshot(ACTION, backend, {"bundle": report(BLOCKS)}, lambda line: None)
    assert all(stream.finished for stream in backend.streams)
