"""The commands that work on AWS directly: upload-bundle, download-bundle, delete-bundle, images, delete.

AWS credentials and region come from the standard boto3 chain (AWS_PROFILE or --profile, the
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN environment variables, the shared config
files, an instance role), never from the command line, where any user of the machine could read them.
`--region` and `--endpoint-url` choose where. The S3 commands follow the bucket to its own region.

Each command takes the table's AWS options (region, profile, endpoint_url) as `**aws`, which is
what AwsClients takes. Thin by design: resolve the clients, call the library, print the result.
Every problem becomes a CommandError, printed without a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from json import dumps
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

from amidsl.bundle.errors import BundleError
from amidsl.bundle.manifest import read_manifest
from amidsl.bundle.s3 import MANIFEST_SUFFIX, delete_planned_bundle, plan_bundle_deletion, s3_url
from amidsl.bundle.s3 import download_bundle as download_bundle_files
from amidsl.cli.table import FAILED, CommandError
from amidsl.run.bundle_upload import upload_bundle as upload_bundle_files
from amidsl.run.ebs_upload import CONNECTION_ERRORS
from amidsl.run.images import (
    ImageError,
    ImageSummary,
    NoCredentials,
    amidsl_images,
    bundle_location,
    delete_image,
    find_image,
    images_registered_from,
    plan_deletion,
)
from amidsl.settings.checks import bucket_problem
from amidsl.settings.constants import MAX_UPLOAD_CONCURRENCY

T = TypeVar("T")


class AwsClients:
    """boto3 clients of one session (the standard credential chain), on the endpoint if one is given."""

    def __init__(
        self, *, region: str | None = None, profile: str | None = None, endpoint_url: str | None = None
    ) -> None:
        """A session of --region, --profile and --endpoint-url (each optional)."""
        try:
            self.session = boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound:
            raise CommandError(
                f"--profile {profile}: no such profile in your AWS configuration; check ~/.aws/config"
            ) from None
        self.endpoint_url = endpoint_url

    def client(self, service: str, region: str | None = None, presign: bool = False) -> Any:
        """A client for `service` (in `region`, default the session's); `presign`: S3 that signs URLs
        with SigV4, which every region accepts."""
        # S3-compatible endpoints (and addresses) rarely serve bucket subdomains: use path style.
        style = "path" if self.endpoint_url else "auto"
        config = Config(s3={"addressing_style": style}, signature_version="s3v4" if presign else None)
        try:
            return self.session.client(
                service,
                region_name=region or self.session.region_name,
                endpoint_url=self.endpoint_url,
                config=config,
            )
        except botocore.exceptions.NoRegionError:
            raise CommandError(
                "no AWS region: give --region, or set AWS_REGION (or a region in your AWS profile)"
            ) from None

    def s3_for_bucket(self, bucket: str, presign: bool = False) -> Any:
        """An S3 client in the bucket's own region (presigned URLs must be signed for it)."""
        region = self.session.region_name or "us-east-1"
        try:
            location = self.client("s3", region).get_bucket_location(Bucket=bucket)
            # us-east-1 answers with no constraint; the oldest Irish buckets answer "EU".
            found = location.get("LocationConstraint") or "us-east-1"
            region = "eu-west-1" if found == "EU" else found
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise CommandError(
                    f"--bucket: the bucket {bucket!r} does not exist; create it first"
                ) from None
            # No permission to ask where it is: stay with the given region.
        except botocore.exceptions.NoCredentialsError:
            raise CommandError(NO_CREDENTIALS) from None
        return self.client("s3", region, presign=presign)


NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE (or give --profile), or the AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) environment variables"
)


