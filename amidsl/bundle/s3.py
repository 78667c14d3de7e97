"""Bundles in S3: read a manifest from a bucket, delete exactly a bundle's files, download a bundle.

Every function takes a boto3 S3 client, so the caller decides credentials, region and endpoint. A
bundle's files are the manifest's parts, each at `<manifest's key prefix>/<part file name>`, and the
manifest itself; nothing else under that prefix is ever touched, nor a part that another manifest beside
it names (a migrated copy of the manifest, registered as another image, uses the same parts). S3's
errors become BundleStorageError naming the object and the fix; a manifest amidsl cannot parse is
refused before anything is done.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions

from amidsl.bundle.errors import BundleError, ManifestParseError, PartDigestMismatchError
from amidsl.bundle.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from amidsl.bundle.unbundle import place_file
from amidsl.bundle.untar import CHUNK
from amidsl.bundle.verify import check_part_entries, file_sha1
from amidsl.iterate import zip_strict

DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
DOWNLOAD_CONCURRENCY = 4
MANIFEST_SUFFIX = ".manifest.xml"


class BundleStorageError(BundleError):
    """S3 refused or failed a request for a bundle's file; the message names the object and the fix."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # S3's error code, when S3 answered


def s3_url(bucket: str, key: str) -> str:
    """An object's s3:// address, for messages."""
    return f"s3://{bucket}/{key}"


def split_image_location(location: str) -> tuple[str, str]:
    """(bucket, manifest key) of an S3-backed image's ImageLocation, `bucket/path/prefix.manifest.xml`."""
    bucket, _, key = location.partition("/")
    if not bucket or not key:
        raise BundleError(
            f"image location {location!r} is not bucket/key of a manifest; is it an S3-backed image?"
        )
    return bucket, key


def delete_bundle_command(bucket: str, manifest_key: str) -> str:
    """The amidsl command line that deletes this bundle (for messages)."""
    prefix, _, name = manifest_key.rpartition("/")
    where = f"{bucket}/{prefix}" if prefix else bucket
    return f"amidsl delete-bundle -b {shlex.quote(where)} -m {shlex.quote(name)}"


def part_key(manifest_key: str, filename: str) -> str:
    """The S3 key of a part: beside the manifest, under the manifest key's prefix."""
    prefix = manifest_key.rpartition("/")[0]
    return f"{prefix}/{filename}" if prefix else filename


