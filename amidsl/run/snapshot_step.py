"""The UploadSnapshot step of an EBS-backed build: the node program streams the disk's data blocks over
its SSH channel (or the simulator's pipe) and the controller uploads them into a new EBS snapshot.

The node's bundle report says how many blocks hold data and their LINEAR checksum; the completed snapshot
must hold exactly those, or the step fails naming the snapshot and the command that deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import botocore.exceptions

from amidsl.model.actions import NodeProgram, UploadSnapshot
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import BLOCK_SIZE, SnapshotUploadError, SnapshotUploadInterrupted, upload_snapshot
from amidsl.snapshots import delete_snapshots_command
from amidsl.strategies.native_ebs import blocks_program

MB = 1_000_000


class SnapshotBackend(Protocol):
    """What the step needs from an executing back-end."""

    def stream_node_program(self, action: NodeProgram, request: bytes) -> BlockStream:
        """Run the node program's `blocks` command and read its block frames as they come."""
        ...

    def client(self, service: str, region: str) -> Any:
        """A boto3 client of the build's account in `region`."""
        ...

    def pause(self, seconds: float) -> None:
        """Wait before a retry or a poll."""
        ...


class SnapshotStepFailed(Exception):
    """The upload failed; the message names the snapshot left, if any, and how to delete it."""


def run_upload_snapshot(
    action: UploadSnapshot,
    backend: SnapshotBackend,
    results: dict[str, Any],
    progress: Callable[[str], None],
) -> str:
    """Stream the disk's blocks from the node into a new, completed EBS snapshot; keep its id."""
    report = results.get(action.from_result)
    if not report or "disk" not in report:
        raise SnapshotStepFailed(
            "the disk report of the ami-bundle phase is not known in this run: run ami-bundle and the "
            "phases after it in one build"
        )
    disk = report["disk"]
    stream = backend.stream_node_program(blocks_program(action, disk), json.dumps({"disk": disk}).encode())
    ec2 = backend.client("ec2", action.region)
    try:
        upload = upload_snapshot(
            backend.client("ebs", action.region),
            stream,
            ec2=ec2,
            volume_size_gib=int(report["volume_size_gib"]),
            tags=[(tag["Key"], tag["Value"]) for tag in action.tags],
            description=action.snapshot_description,
            concurrency=action.concurrency,
            encryption=dict(action.encryption),
            progress=progress,
            pause=backend.pause,
        )
    except SnapshotUploadError as err:
        if not err.snapshot_id:
            raise
        # A snapshot this run started and could not finish is of no use to any later run (the next
        # bundle is another disk): delete it rather than leave it behind.
        raise SnapshotStepFailed(_without(err, ec2, action.region)) from None
    except SnapshotUploadInterrupted as interrupted:
        # Ctrl-C: the same holds for the snapshot; the interruption goes on, saying what became of it.
        interrupted.note = _deleted(interrupted.snapshot_id, ec2, action.region)
        raise
    finally:
        stream.close()  # a failed upload stops reading: the node program must not wait to write
    if (upload.blocks_written, upload.checksum) != (report["blocks"], report["checksum"]):
        raise SnapshotStepFailed(
            f"the snapshot {upload.snapshot_id} does not hold the disk the node made: "
            f"{upload.blocks_written} blocks with the checksum {upload.checksum}, where the node counted "
            f"{report['blocks']} with {report['checksum']}. Delete it with "
            f"`{delete_snapshots_command([upload.snapshot_id], action.region)}` and run ami-bundle again"
        )
    results[action.result_name] = {"SnapshotId": upload.snapshot_id}
    size = upload.blocks_written * BLOCK_SIZE
    return (
        f"uploaded {upload.blocks_written} blocks ({size / MB:.1f} MB) of {disk} into {upload.snapshot_id} "
        f"({upload.volume_size_gib} GiB, completed)"
    )


def _without(err: SnapshotUploadError, ec2: Any, region: str) -> str:
    """Delete the unfinished snapshot of a failed upload; what failed, and what became of it."""
    snapshot_id = err.snapshot_id
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as failed:
        return f"{err}. Deleting it failed too ({type(failed).__name__}: {failed})"
    return f"{err.what}. The unfinished snapshot {snapshot_id} was deleted; nothing is left in {region}"


def _deleted(snapshot_id: str, ec2: Any, region: str) -> str:
    """Delete the unfinished snapshot of an interrupted upload; what became of it."""
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as failed:
        return (
            f"Deleting the unfinished snapshot {snapshot_id} failed ({type(failed).__name__}: {failed}); "
            f"delete it with `{delete_snapshots_command([snapshot_id], region)}`"
        )
    return f"The unfinished snapshot {snapshot_id} was deleted; nothing is left in {region}"
