"""After RegisterImage: the controller steps that take more than one API call, shared by every executing
back-end (simulator, live).

Waiting until an image is available (with progress, EC2's state reason when it fails, a timeout that
says what to do), tagging the bundle's S3 objects, and force_deregister's removal of an older image of
the same name. Every API call goes through the back-end's `call_aws`, so the simulator's fake region and
boto3 answer the same requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from amidsl.actions import AwsCall, DeregisterByName, TagBundle, WaitForImage
from amidsl.bundle import parse_manifest

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
    raise TypeError(f"amidsl.publish does not know the action {type(action).__name__}")


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


def bundle_keys(backend: PublishBackend, bucket: str, manifest_key: str, region: str) -> list[str]:
    """The S3 keys of a bundle: exactly the parts its manifest lists, then the manifest."""
    body = call(backend, "s3", "GetObject", region, Bucket=bucket, Key=manifest_key)["Body"].read()
    manifest = parse_manifest(body.decode("utf-8"), source=f"s3://{bucket}/{manifest_key}")
    folder = manifest_key.rsplit("/", 1)[0] + "/" if "/" in manifest_key else ""
    return [f"{folder}{part.filename}" for part in manifest.parts] + [manifest_key]


def tag_bundle(backend: PublishBackend, action: TagBundle) -> str:
    """Put the tags on every object of the bundle (S3 replaces an object's whole tag set)."""
    tag_set = [{"Key": key, "Value": value} for key, value in action.tags]
    keys = bundle_keys(backend, action.bucket, action.manifest_key, action.region)
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
    """force_deregister: say what goes, then deregister each same-named image (and its bundle)."""
    done: list[str] = []
    for region in action.regions:
        found = call(
            backend,
            "ec2",
            "DescribeImages",
            region,
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [action.image_name]}],
        ).get("Images", [])
        for image in found:
            image_id, location = image["ImageId"], image.get("ImageLocation", "")
            bundle = region == action.bundle_region and "/" in location and location != action.keep_manifest
            goes = f"image {image_id} ({action.image_name!r}) in {region}"
            if bundle:
                bucket, _, key = location.partition("/")
                keys = bundle_keys(backend, bucket, key, region)
                goes += f", and its bundle: {', '.join(f's3://{bucket}/{k}' for k in keys)}"
            progress(f"    force_deregister: removing {goes}")
            call(backend, "ec2", "DeregisterImage", region, ImageId=image_id)
            done.append(f"deregistered {goes}")
            if bundle:
                delete_objects(backend, bucket, keys, region)
            elif location == action.keep_manifest:
                done.append(f"  (its bundle was at s3://{location}, which this build's upload replaced)")
            elif location:
                done.append(f"  (its bundle at {location} is left: it is not in {action.bundle_region})")
    return "\n".join(done) or f"no image named {action.image_name!r} in {', '.join(action.regions)}"


def delete_objects(backend: PublishBackend, bucket: str, keys: list[str], region: str) -> None:
    """Delete the keys; raise PublishFailed naming the first one S3 refused."""
    answer = call(
        backend,
        "s3",
        "DeleteObjects",
        region,
        Bucket=bucket,
        Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
    )
    if answer.get("Errors"):
        error = answer["Errors"][0]
        raise PublishFailed(f"deleting s3://{bucket}/{error.get('Key')} failed: {error.get('Code')}")