def storage_error(error: Exception, what: str) -> BundleStorageError:
    """A BundleStorageError for a failed S3 request about `what` (an s3:// address)."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        detail = error.response.get("Error", {}).get("Message", "").rstrip(".")
        fixes = {
            "NoSuchBucket": "check the bucket name and the region",
            "NoSuchKey": "check the key (list the bucket with `aws s3 ls`)",
            "404": "check the key (list the bucket with `aws s3 ls`)",
            "AccessDenied": "give the credentials access to the bucket, or use others",
            "403": "give the credentials access to the bucket, or use others",
            "AccessControlListNotSupported": (
                "the bucket has ACLs disabled (Object Ownership BucketOwnerEnforced); enable ACLs with "
                "`aws s3api put-bucket-ownership-controls` (BucketOwnerPreferred) or use another bucket"
            ),
        }
        fix = fixes.get(code, "see the AWS documentation of that error")
        message = f"{what}: S3 answered {code}{': ' + detail if detail else ''}; {fix}"
        return BundleStorageError(message, code)
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return BundleStorageError(
            f"{what}: no AWS credentials found; set AWS_PROFILE (or --profile), or the AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) environment variables"
        )
    return BundleStorageError(f"{what}: {error}")


def object_ownership(s3: Any, bucket: str) -> str:
    """The bucket's Object Ownership setting ("" when it has no ownership controls, which allows ACLs).

    Raises botocore's error when S3 will not say.
    """
    try:
        controls = s3.get_bucket_ownership_controls(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code", "") == "OwnershipControlsNotFoundError":
            return ""
        raise
    rules = controls.get("OwnershipControls", {}).get("Rules", [])
    return rules[0].get("ObjectOwnership", "") if rules else ""


def acl_fix(bucket: str) -> str:
    """How to let a bucket with ACLs disabled take the aws-exec-read ACL."""
    return (
        f"run `aws s3api put-bucket-ownership-controls --bucket {bucket} "
        "--ownership-controls 'Rules=[{ObjectOwnership=BucketOwnerPreferred}]'`, or use another bucket"
    )


def check_bucket_accepts_acls(s3: Any, bucket: str) -> None:
    """Refuse a bucket with ACLs disabled: it refuses the aws-exec-read ACL every bundle file needs."""
    try:
        ownership = object_ownership(s3, bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return  # not allowed to look: the uploads themselves will say
    if ownership == "BucketOwnerEnforced":
        raise BundleStorageError(
            f"bucket {bucket!r} has ACLs disabled (Object Ownership BucketOwnerEnforced), so it refuses "
            f"the aws-exec-read ACL EC2 needs to read a bundle; {acl_fix(bucket)}",
            "AccessControlListNotSupported",
        )


def read_s3_manifest(s3: Any, bucket: str, manifest_key: str) -> Manifest:
    """Fetch and parse a manifest from S3, with its part list checked (plain, unique file names)."""
    where = s3_url(bucket, manifest_key)
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"]
        raw = body.read(MAX_MANIFEST_BYTES + 1)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise storage_error(err, f"reading manifest {where}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestParseError(f"{where} is larger than a manifest can be; is it a manifest?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestParseError(f"{where} is not UTF-8 text; is it a manifest?") from None
    manifest = parse_manifest(text, source=f"manifest {where}")
    try:
        check_part_entries(manifest)
    except BundleError as err:
        raise ManifestParseError(f"manifest {where}: {err}") from None
    return manifest


def bundle_keys(manifest: Manifest, bucket: str, manifest_key: str) -> list[str]:
    """The S3 keys of a bundle's files: every part, then the manifest.

    Part names must be `<image name>.part.<n>`, as every bundler writes them, so that a manifest can
    never name another object under its prefix (another bundle's manifest, or any other file).
    """
    for part in manifest.parts:
        if not is_part_name(manifest.name, part.filename):
            raise ManifestParseError(
                f"manifest {s3_url(bucket, manifest_key)} names the part {part.filename!r}, which is not "
                f"{manifest.name}.part.<n>; refusing to touch objects a bundle does not own"
            )
    return [part_key(manifest_key, p.filename) for p in manifest.parts] + [manifest_key]


def is_part_name(prefix: str, filename: str) -> bool:
    """Whether a file name is a part of the bundle with this prefix: `<prefix>.part.<n>`."""
    return re.fullmatch(re.escape(prefix) + r"\.part\.\d+", filename) is not None


def partial_bundle_keys(s3: Any, bucket: str, manifest_key: str) -> list[str]:
    """The keys of a bundle's files found by their names, for a bundle whose manifest may never have
    been uploaded: every `<prefix>.part.<n>` beside the manifest's key, then the manifest if it is there."""
    folder, _, name = manifest_key.rpartition("/")
    if not name.endswith(MANIFEST_SUFFIX) or name == MANIFEST_SUFFIX:
        raise BundleError(
            f"{name} is not PREFIX{MANIFEST_SUFFIX}: the parts of a partial bundle are found by its "
            "prefix; give --prefix PREFIX"
        )
    prefix = name[: -len(MANIFEST_SUFFIX)]
    start = f"{folder}/" if folder else ""
    parts, manifest = [], []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{start}{prefix}."):
            for item in page.get("Contents", []):
                filename = item["Key"][len(start) :]
                if is_part_name(prefix, filename):
                    parts.append(item["Key"])
                elif item["Key"] == manifest_key:
                    manifest.append(item["Key"])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise storage_error(err, f"listing the bundle's files under {s3_url(bucket, start)}") from None
    return sorted(parts) + manifest


@dataclass(frozen=True)
class BundleDeletion:
    """What deleting a bundle removes and what it keeps.

    `keys`: its parts that no other manifest names, then its manifest (when it is there); `kept`: each
    part another manifest beside it names, with the keys of those manifests; `consulted`: manifests
    looked at besides the `*.manifest.xml` files beside it (other images' registered manifests).
    """

    bucket: str
    manifest_key: str
    keys: tuple[str, ...]
    kept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    consulted: tuple[str, ...] = ()


def manifests_beside(s3: Any, bucket: str, manifest_key: str) -> list[str]:
    """The keys of the other `*.manifest.xml` files in the manifest's folder (only they, or a manifest
    registered from that folder, can name a part there: a part's key is its manifest's folder and name)."""
    folder = manifest_key.rpartition("/")[0]
    start = f"{folder}/" if folder else ""
    found = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start, Delimiter="/"):
            for item in page.get("Contents", []):
                if item["Key"].endswith(MANIFEST_SUFFIX) and item["Key"] != manifest_key:
                    found.append(item["Key"])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise storage_error(err, f"listing the manifests under {s3_url(bucket, start)}") from None
    return sorted(found)