def _run(action: Callable[[], T]) -> T:
    """Run a library call, turning its errors into a clean exit with the library's message."""
    try:
        return action()
    except NoCredentials as err:  # found at the first request, before anything is done: a set-up error
        raise CommandError(f"error: {err}") from None
    except (BundleError, ImageError) as err:
        raise CommandError(f"error: {err}", FAILED) from None
    except botocore.exceptions.NoCredentialsError:
        raise CommandError(NO_CREDENTIALS) from None
    except UNREACHABLE:  # some are OSErrors too: the command says which endpoint
        raise
    except OSError as err:
        raise CommandError(f"error: {err.filename}: {err.strerror}", FAILED) from None


# What botocore raises when it cannot reach an endpoint (a connection not made or broken, as the EBS
# upload retries), or cannot work one out.
UNREACHABLE = (*CONNECTION_ERRORS, botocore.exceptions.EndpointResolutionError)


def reports_unreachable_endpoints(command: Callable[..., None]) -> Callable[..., None]:
    """The command, with a failure to reach AWS or --endpoint-url ending as one clear line (exit 1)."""

    @functools.wraps(command)
    def run(**options: Any) -> None:
        try:
            command(**options)
        except UNREACHABLE as err:
            raise CommandError(unreachable(err, options.get("endpoint_url")), FAILED) from None

    return run


def unreachable(err: Exception, endpoint_url: str | None) -> str:
    """What went wrong reaching AWS (or the --endpoint-url given), and the fix."""
    if endpoint_url:
        return (
            f"error: cannot connect to --endpoint-url {endpoint_url} ({err}); check that the "
            "S3/EC2-compatible service runs there and the URL is right, or leave out --endpoint-url "
            "for AWS's own endpoints"
        )
    return (
        f"error: cannot connect to AWS ({err}); check the network connection (and HTTPS_PROXY, if you "
        "use a proxy) and --region"
    )


def split_bucket(value: str) -> tuple[str, str]:
    """BUCKET[/PATH] as (bucket, path without slashes at its ends); a usage error for a bad bucket name."""
    bucket, _, path = value.strip("/").partition("/")
    if not bucket:
        raise CommandError("--bucket: give BUCKET or BUCKET/PATH, e.g. my-bundles/web/2026-11")
    problem = bucket_problem("--bucket", bucket)
    if problem is not None:
        raise CommandError(f"{problem.setting}: {problem.message}; {problem.fix}")
    return bucket, path.strip("/")


def check_count(flag: str, value: int, least: int, most: int | None = None) -> None:
    """Stop with a usage error unless `least` <= value (<= `most`, if given)."""
    if value < least or (most is not None and value > most):
        allowed = f"from {least} to {most}" if most is not None else f"{least} or more"
        raise CommandError(f"{flag} {value}: give a whole number {allowed}")


def bundle_key(
    bucket: str, manifest: str | None, prefix: str | None, partial: bool = False
) -> tuple[str, str]:
    """(bucket name, manifest key) of --bucket BUCKET[/PATH] and --manifest NAME or --prefix PREFIX,
    checked before any AWS call."""
    name, path = split_bucket(bucket)
    if manifest and prefix:
        raise CommandError(
            f"--manifest {manifest} and --prefix {prefix}: give one of --manifest or --prefix, not both"
        )
    if not manifest and not prefix:
        raise CommandError("say which bundle: --manifest NAME (e.g. image.manifest.xml) or --prefix PREFIX")
    file = manifest or f"{prefix}.manifest.xml"
    if "/" in file:
        raise CommandError(f"--manifest/--prefix {file}: give a file name; put its path in --bucket")
    if manifest and not manifest.endswith(".xml"):
        raise CommandError(
            f"--manifest {manifest}: not a manifest's file name (an XML file, PREFIX.manifest.xml); give "
            "the manifest's name under BUCKET/PATH, or --prefix PREFIX"
        )
    if partial and manifest and (not manifest.endswith(MANIFEST_SUFFIX) or manifest == MANIFEST_SUFFIX):
        raise CommandError(
            f"--manifest {manifest} is not PREFIX{MANIFEST_SUFFIX}: the parts of a partial bundle are "
            "found by its prefix; give --prefix PREFIX"
        )
    return name, f"{path}/{file}" if path else file


