"""What a failed upload or registration leaves in S3: find it, name it, and remove it on request.

ec2-upload-bundle puts the parts up first and the manifest last, so a failed upload can leave parts,
and a failed RegisterImage the whole bundle. After such a failure the runner lists what is there, and
either says so with the command that removes it, or (on_error "cleanup-all") removes it and checks.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from amidsl.bundle.s3 import is_part_name
from amidsl.model.actions import AwsCall
from amidsl.settings import AmiSettings

# The phases whose failure can leave bundle files in S3 (after ami-register they are the image's).
UPLOADING_PHASES = ("ami-upload", "ami-register")
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys

CallAws = Callable[[AwsCall, dict[str, Any]], dict[str, Any]]


def bundle_prefix(s: AmiSettings) -> str:
    """The S3 key prefix the bundle's files share: `path/` (empty when the bundle is at the top)."""
    return f"{s.s3_path}/" if s.s3_path else ""


def is_bundle_file(s: AmiSettings, name: str) -> bool:
    """A part or the manifest of this bundle (a name relative to the bundle prefix)."""
    return name == f"{s.prefix}.manifest.xml" or is_part_name(s.prefix, name)


def removal_command(s: AmiSettings) -> str:
    """The amidsl command that removes this bundle's files (and nothing else) from S3, manifest or not."""
    where = f"{s.s3_bucket}/{s.s3_path}" if s.s3_path else s.s3_bucket
    words = ["amidsl", "delete-bundle", "-b", where, "-p", s.prefix, "--partial", "--region", s.region]
    return " ".join(shlex.quote(word) for word in words)


def _call(s: AmiSettings, operation: str, params: dict[str, Any]) -> AwsCall:
    return AwsCall("s3", operation, tuple(params.items()), region=s.region, result_name="leftovers")


def find_leftovers(s: AmiSettings, call_aws: CallAws) -> list[str]:
    """The keys of this bundle's files in S3, sorted."""
    keys: list[str] = []
    params: dict[str, Any] = {"Bucket": s.s3_bucket, "Prefix": f"{bundle_prefix(s)}{s.prefix}."}
    while True:
        listed = call_aws(_call(s, "ListObjectsV2", params), params)
        prefix = bundle_prefix(s)
        keys += [
            item["Key"]
            for item in listed.get("Contents", [])
            if is_bundle_file(s, item["Key"][len(prefix) :])
        ]
        if not listed.get("IsTruncated"):
            return sorted(keys)
        params = {**params, "ContinuationToken": listed["NextContinuationToken"]}


def remove_leftovers(s: AmiSettings, keys: list[str], call_aws: CallAws) -> None:
    """Delete the keys from the bucket (raises on any error, including one reported per key)."""
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        params = {
            "Bucket": s.s3_bucket,
            "Delete": {"Objects": [{"Key": key} for key in batch], "Quiet": True},
        }
        answer = call_aws(_call(s, "DeleteObjects", params), params)
        if answer.get("Errors"):
            error = answer["Errors"][0]
            raise RuntimeError(f"{error.get('Key')}: {error.get('Code')} {error.get('Message', '')}".strip())


def leftovers_note(s: AmiSettings, call_aws: CallAws, remove: bool) -> tuple[bool, str]:
    """After a failed upload or registration: (bundle removed from S3?, what remains there and how to
    remove it, or that it was removed, checked by listing again; empty when nothing was there)."""
    place = f"s3://{s.s3_bucket}/{bundle_prefix(s)}"
    try:
        keys = find_leftovers(s, call_aws)
        if keys and remove:
            remove_leftovers(s, keys, call_aws)
            remaining = find_leftovers(s, call_aws)
            if not remaining:
                return True, f"The bundle was removed from S3 ({len(keys)} object(s) under {place})."
            keys = remaining
    except (Exception, KeyboardInterrupt) as err:
        err = err if str(err) else "interrupted"
        return False, (
            f"Files of the bundle may remain in S3 under {place} (listing or removing them failed: {err}). "
            f"Remove them with: {removal_command(s)}"
        )
    if not keys:
        return False, ""
    names = ", ".join(f"s3://{s.s3_bucket}/{key}" for key in keys)
    advice = "" if remove else " (or run with --on-error cleanup-all to have amidsl remove them)"
    return (
        False,
        f"The bundle's files were left in S3: {names}. Remove them with: {removal_command(s)}{advice}",
    )