def _mentions(text: str, filename: str) -> bool:
    """Whether the text names the file as a whole word (between tags, spaces or its ends)."""
    return re.search(rf"(?<![^\s<>]){re.escape(filename)}(?![^\s<>])", text) is not None


def part_keys_named_by(s3: Any, bucket: str, manifest_key: str, candidates: list[str]) -> set[str]:
    """Which of the candidate part keys the manifest at `manifest_key` names (none when it is gone).

    A manifest that does not parse may still be one EC2 took, or a damaged copy of one: every part it
    mentions by file name counts as named. One that cannot be read stops everything, since nobody can
    tell what it names."""
    where = s3_url(bucket, manifest_key)
    try:
        raw = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read(MAX_MANIFEST_BYTES + 1)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        error = storage_error(err, f"reading the manifest {where} beside it")
        if error.code in ("NoSuchKey", "404"):
            return set()
        raise BundleStorageError(
            f"{error}. It may name this bundle's parts, so nothing was deleted; let these credentials "
            "read it, or move it out of the bundle's folder, and run the command again",
            error.code,
        ) from None
    text = raw.decode("utf-8", errors="replace")
    try:
        named = {part.filename for part in parse_manifest(text, source=f"manifest {where}").parts}
    except BundleError:
        return {key for key in candidates if _mentions(text, key.rpartition("/")[2])}
    return {key for key in candidates if key.rpartition("/")[2] in named}


def parts_named_elsewhere(
    s3: Any, bucket: str, manifest_key: str, keys: Sequence[str], consulted: Sequence[str] = ()
) -> dict[str, tuple[str, ...]]:
    """Each of these part keys that another manifest beside this one (or one of `consulted`) names,
    with the keys of the manifests that name it."""
    parts = [key for key in keys if key != manifest_key]
    folder = manifest_key.rpartition("/")[0]
    others = set(manifests_beside(s3, bucket, manifest_key)) if parts else set()
    others.update(key for key in consulted if key.rpartition("/")[0] == folder and key != manifest_key)
    holders: dict[str, list[str]] = {}
    for other in sorted(others):
        for key in part_keys_named_by(s3, bucket, other, parts):
            holders.setdefault(key, []).append(other)
    return {key: tuple(holders[key]) for key in parts if key in holders}


def plan_bundle_deletion(
    s3: Any, bucket: str, manifest_key: str, partial: bool = False, consulted: Sequence[str] = ()
) -> BundleDeletion:
    """Look at a bundle and every manifest beside it; say what deleting it removes and keeps.

    With `partial` the files are found by name (`<prefix>.part.<n>` and the manifest), not read from
    the manifest: for what a failed upload left, whose manifest never went up. Either way a part that
    another manifest beside it (or one of `consulted`) names is kept: another image may use it."""
    if partial:
        keys = partial_bundle_keys(s3, bucket, manifest_key)
    else:
        keys = bundle_keys(read_s3_manifest(s3, bucket, manifest_key), bucket, manifest_key)
    kept = parts_named_elsewhere(s3, bucket, manifest_key, keys, consulted)
    going = tuple(key for key in keys if key not in kept)
    return BundleDeletion(bucket, manifest_key, going, kept, tuple(consulted))


