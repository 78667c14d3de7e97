"""amidsl's images in EC2: find the ones it built (by tag), and deregister one together with its bundle
or its snapshots.

An S3-backed image lives in two places: EC2's registration (ImageLocation names the manifest) and the
bundle in S3. Deleting it means both, and in an order that never strands anything: first everything is
looked at (the image, the manifest, other images registered from the same bundle), then the image is
deregistered, then the bundle deleted (parts first, manifest last). A part that another manifest beside
the image's names (a migrated copy registered as another image) is kept, and the plan says which
manifest and which image hold it.

An EBS-backed image lives in its registration and the snapshots its block device mappings name.
Deleting it deregisters it, then deletes those snapshots, except one that another registered image's
mappings also use (kept, naming that image) or that another account owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from amidsl.bundle.errors import BundleError
from amidsl.bundle.s3 import (
    BundleDeletion,
    BundleStorageError,
    delete_bundle_command,
    delete_planned_bundle,
    plan_bundle_deletion,
    s3_url,
    split_image_location,
    storage_error,
)
from amidsl.snapshots import delete_snapshots_command
from amidsl.tags import BUILT_BY_TAG, BUILT_BY_VALUE


class ImageError(Exception):
    """An image cannot be found, listed or deleted; the message says why and the fix."""


class NoCredentials(ImageError):
    """EC2 could not be asked at all: no AWS credentials were found (a set-up error, before any change)."""


EBS = "ebs"
INSTANCE_STORE = "instance-store"


@dataclass(frozen=True)
class ImageSummary:
    """One image: id, name, state, creation date, where its manifest is, and whether amidsl built it;
    its root device type, and for an EBS-backed image the snapshots its mappings name (root first)."""

    image_id: str
    name: str
    state: str
    created: str
    location: str
    built_by_amidsl: bool
    root_device_type: str = ""
    snapshot_ids: tuple[str, ...] = ()
    owner_id: str = ""

    @classmethod
    def of(cls, image: dict[str, Any]) -> ImageSummary:
        """From a DescribeImages entry."""
        tags = {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])}
        root_type = image.get("RootDeviceType", "")
        snapshots: list[str] = []
        if root_type == EBS:
            root = image.get("RootDeviceName", "")
            mappings = sorted(image.get("BlockDeviceMappings", []), key=lambda m: m.get("DeviceName") != root)
            for mapping in mappings:
                snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
                if snapshot_id and snapshot_id not in snapshots:
                    snapshots.append(snapshot_id)
        return cls(
            image["ImageId"],
            image.get("Name", ""),
            image.get("State", ""),
            image.get("CreationDate", ""),
            image.get("ImageLocation", ""),
            tags.get(BUILT_BY_TAG) == BUILT_BY_VALUE,
            root_type,
            tuple(snapshots),
            image.get("OwnerId", ""),
        )

    @property
    def backing(self) -> str:
        """ "ebs", "instance-store", or EC2's root device type of any other image."""
        if self.root_device_type == EBS:
            return EBS
        return INSTANCE_STORE if self.location else self.root_device_type or "-"

    @property
    def root_snapshot(self) -> str:
        """The snapshot of an EBS-backed image's root device ("" for any other image)."""
        return self.snapshot_ids[0] if self.snapshot_ids else ""


@dataclass(frozen=True)
class ImageDeletion:
    """What deleting an image removes: the registration, and the bundle's S3 keys (none when the bundle
    is gone or other images still use it, as `note` says). `kept`: the bundle's parts other manifests
    name, with those manifests' keys; `images_of`: the images registered from each of those manifests."""

    image: ImageSummary
    bucket: str
    manifest_key: str
    bundle_keys: tuple[str, ...]
    note: str = ""
    kept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    images_of: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    bundle: BundleDeletion | None = None
    # EBS-backed: the snapshots to delete, and those kept with the other images that use them.
    snapshot_ids: tuple[str, ...] = ()
    snapshots_kept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _ec2_error(err: Exception, what: str) -> ImageError:
    if isinstance(err, botocore.exceptions.ClientError):
        code = err.response.get("Error", {}).get("Code", "Unknown")
        detail = err.response.get("Error", {}).get("Message", "")
        return ImageError(f"{what}: EC2 answered {code}{': ' + detail if detail else ''}")
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return NoCredentials(f"{what}: {storage_error(err, 'EC2')}")
    return ImageError(f"{what}: {storage_error(err, 'EC2')}")


