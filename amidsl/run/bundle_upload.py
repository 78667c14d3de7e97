"""Upload a finished bundle to S3 with the very code a native build uploads with.

The controller's steps (amidsl/strategies/native_controller.py) presign one PUT URL per part with the
`aws-exec-read` ACL, skipping parts S3 already holds with the same MD5, and upload the manifest last;
the parts go up through the node program's own parallel, retrying uploader (amidsl/node/amidsl_node.py),
run here in this process instead of on a node. Presigned URLs carry the session token, so temporary
credentials work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from amidsl.bundle.errors import BundleError, PartDigestMismatchError
from amidsl.bundle.manifest import Manifest, read_manifest
from amidsl.bundle.s3 import check_bucket_accepts_acls, storage_error
from amidsl.bundle.untar import CHUNK
from amidsl.bundle.verify import check_part_list
from amidsl.model.actions import NodeProgram, PresignParts, UploadManifest
from amidsl.node import amidsl_node
from amidsl.settings import DEFAULT_UPLOAD_CONCURRENCY
from amidsl.strategies.native import PRESIGNED_PARTS, UPLOAD_RETRIES
from amidsl.strategies.native_controller import ControllerStepFailed, run_controller_step

IN_PROCESS = "(in this process)"


@dataclass(frozen=True)
class UploadReport:
    """What an upload did: the parts sent, the parts S3 already had, and the manifest's key."""

    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    manifest_key: str | None


def _describe_part(path: Path, expected: str) -> dict[str, Any]:
    """A part as the node program reports it (filename, size, sha1, md5), checked against the manifest."""
    sha1, md5, size = hashlib.sha1(), hashlib.md5(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha1.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    if sha1.hexdigest() != expected:
        raise PartDigestMismatchError(
            f"part {path.name} in {path.parent} has SHA-1 {sha1.hexdigest()}, but the manifest says "
            f"{expected}: the part changed since it was bundled; bundle again or copy the right part"
        )
    return {
        "filename": path.name,
        "size": size,
        "sha1": sha1.hexdigest(),
        "md5": base64.b64encode(md5.digest()).decode("ascii"),
    }


def describe_parts(manifest: Manifest, parts_dir: Path) -> list[dict[str, Any]]:
    """Every part of a local bundle with its size, SHA-1 and MD5; refuses a part with a wrong digest."""
    check_part_list(manifest, parts_dir)
    # hashlib releases the GIL, so threads hash parts on every core.
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(lambda p: _describe_part(parts_dir / p.filename, p.digest), manifest.parts))


class InProcessUploader:
    """The controller's back-end for a bundle on this machine: the node program's upload runs here."""

    def __init__(self, s3: Any, presigner: Any) -> None:
        self.s3, self.presigner = s3, presigner

    def run_node_program(self, action: NodeProgram, request: bytes) -> tuple[int, str, str]:
        """Run the node program's upload command in this process (its progress goes to stderr)."""
        try:
            result, status = amidsl_node.command_upload(json.loads(request))
        except amidsl_node.NodeError as err:
            return 1, "", f"amidsl: {err}"
        return status, json.dumps(result) + "\n", ""

    def s3_client(self) -> Any:
        """The S3 client that checks parts already uploaded and puts the manifest."""
        return self.s3

    def presign_client(self) -> Any:
        """The S3 client that presigns the part URLs."""
        return self.presigner

    def ec2_certificate(self) -> str:
        """Not needed: an upload signs nothing."""
        raise TypeError("uploading a bundle needs no EC2 certificate")


def upload_bundle(
    s3: Any,
    presigner: Any,
    manifest_path: Path | str,
    bucket: str,
    key_prefix: str = "",
    *,
    parts_dir: Path | str | None = None,
    concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
    retries: int = UPLOAD_RETRIES,
    skip_manifest: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> UploadReport:
    """Upload a local bundle's parts in parallel (parts already in S3 are skipped), then its manifest,
    each with the ACL aws-exec-read, to `bucket` under `key_prefix`."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    directory = Path(parts_dir) if parts_dir is not None else manifest_path.parent
    key_prefix = key_prefix.strip("/")
    results: dict[str, Any] = {
        "bundle": {"prefix": manifest.name, "parts": describe_parts(manifest, directory.absolute())},
        "manifest": {"xml": manifest.xml},
    }
    check_bucket_accepts_acls(s3, bucket)
    manifest_key = f"{key_prefix}/{manifest_path.name}" if key_prefix else manifest_path.name
    steps = [
        PresignParts("bundle", bucket, key_prefix, region=""),
        NodeProgram(
            IN_PROCESS,
            "upload",
            (
                ("destination_dir", str(directory.absolute())),
                ("parts", PRESIGNED_PARTS),
                ("concurrency", concurrency),
                ("retries", retries),
            ),
            result_name="upload",
            refresh_expired=True,
        ),
    ]
    if not skip_manifest:
        steps.append(UploadManifest("manifest", bucket, manifest_key, region=""))
    backend = InProcessUploader(s3, presigner)
    for step in steps:
        if isinstance(step, NodeProgram) and not results["presigned"]["parts"]:
            continue  # every part is in S3 already
        try:
            progress(run_controller_step(step, None, backend, results))
        except ControllerStepFailed as err:
            raise BundleError(str(err)) from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise storage_error(err, f"uploading to s3://{bucket}/{key_prefix}") from None
    sent = {p["filename"] for p in results["presigned"]["parts"]}
    names = [p["filename"] for p in results["bundle"]["parts"]]
    return UploadReport(
        tuple(n for n in names if n in sent),
        tuple(n for n in names if n not in sent),
        None if skip_manifest else manifest_key,
    )