def delete_planned_bundle(s3: Any, plan: BundleDeletion) -> list[str]:
    """Delete the planned keys, parts first and the manifest last (so an interrupted delete can be run
    again), less any part a manifest put beside it since names; return the keys deleted."""
    now_named = parts_named_elsewhere(s3, plan.bucket, plan.manifest_key, plan.keys, plan.consulted)
    keys = [key for key in plan.keys if key not in now_named]
    parts = [key for key in keys if key != plan.manifest_key]
    batches = [parts[i : i + DELETE_BATCH] for i in range(0, len(parts), DELETE_BATCH)]
    for batch in batches + ([[plan.manifest_key]] if plan.manifest_key in keys else []):
        try:
            answer = s3.delete_objects(
                Bucket=plan.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise storage_error(
                err, f"deleting the bundle {s3_url(plan.bucket, plan.manifest_key)}"
            ) from None
        if answer.get("Errors"):
            error = answer["Errors"][0]
            raise BundleStorageError(
                f"deleting {s3_url(plan.bucket, error.get('Key', '?'))}: S3 answered {error.get('Code')}: "
                f"{error.get('Message', '')}; the manifest is kept, so the same command deletes the rest"
            )
    return keys


def delete_bundle(
    s3: Any, bucket: str, manifest_key: str, dry_run: bool = False, partial: bool = False
) -> list[str]:
    """Delete a bundle's parts that no other manifest beside it names, then its manifest; return the
    keys deleted, or with `dry_run` the keys that would be (see plan_bundle_deletion)."""
    plan = plan_bundle_deletion(s3, bucket, manifest_key, partial=partial)
    return list(plan.keys) if dry_run else delete_planned_bundle(s3, plan)


def _private_file(path: Path) -> Any:
    """A new file at `path`, readable by its owner only, never opened through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return open(os.open(path, flags, 0o600), "wb")


def _download_part(s3: Any, bucket: str, key: str, expected: str, target: Path) -> None:
    """Stream one part into `target`, checking its SHA-1 against the manifest as it arrives."""
    digest = hashlib.sha1()
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with _private_file(target) as out:
            while chunk := body.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise storage_error(err, f"downloading {s3_url(bucket, key)}") from None
    if digest.hexdigest() != expected:
        raise PartDigestMismatchError(
            f"part {target.name} ({s3_url(bucket, key)}) has SHA-1 {digest.hexdigest()}, but the "
            f"manifest says {expected}: the object in S3 is not the bundle's part; it was not kept"
        )


def _already_here(path: Path, expected: str) -> bool:
    """True when `path` is a regular file (not a link) whose SHA-1 is the manifest's."""
    return path.is_file() and not path.is_symlink() and file_sha1(path) == expected


def download_bundle(
    s3: Any,
    bucket: str,
    manifest_key: str,
    destination: Path | str,
    concurrency: int = DOWNLOAD_CONCURRENCY,
    progress: Callable[[str], None] = lambda line: None,
) -> list[str]:
    """Download a bundle's parts in parallel, each checked against the manifest's SHA-1 as it
    arrives, then its manifest, into `destination`; return the file names written.

    Parts already in `destination` with the right digest are kept, so a download can be resumed.
    Files are written into a private staging directory and moved into place only once checked.
    """
    manifest = read_s3_manifest(s3, bucket, manifest_key)
    keys = bundle_keys(manifest, bucket, manifest_key)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    manifest_name = manifest_key.rpartition("/")[2]
    if manifest_name in ("", ".", ".."):
        raise BundleError(
            f"{s3_url(bucket, manifest_key)} does not end in a file name; give the manifest's key"
        )
    wanted = [
        (p.filename, key, p.digest)
        for p, key in zip_strict(manifest.parts, keys[:-1])
        if not _already_here(destination / p.filename, p.digest)
    ]
    kept = len(manifest.parts) - len(wanted)
    if kept:
        progress(f"{kept} part(s) already in {destination} with the right SHA-1, kept")
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as staging:

        def fetch(item: tuple[str, str, str]) -> str:
            filename, key, digest = item
            _download_part(s3, bucket, key, digest, Path(staging) / filename)
            place_file(Path(staging) / filename, destination / filename)
            return filename

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(fetch, item) for item in wanted]
            try:
                for done, future in enumerate(futures, 1):
                    progress(f"downloaded {future.result()} ({done} of {len(wanted)})")
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        with _private_file(Path(staging) / manifest_name) as out:
            out.write(manifest.xml.encode("utf-8"))
        place_file(Path(staging) / manifest_name, destination / manifest_name)
    return [p.filename for p in manifest.parts] + [manifest_name]