def _describe(ec2: Any, what: str, **params: Any) -> list[dict[str, Any]]:
    try:
        return ec2.describe_images(Owners=["self"], **params).get("Images", [])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise _ec2_error(err, what) from None


def amidsl_images(ec2: Any) -> list[ImageSummary]:
    """The account's images in the client's region that amidsl built, oldest first."""
    found = _describe(
        ec2,
        "listing amidsl's images",
        Filters=[{"Name": f"tag:{BUILT_BY_TAG}", "Values": [BUILT_BY_VALUE]}],
    )
    return sorted((ImageSummary.of(image) for image in found), key=lambda i: (i.created, i.image_id))


def find_image(ec2: Any, image: str) -> ImageSummary:
    """One of the account's images, by id (ami-...) or by name."""
    if image.startswith("ami-"):
        try:
            found = ec2.describe_images(Owners=["self"], ImageIds=[image]).get("Images", [])
        except botocore.exceptions.ClientError as err:
            if "InvalidAMIID" not in err.response.get("Error", {}).get("Code", ""):
                raise _ec2_error(err, f"looking up {image}") from None
            found = []
        except botocore.exceptions.BotoCoreError as err:
            raise _ec2_error(err, f"looking up {image}") from None
    else:
        found = _describe(ec2, f"looking up {image!r}", Filters=[{"Name": "name", "Values": [image]}])
    if not found:
        raise ImageError(
            f"this account owns no image {image!r} in {ec2.meta.region_name}; check the id or name and "
            "the region (amidsl images lists the ones amidsl built)"
        )
    return ImageSummary.of(found[0])


def bundle_location(image: ImageSummary) -> tuple[str, str]:
    """(bucket, manifest key) of an S3-backed image; an error for any other image."""
    if not image.location:
        raise ImageError(
            f"{image.image_id} ({image.name}) has no ImageLocation: it is not an S3-backed image, "
            "so it has no bundle; deregister it with `aws ec2 deregister-image`"
        )
    return split_image_location(image.location)


def plan_deletion(ec2: Any, s3: Any, summary: ImageSummary) -> ImageDeletion:
    """Look at everything deleting the image touches (s3: a client for its bucket, None for an EBS-backed
    image); change nothing."""
    if summary.backing == EBS:
        return plan_snapshot_deletion(ec2, summary)
    bucket, key = bundle_location(summary)
    registered = _images_by_location(ec2, "looking for other images of the same bundle", summary.image_id)
    if summary.location in registered:
        note = f"the bundle is kept: {', '.join(registered[summary.location])} still use(s) it"
        return ImageDeletion(summary, bucket, key, (), note)
    # Other images' manifests in this bucket, whatever their file names: they may name its parts too.
    consulted = sorted(
        location.partition("/")[2] for location in registered if location.partition("/")[0] == bucket
    )
    try:
        plan = plan_bundle_deletion(s3, bucket, key, consulted=consulted)
    except BundleStorageError as err:
        if err.code not in ("NoSuchKey", "404"):
            raise
        return ImageDeletion(summary, bucket, key, (), f"the manifest {s3_url(bucket, key)} is gone already")
    holders = {holder for holders in plan.kept.values() for holder in holders}
    images_of = {holder: tuple(registered.get(f"{bucket}/{holder}", ())) for holder in sorted(holders)}
    return ImageDeletion(summary, bucket, key, plan.keys, "", plan.kept, images_of, plan)