def readable_file(path: str, flag: str, what: str) -> None:
    """Stop with a usage error (exit 2) unless `path` is a file we can read: checked before any AWS call."""
    try:
        with open(path, "rb"):
            return
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except PermissionError:
        reason = "cannot be read (permission denied)"
    except OSError as err:
        reason = f"cannot be read ({err.strerror})"
    raise CommandError(f"{flag} {path}: {reason}; give {what}")


def progress_line(line: str) -> None:
    """A progress line on standard error (standard output carries the results)."""
    if line:
        print(line, file=sys.stderr, flush=True)


def confirm(question: str, yes: bool) -> None:
    """Go ahead with --yes, or after a 'y' on a terminal; otherwise stop with nothing done."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(
            f"{question} Standard input is not a terminal to ask on: give --yes to go ahead "
            "(or --dry-run to see what would go)"
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError("nothing was deleted", FAILED)


@reports_unreachable_endpoints
def upload_bundle(
    *,
    bucket: str,
    manifest: str,
    parts_dir: str | None,
    concurrency: int,
    retries: int,
    skip_manifest: bool,
    **aws: str | None,
) -> None:
    """Upload a bundle's parts in parallel (parts already in S3 are skipped), then its manifest."""
    name, path = split_bucket(bucket)
    readable_file(
        manifest, "--manifest", "the bundle's manifest file (PREFIX.manifest.xml, as bundle-image wrote it)"
    )
    try:
        read_manifest(manifest)
    except BundleError as err:
        raise CommandError(
            f"--manifest {manifest}: is not a bundle manifest ({err}); give the manifest file "
            "bundle-image wrote (PREFIX.manifest.xml)"
        ) from None
    if parts_dir is not None and not Path(parts_dir).is_dir():
        raise CommandError(
            f"--parts-dir {parts_dir}: no such directory; give the directory holding the parts"
        )
    # The node program holds each part it is sending in memory, as in a native build.
    check_count("--concurrency", concurrency, 1, MAX_UPLOAD_CONCURRENCY)
    check_count("--retries", retries, 0)
    clients = AwsClients(**aws)
    s3 = clients.s3_for_bucket(name)
    presigner = clients.s3_for_bucket(name, presign=True)
    report = _run(
        lambda: upload_bundle_files(
            s3,
            presigner,
            manifest,
            name,
            path,
            parts_dir=parts_dir,
            concurrency=concurrency,
            retries=retries,
            skip_manifest=skip_manifest,
            progress=progress_line,
        )
    )
    where = s3_url(name, path)
    print(f"uploaded {len(report.uploaded)} part(s) to {where}, {len(report.skipped)} already there")
    if report.manifest_key:
        print(f"manifest: {s3_url(name, report.manifest_key)} (register it as {name}/{report.manifest_key})")


@reports_unreachable_endpoints
def download_bundle(
    *,
    bucket: str,
    manifest: str | None,
    prefix: str | None,
    destination: str,
    concurrency: int,
    **aws: str | None,
) -> None:
    """Download a bundle's parts in parallel, checking each part's SHA-1 as it arrives, then its manifest."""
    name, key = bundle_key(bucket, manifest, prefix)
    check_count("--concurrency", concurrency, 1)
    s3 = AwsClients(**aws).s3_for_bucket(name)
    files = _run(
        lambda: download_bundle_files(s3, name, key, destination, concurrency, progress=progress_line)
    )
    print(f"downloaded {s3_url(name, key)} into {destination}: {len(files) - 1} part(s) and {files[-1]}")


