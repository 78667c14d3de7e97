"""After RegisterImage: the controller steps that take more than one API call, shared by every executing
back-end (simulator, live).

Waiting until an image is available (with progress, EC2's state reason when it fails, a timeout that
says what to do), tagging the bundle's S3 objects, and force_deregister's removal of an older image of
the same name. API calls go through the back-end's `call_aws`, so the simulator's fake region and boto3
answer the same requests; reading and deleting bundles, and deregistering an image with its bundle, are
the library's own (amidsl.bundle.s3, amidsl.run.images), over the back-end's boto3 clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from amidsl.bundle.s3 import bundle_keys, read_s3_manifest, s3_url, split_image_location
from amidsl.model.actions import AwsCall, DeregisterByName, TagBundle, WaitForImage
from amidsl.run.images import EBS, ImageDeletion, ImageSummary, delete_image, plan_deletion

POLL_SECONDS = 10
PROGRESS_EVERY = 60  # seconds between progress lines while the state stays the same


class PublishBackend(Protocol):
    """What these steps need from an executing back-end."""

    def call_aws(self, action: AwsCall, params: dict[str, Any]) -> dict[str, Any]:
        """Make one AWS API call from the controller and return its result."""
        ...

    def pause(self, seconds: float) -> None:
        """Wait between two polls (the simulator's clock does not really wait)."""
        ...

    def client(self, service: str, region: str) -> Any:
        """A boto3 client of the build's account in `region` (for amidsl's bundle and image library)."""
        ...


class PublishFailed(Exception):
    """A step after registration failed; the message says what and what to do."""


def run_publish_step(
    action: WaitForImage | TagBundle | DeregisterByName,
    image_id: str | None,
    backend: PublishBackend,
    progress: Callable[[str], None],
) -> str:
    """Carry out one step; `image_id` is the value of a WaitForImage's image. Returns what was done."""
    if isinstance(action, WaitForImage):
        assert image_id is not None
        return wait_for_image(backend, image_id, action.region, action.timeout_seconds, progress)
    if isinstance(action, TagBundle):
        return tag_bundle(backend, action)
    if isinstance(action, DeregisterByName):
        return deregister_by_name(backend, action, progress)
    raise TypeError(f"amidsl.run.publish does not know the action {type(action).__name__}")


def call(backend: PublishBackend, service: str, operation: str, region: str, **params: Any) -> dict[str, Any]:
    """One API call in `region` through the back-end."""
    action = AwsCall(service, operation, tuple(params.items()), region=region, result_name="publish")
    return backend.call_aws(action, params)


def wait_for_image(
    backend: PublishBackend, image_id: str, region: str, timeout: int, progress: Callable[[str], None]
) -> str:
    """Poll the image's state until it is available; raise PublishFailed if it fails or time runs out."""
    waited, shown = 0, ""
    while True:
        images = call(backend, "ec2", "DescribeImages", region, ImageIds=[image_id]).get("Images", [])
        state = images[0].get("State", "unknown") if images else "deregistered"
        if state == "available":
            said = f"{image_id} is available in {region} (after about {waited} s)"
            progress(f"    image {said}")
            return said
        if state != "pending":
            reason = images[0].get("StateReason", {}) if images else {}
            said = reason.get("Message") or "EC2 gave no reason"
            code = f" ({reason['Code']})" if reason.get("Code") else ""
            raise PublishFailed(
                f"image {image_id} in {region} is {state}: {said}{code}. Fix the cause, deregister it "
                f"(aws ec2 deregister-image --region {region} --image-id {image_id}) and register again"
            )
        if waited >= timeout:
            raise PublishFailed(
                f"image {image_id} in {region} is still {state} after {timeout} s. It stays registered: "
                "look at it in the EC2 console, or raise image_wait_seconds; to start over, deregister it "
                f"(aws ec2 deregister-image --region {region} --image-id {image_id})"
            )
        if state != shown or waited % PROGRESS_EVERY == 0:
            progress(f"    image {image_id} in {region}: {state} ({waited} s of at most {timeout} s)")
            shown = state
        step = min(POLL_SECONDS, timeout - waited)
        backend.pause(step)
        waited += step


def tag_bundle(backend: PublishBackend, action: TagBundle) -> str:
    """Put the tags on the manifest and exactly the parts it lists (S3 replaces an object's tag set)."""
    s3 = backend.client("s3", action.region)
    manifest = read_s3_manifest(s3, action.bucket, action.manifest_key)
    keys = bundle_keys(manifest, action.bucket, action.manifest_key)
    tag_set = [{"Key": key, "Value": value} for key, value in action.tags]
    for key in keys:
        call(
            backend,
            "s3",
            "PutObjectTagging",
            action.region,
            Bucket=action.bucket,
            Key=key,
            Tagging={"TagSet": tag_set},
        )
    names = ", ".join(f"{key}={value}" for key, value in action.tags)
    return f"tagged {len(keys)} object(s) under s3://{action.bucket}/ with {names}"


def deregister_by_name(
    backend: PublishBackend, action: DeregisterByName, progress: Callable[[str], None]
) -> str:
    """force_deregister: for each same-named image, say what goes, then deregister it (and delete its
    bundle in the bundle's region, unless other images use it or it is this build's own location, or
    its snapshots, unless other images use them)."""
    done: list[str] = []
    s3 = backend.client("s3", action.bundle_region)
    for region in action.regions:
        ec2 = backend.client("ec2", region)
        found = call(
            backend,
            "ec2",
            "DescribeImages",
            region,
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [action.image_name]}],
        ).get("Images", [])
        for image in found:
            deletion = _deletion(ec2, s3, ImageSummary.of(image), region, action)
            goes = f"image {deletion.image.image_id} ({action.image_name!r}) in {region}"
            if deletion.snapshot_ids:
                goes += f", and its snapshot(s) {', '.join(deletion.snapshot_ids)}"
            for snapshot_id, users in deletion.snapshots_kept.items():
                goes += f"; the snapshot {snapshot_id} stays: {', '.join(users)} use(s) it too"
            if deletion.bundle_keys:
                manifest = s3_url(deletion.bucket, deletion.manifest_key)
                goes += f", and its bundle {manifest} with its {len(deletion.bundle_keys) - 1} part(s)"
                if deletion.kept:
                    holders = sorted(
                        {s3_url(deletion.bucket, h) for hs in deletion.kept.values() for h in hs}
                    )
                    goes += (
                        f"; {len(deletion.kept)} other part(s) stay: {', '.join(holders)} name(s) them too"
                    )
            progress(f"    force_deregister: removing {goes}")
            delete_image(ec2, s3, deletion)
            done.append(f"deregistered {goes}" + (f" ({deletion.note})" if deletion.note else ""))
    return "\n".join(done) or f"no image named {action.image_name!r} in {', '.join(action.regions)}"


def _deletion(ec2: Any, s3: Any, image: ImageSummary, region: str, action: DeregisterByName) -> ImageDeletion:
    """What removing one old image takes: its bundle only where it is the old image's alone."""
    if image.backing == EBS:  # its snapshots go, except one another image uses or this build registers
        deletion = plan_deletion(ec2, None, image)
        ours = [s for s in deletion.snapshot_ids if s in action.keep_snapshots]
        notes = [deletion.note] if deletion.note else []
        notes += [f"the snapshot {s} stays: this build registers it" for s in ours]
        return replace(
            deletion,
            snapshot_ids=tuple(s for s in deletion.snapshot_ids if s not in ours),
            note="; ".join(notes),
        )
    if not image.location:
        return ImageDeletion(image, "", "", (), "neither S3- nor EBS-backed: nothing else goes")
    bucket, key = split_image_location(image.location)
    if region != action.bundle_region:
        return ImageDeletion(
            image, bucket, key, (), f"{image.location} is not in {action.bundle_region}: kept"
        )
    if image.location == action.keep_manifest:
        return ImageDeletion(
            image, bucket, key, (), f"its bundle s3://{image.location} is this build's upload: kept"
        )
    return plan_deletion(ec2, s3, image)
