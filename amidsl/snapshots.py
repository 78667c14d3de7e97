"""What a user is told to run about EBS snapshots amidsl leaves behind."""

from __future__ import annotations

from collections.abc import Iterable


def delete_snapshots_command(snapshot_ids: Iterable[str], region: str = "") -> str:
    """The AWS CLI commands that delete these snapshots, joined with &&."""
    where = f" --region {region}" if region else ""
    return " && ".join(f"aws ec2 delete-snapshot{where} --snapshot-id {s}" for s in snapshot_ids)