def plan_snapshot_deletion(ec2: Any, summary: ImageSummary) -> ImageDeletion:
    """What deleting an EBS-backed image removes: its snapshots, but not one another registered image's
    mappings use (kept, with those images), one that is gone or one another account owns (noted)."""
    users: dict[str, list[str]] = {}
    for other in _describe(ec2, "looking for other images that use the same snapshots"):
        if other["ImageId"] == summary.image_id:
            continue
        for mapping in other.get("BlockDeviceMappings", []):
            snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
            if snapshot_id in summary.snapshot_ids:
                users.setdefault(snapshot_id, []).append(other["ImageId"])
    deleted: list[str] = []
    kept: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []
    for snapshot_id in summary.snapshot_ids:
        if snapshot_id in users:
            kept[snapshot_id] = tuple(users[snapshot_id])
            continue
        owner = _snapshot_owner(ec2, snapshot_id)
        if owner is None:
            notes.append(f"the snapshot {snapshot_id} is gone already")
        elif summary.owner_id and owner != summary.owner_id:
            notes.append(f"the snapshot {snapshot_id} is kept: account {owner} owns it")
        else:
            deleted.append(snapshot_id)
    return ImageDeletion(
        summary, "", "", (), "; ".join(notes), snapshot_ids=tuple(deleted), snapshots_kept=kept
    )


def _snapshot_owner(ec2: Any, snapshot_id: str) -> str | None:
    """The account that owns a snapshot; None if there is no such snapshot."""
    try:
        found = ec2.describe_snapshots(SnapshotIds=[snapshot_id]).get("Snapshots", [])
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") == "InvalidSnapshot.NotFound":
            return None
        raise _ec2_error(err, f"looking up the snapshot {snapshot_id}") from None
    except botocore.exceptions.BotoCoreError as err:
        raise _ec2_error(err, f"looking up the snapshot {snapshot_id}") from None
    return found[0].get("OwnerId", "") if found else None


def delete_image(ec2: Any, s3: Any, deletion: ImageDeletion) -> list[str]:
    """Deregister the image, then delete its bundle or its snapshots as planned; return the S3 keys or
    snapshot ids deleted."""
    try:
        ec2.deregister_image(ImageId=deletion.image.image_id)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise _ec2_error(err, f"deregistering {deletion.image.image_id} (nothing was deleted)") from None
    if deletion.snapshot_ids:
        return _delete_snapshots(ec2, deletion)
    if not deletion.bundle_keys or deletion.bundle is None:
        return []
    try:
        return delete_planned_bundle(s3, deletion.bundle)
    except BundleError as err:
        raise ImageError(
            f"{deletion.image.image_id} is deregistered, but deleting its bundle failed: {err}. "
            f"Run `{delete_bundle_command(deletion.bucket, deletion.manifest_key)}` to finish"
        ) from None


def images_registered_from(ec2: Any, bucket: str, manifest_keys: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The account's images (ids) registered from each of these manifests in the bucket, by manifest key."""
    registered = _images_by_location(ec2, "looking up the account's images")
    return {key: tuple(sorted(registered.get(f"{bucket}/{key}", ()))) for key in sorted(set(manifest_keys))}


def _images_by_location(ec2: Any, what: str, leaving_out: str = "") -> dict[str, list[str]]:
    """The ids of the account's S3-backed images (all but `leaving_out`) by their ImageLocation."""
    registered: dict[str, list[str]] = {}
    for image in _describe(ec2, what):
        if image["ImageId"] != leaving_out and image.get("ImageLocation"):
            registered.setdefault(image["ImageLocation"], []).append(image["ImageId"])
    return registered


def _delete_snapshots(ec2: Any, deletion: ImageDeletion) -> list[str]:
    deleted: list[str] = []
    for snapshot_id in deletion.snapshot_ids:
        try:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            left = [s for s in deletion.snapshot_ids if s not in deleted]
            region = getattr(getattr(ec2, "meta", None), "region_name", "") or ""
            cause = _ec2_error(err, f"deleting the snapshot {snapshot_id}")
            raise ImageError(
                f"{deletion.image.image_id} is deregistered, but {cause}. Run "
                f"`{delete_snapshots_command(left, region)}` to finish"
            ) from None
        deleted.append(snapshot_id)
    return deleted
