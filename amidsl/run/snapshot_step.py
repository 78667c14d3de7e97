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
from amidsl.run.ebs_upload import (
    BLOCK_SIZE,
    DEFAULT_TIMEOUT_MINUTES,
    SnapshotUploadError,
    SnapshotUploadInterrupted,
    upload_snapshot,
)
from amidsl.snapshots import delete_snapshots_command
from amidsl.strategies.native_ebs import blocks_program, kept_snapshot_hint

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
    """The upload failed; the message names the snapshot left, if any, and how to delete it; `resume`
    says how to go on when the snapshot holds the whole disk ("" otherwise)."""

    def __init__(self, message: str, resume: str = "") -> None:
        super().__init__(message)
        self.resume = resume


def run_upload_snapshot(
    action: UploadSnapshot,
    backend: SnapshotBackend,
    results: dict[str, Any],
    progress: Callable[[str], None],
) -> str:
    """Stream the disk's blocks from the node into a new, completed EBS snapshot; keep its id.

    When it fails or is interrupted after StartSnapshot, results[action.result_name] says what it left:
    {"SnapshotId": ..., "Deleted": bool}."""
    report = results.get(action.from_result)
    if not report or "disk" not in report:
        raise SnapshotStepFailed(
            "the disk report of the ami-bundle phase is not known in this run: run ami-bundle and the "
            "phases after it in one build"
        )
    disk = report["disk"]
    # The clients before the stream: a stream opened before a client that cannot be made is never closed.
    ebs = backend.client("ebs", action.region)
    ec2 = backend.client("ec2", action.region)
    stream = backend.stream_node_program(blocks_program(action, disk), json.dumps({"disk": disk}).encode())
    try:
        upload = upload_snapshot(
            ebs,
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
        raise _failed(err, ec2, action, results) from None
    except SnapshotUploadInterrupted as interrupted:
        # The interruption goes on, saying what became of the snapshot.
        _interrupted(interrupted, ec2, action, results)
        raise
    finally:
        stream.close()  # a failed upload stops reading: the node program must not wait to write
    if (upload.blocks_written, upload.checksum) != (report["blocks"], report["checksum"]):
        # Left on purpose: what it holds may tell what went wrong.
        results[action.result_name] = {"SnapshotId": upload.snapshot_id, "Deleted": False}
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


def _failed(
    err: SnapshotUploadError, ec2: Any, action: UploadSnapshot, results: dict[str, Any]
) -> SnapshotStepFailed:
    """What failed, and what became of its snapshot: kept once completed, else deleted if it can be."""
    snapshot_id = err.snapshot_id
    if err.completing:
        results[action.result_name] = {"SnapshotId": snapshot_id, "Deleted": False}
        return SnapshotStepFailed(
            f"{err.what}. CompleteSnapshot of it succeeded: it holds the whole disk and is kept",
            resume=kept_snapshot_hint(snapshot_id, action.region, state="completing"),
        )
    # A snapshot this run started and could not finish is of no use to any later run (the next bundle
    # is another disk): delete it rather than leave it behind.
    deleted, said = _delete(snapshot_id, ec2, action.region)
    results[action.result_name] = {"SnapshotId": snapshot_id, "Deleted": deleted}
    return SnapshotStepFailed(f"{err.what}. {said}")


def _interrupted(
    interrupted: SnapshotUploadInterrupted, ec2: Any, action: UploadSnapshot, results: dict[str, Any]
) -> None:
    """Keep a snapshot CompleteSnapshot was sent for, delete an unfinished one; say which in the note."""
    snapshot_id, region = interrupted.snapshot_id, action.region
    if snapshot_id is None:
        interrupted.note = (
            "Ctrl-C came before StartSnapshot answered: no snapshot id is known. If AWS made one, it "
            f"stays pending and ends in error after {DEFAULT_TIMEOUT_MINUTES} minutes; its description is "
            f'"{action.snapshot_description}".'
        )
        return
    if interrupted.completion == "done":
        interrupted.note = (
            f"The snapshot {snapshot_id} was completed (CompleteSnapshot succeeded) and is kept in {region}: "
            "it holds the whole disk (EC2 may say pending a while longer)."
        )
        interrupted.resume = kept_snapshot_hint(snapshot_id, region, state="completing")
    elif interrupted.completion == "sent":
        interrupted.note = (
            f"Ctrl-C came while CompleteSnapshot of {snapshot_id} was sent: the snapshot is kept in "
            f"{region}, as it holds the whole disk if the request reached AWS (if it never says completed, "
            "it ends in error and can only be deleted)."
        )
        interrupted.resume = kept_snapshot_hint(
            snapshot_id, region, state="completing, if CompleteSnapshot arrived"
        )
    else:
        # Every put has ended (the upload waited for them): the unfinished snapshot can go.
        deleted, interrupted.note = _delete(snapshot_id, ec2, region)
        results[action.result_name] = {"SnapshotId": snapshot_id, "Deleted": deleted}
        return
    results[action.result_name] = {"SnapshotId": snapshot_id, "Deleted": False}


def _delete(snapshot_id: str, ec2: Any, region: str) -> tuple[bool, str]:
    """Delete an unfinished snapshot: (deleted?, what became of it, with its delete command if it stays)."""
    command = delete_snapshots_command([snapshot_id], region)
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except KeyboardInterrupt:
        return False, (
            f"Ctrl-C stopped deleting the unfinished snapshot {snapshot_id}: it may stay in {region}; "
            f"delete it with `{command}`"
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as failed:
        return False, (
            f"Deleting the unfinished snapshot {snapshot_id} failed ({type(failed).__name__}: {failed}); it "
            f"stays in {region}: delete it with `{command}`"
        )
    return True, f"The unfinished snapshot {snapshot_id} was deleted; nothing is left in {region}"