def kept_lines(
    verb: str,
    bucket: str,
    kept: Mapping[str, tuple[str, ...]],
    images_of: Mapping[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """One line per part kept because other manifests name it: the part, those manifests and the images
    registered from them."""
    lines = []
    for part, holders in kept.items():
        named = []
        for holder in holders:
            images = (images_of or {}).get(holder, ())
            named.append(s3_url(bucket, holder) + (f" (image {', '.join(images)})" if images else ""))
        lines.append(f"{verb} keep {s3_url(bucket, part)}: also named by {', '.join(named)}")
    return lines


def _images_keeping_parts(
    clients: AwsClients, s3: Any, bucket: str, kept: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, tuple[str, ...]], str]:
    """The images registered from the manifests that keep parts (EC2 in the bucket's region, where
    images of its bundles are registered), and a note when EC2 would not say: the parts stay either way."""
    holders = sorted({holder for holders in kept.values() for holder in holders})
    if not holders:
        return {}, ""
    ec2 = clients.client("ec2", s3.meta.region_name)
    try:
        return images_registered_from(ec2, bucket, holders), ""
    except ImageError as err:
        return {}, f"could not name the images registered from those manifests ({err}); the parts stay"


@reports_unreachable_endpoints
def delete_bundle(
    *,
    bucket: str,
    manifest: str | None,
    prefix: str | None,
    dry_run: bool,
    yes: bool,
    partial: bool = False,
    **aws: str | None,
) -> None:
    """Delete exactly a bundle's parts and its manifest (nothing else under its path, and no part that
    another manifest beside it names); with --partial, the parts found by name (a failed upload's, whose
    manifest never went up)."""
    name, key = bundle_key(bucket, manifest, prefix, partial)
    clients = AwsClients(**aws)
    s3 = clients.s3_for_bucket(name)
    plan = _run(lambda: plan_bundle_deletion(s3, name, key, partial=partial))
    for found in plan.keys:
        print(f"{'would delete' if dry_run else 'delete'} {s3_url(name, found)}")
    images_of, unknown = _images_keeping_parts(clients, s3, name, plan.kept)
    for line in kept_lines("would" if dry_run else "will", name, plan.kept, images_of):
        print(line)
    if unknown:
        print(unknown)
    if not plan.keys:
        where = s3_url(name, key.removesuffix(".manifest.xml"))
        if plan.kept:
            print(f"nothing to delete: every part of {where} there is named by another manifest")
        else:
            print(f"nothing to delete: no part of {where} is there")
        return
    if dry_run:
        return
    confirm(f"Delete these {len(plan.keys)} object(s)?", yes)
    deleted = _run(lambda: delete_planned_bundle(s3, plan))
    parts = len([found for found in deleted if found != key])
    what = "and its manifest" if key in deleted else "(its manifest was not there)"
    kept = len(plan.keys) - len(deleted) + len(plan.kept)
    also = f"; kept {kept} part(s) other manifests name" if kept else ""
    print(f"deleted the bundle {s3_url(name, key)}: {parts} part(s) {what}{also}")


def image_source(image: ImageSummary) -> str:
    """Where an image comes from: the bundle's location, or the root snapshot (and how many more)."""
    if image.snapshot_ids:
        more = len(image.snapshot_ids) - 1
        return image.root_snapshot + (f" (+{more} more)" if more else "")
    return image.location


def image_table(found: list[ImageSummary]) -> list[str]:
    """The images as a table under a header line: id, state, creation time, backing (ebs or
    instance-store), name, and the bundle location or root snapshot."""
    width = max(len("IMAGE"), *(len(image.image_id) for image in found))
    named = max(len("NAME"), *(len(image.name) for image in found))
    return [
        f"{'IMAGE':<{width}}  {'STATE':<9}  {'CREATED':<24}  {'BACKING':<14}  {'NAME':<{named}}  "
        "BUNDLE/SNAPSHOT",
        *(
            f"{i.image_id:<{width}}  {i.state:<9}  {i.created or '-':<24}  {i.backing:<14}  "
            f"{i.name:<{named}}  {image_source(i)}"
            for i in found
        ),
    ]


@reports_unreachable_endpoints
def images(*, json: bool, **aws: str | None) -> None:
    """List the images amidsl built (tag amidsl:built-by = amidsl) with their bundles or snapshots."""
    clients = AwsClients(**aws)
    ec2 = clients.client("ec2")
    found = _run(lambda: amidsl_images(ec2))
    if json:
        document = {
            "schema": "amidsl.images/1",
            "region": clients.session.region_name,
            "images": [
                {
                    "image_id": i.image_id,
                    "name": i.name,
                    "state": i.state,
                    "created": i.created,
                    "image_location": i.location,
                    "backing": i.backing,
                    "root_snapshot_id": i.root_snapshot,
                    "snapshot_ids": list(i.snapshot_ids),
                }
                for i in found
            ],
        }
        print(dumps(document, indent=2))
        return
    if not found:
        print(f"no images built by amidsl in {clients.session.region_name} (none is tagged amidsl:built-by)")
        return
    for line in image_table(found):
        print(line)


@reports_unreachable_endpoints
def delete(
    *,
    image: str,
    dry_run: bool,
    yes: bool,
    **aws: str | None,
) -> None:
    """Deregister an image and delete its bundle (S3-backed) or its snapshots (EBS-backed), after a
    confirmation (or --yes)."""
    clients = AwsClients(**aws)
    ec2 = clients.client("ec2")
    summary = _run(lambda: find_image(ec2, image))
    if summary.backing == "ebs":
        delete_ebs_image(ec2, summary, dry_run=dry_run, yes=yes)
        return
    bucket, _ = _run(lambda: bundle_location(summary))
    s3 = clients.s3_for_bucket(bucket)
    deletion = _run(lambda: plan_deletion(ec2, s3, summary))
    verb = "would" if dry_run else "will"
    built = "" if deletion.image.built_by_amidsl else " (not tagged as built by amidsl)"
    print(f"{verb} deregister {deletion.image.image_id} ({deletion.image.name}){built}")
    for key in deletion.bundle_keys:
        print(f"{verb} delete {s3_url(deletion.bucket, key)}")
    for line in kept_lines(verb, deletion.bucket, deletion.kept, deletion.images_of):
        print(line)
    if deletion.note:
        print(deletion.note)
    if dry_run:
        return
    confirm(f"Deregister {deletion.image.image_id} and delete {len(deletion.bundle_keys)} object(s)?", yes)
    deleted = _run(lambda: delete_image(ec2, s3, deletion))
    kept = len(deletion.bundle_keys) - len(deleted) + len(deletion.kept) if deletion.bundle_keys else 0
    also = f"; kept {kept} part(s) other manifests name" if kept else ""
    print(f"deregistered {deletion.image.image_id}; deleted {len(deleted)} object(s) of its bundle{also}")


def delete_ebs_image(ec2: Any, summary: ImageSummary, *, dry_run: bool, yes: bool) -> None:
    """Deregister an EBS-backed image and delete its snapshots, keeping one another image uses."""
    deletion = _run(lambda: plan_deletion(ec2, None, summary))
    verb = "would" if dry_run else "will"
    built = "" if summary.built_by_amidsl else " (not tagged as built by amidsl)"
    print(f"{verb} deregister {summary.image_id} ({summary.name}){built}")
    for snapshot_id in deletion.snapshot_ids:
        print(f"{verb} delete snapshot {snapshot_id}")
    for snapshot_id, users in deletion.snapshots_kept.items():
        print(f"{verb} keep snapshot {snapshot_id}: image {', '.join(users)} also use(s) it")
    if deletion.note:
        print(deletion.note)
    if dry_run:
        return
    confirm(f"Deregister {summary.image_id} and delete {len(deletion.snapshot_ids)} snapshot(s)?", yes)
    deleted = _run(lambda: delete_image(ec2, None, deletion))
    kept = len(deletion.snapshots_kept)
    also = f"; kept {kept} snapshot(s) other images use" if kept else ""
    print(f"deregistered {summary.image_id}; deleted {len(deleted)} snapshot(s){also}")
