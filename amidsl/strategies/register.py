"""The ami-register phase, the same for both build strategies: register the bundle, then finish the image.

In order: force_deregister's removal of an older image of the same name (said first, in the preview and
at run time), bundle_tags on the S3 objects, RegisterImage (with the optional attributes EC2 takes for an
instance-store image), the tags (amidsl's own `amidsl:built-by = amidsl` and the user's `tags`), waiting
until the image is available, launch permissions, then a copy in each of copy_to_regions, each tagged the
same, waited for and shared the same way. Tags go on with CreateTags right after each image exists, so
an image that later fails is still found by its tag.
"""

from __future__ import annotations

from collections.abc import Callable

from amidsl.model.actions import (
    Action,
    AwsCall,
    DeregisterByName,
    PlanWarning,
    RuntimeValue,
    TagBundle,
    UpdateSettings,
    WaitForImage,
)
from amidsl.settings import AmiSettings
from amidsl.strategies.hygiene import sharing_warning
from amidsl.tags import BUILT_BY_TAG, BUILT_BY_VALUE

IMAGE_ID = RuntimeValue("image_id", "ami-register")


def copy_image_id(region: str) -> RuntimeValue:
    """The run-time value holding the id of the image's copy in `region`."""
    return RuntimeValue(f"image_id_{region.replace('-', '_')}", "ami-register")


def instance_types_note(s: AmiSettings) -> str:
    """Which instance types launch the registered image (instance-store roots run only on old Xen types)."""
    note = "only Xen instance types (C1, C3, D2, I2, M1, M2, M3, R3, X1) launch instance-store AMIs"
    # arm64 never gets here: settings refuse it for both strategies, as no instance type launches it.
    if s.arch == "i386":
        return f"{note}; an i386 image runs only on the oldest paravirtual types"
    return note


def image_tags(s: AmiSettings) -> tuple[dict[str, str], ...]:
    """The tags of every image amidsl registers or copies: amidsl's own, then the user's."""
    return tuple({"Key": key, "Value": value} for key, value in ((BUILT_BY_TAG, BUILT_BY_VALUE), *s.tags))


def launch_permission(s: AmiSettings) -> dict[str, list[dict[str, str]]] | None:
    """ModifyImageAttribute's LaunchPermission for the settings, or None when the image stays private."""
    added = []
    for entry in s.launch_permissions:
        if entry.startswith("arn:") and ":ou/" in entry:
            added.append({"OrganizationalUnitArn": entry})
        elif entry.startswith("arn:"):
            added.append({"OrganizationArn": entry})
        else:
            added.append({"UserId": entry})
    if s.public_image:
        added.append({"Group": "all"})
    return {"Add": added} if added else None


def register_image_params(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """The RegisterImage parameters for an S3-backed image."""
    params: list[tuple[str, object]] = [
        ("Name", s.image_name),
        ("ImageLocation", s.s3_manifest_path),
    ]
    if s.image_description:
        params.append(("Description", s.image_description))
    params.append(("Architecture", s.arch))
    optional = (
        ("VirtualizationType", s.virtualization_type),
        ("KernelId", s.kernel_id),
        ("RamdiskId", s.ramdisk_id),
        ("BootMode", s.boot_mode),
        ("ImdsSupport", s.imds_support),
        ("EnaSupport", s.ena_support),
        ("SriovNetSupport", s.sriov_net_support),
    )
    params += [(key, value) for key, value in optional if value is not None]
    if s.block_device_mappings:
        params.append(
            (
                "BlockDeviceMappings",
                tuple(
                    {"DeviceName": device, "VirtualName": virtual}
                    for device, virtual in s.block_device_mappings
                ),
            )
        )
    return tuple(params)


def _finish(s: AmiSettings, image: RuntimeValue, region: str, what: str) -> list[Action]:
    """Wait for one image (the original or a copy) and share it as the settings say."""
    actions: list[Action] = [
        WaitForImage(image, region, s.image_wait_seconds, description=f"wait until {what} is available")
    ]
    if s.deprecate_at is not None:
        actions.append(
            AwsCall(
                "ec2",
                "EnableImageDeprecation",
                (("ImageId", image), ("DeprecateAt", s.deprecate_at)),
                region=region,
                result_name="",
                description=f"deprecate {what} at {s.deprecate_at} (deprecate_at)",
            )
        )
    permission = launch_permission(s)
    if permission is not None:
        actions.append(
            AwsCall(
                "ec2",
                "ModifyImageAttribute",
                (("ImageId", image), ("LaunchPermission", permission)),
                region=region,
                result_name="",
                description=f"share {what} (launch_permissions, public_image)",
            )
        )
    return actions


def _tag(s: AmiSettings, image: RuntimeValue, region: str, what: str) -> AwsCall:
    return AwsCall(
        "ec2",
        "CreateTags",
        (("Resources", (image,)), ("Tags", image_tags(s))),
        region=region,
        result_name="",
        description=f"tag {what} (amidsl:built-by and tags)",
    )


def _force_deregister(s: AmiSettings, uses_bucket: bool) -> list[Action | PlanWarning]:
    """force_deregister's warning and action; what they say goes follows where the build puts the image
    (`uses_bucket`: an S3 bundle, else an EBS snapshot), though either kind of older image is removed."""
    regions = (s.region, *s.copy_to_regions)
    named = f"any image of this account named {s.image_name!r} in {', '.join(regions)}"
    if uses_bucket:
        goes = (
            f"in {s.region} the S3 bundle it was registered from is deleted, and an EBS-backed one's "
            "snapshots (unless another image uses them)"
        )
        removal = DeregisterByName.description
    else:
        goes = (
            "in each of those regions its EBS snapshots are deleted (unless another image uses them); an "
            f"S3-backed one's bundle in {s.region} too"
        )
        removal = "deregister an existing image of the same name and delete its snapshots"
    return [
        PlanWarning(
            f"force_deregister: {named} is deregistered before registering"
            + ("; " if uses_bucket else ", and ")
            + f"{goes}; each is named in the build's output before it goes"
        ),
        DeregisterByName(
            s.image_name,
            regions,
            s.region,
            s.s3_manifest_path,
            # A resumed EBS-backed build registers the snapshot an older image of the name may use.
            keep_snapshots=(s.snapshot_id,) if s.snapshot_id else (),
            description=removal,
        ),
    ]


def ami_register(
    s: AmiSettings,
    params: tuple[tuple[str, object], ...] | None = None,
    copy_params: Callable[[str], tuple[tuple[str, object], ...]] = lambda region: (),
    uses_bucket: bool = True,
) -> list[Action | PlanWarning]:
    """Register the uploaded image as an AMI (by default the S3 bundle: register_image_params), keep its
    id, and finish it as the settings say; the CopyImage to each region also gets `copy_params(region)`.
    `uses_bucket` is the strategy's: whether the image is an S3 bundle (else an EBS snapshot)."""
    actions: list[Action | PlanWarning] = []
    if s.force_deregister:
        actions += _force_deregister(s, uses_bucket)
    if s.public_image:
        actions.append(
            PlanWarning(
                f"public_image = true: every AWS account can launch {s.image_name!r}"
                + (f" and its copies in {', '.join(s.copy_to_regions)}" if s.copy_to_regions else "")
                + ", and see everything in it. Where the account blocks public sharing of AMIs (EC2's block "
                "public access for AMIs), that step fails: `amidsl validate --live` checks it"
            )
        )
    actions += sharing_warning(s)
    if s.bundle_tags:
        manifest_key = s.s3_manifest_path.split("/", 1)[1]
        actions.append(TagBundle(s.s3_bucket, manifest_key, s.region, s.bundle_tags))
    actions += [
        AwsCall(
            "ec2",
            "RegisterImage",
            register_image_params(s) if params is None else params,
            region=s.region,
            result_name="register_image",
            description="register the image with EC2",
        ),
        UpdateSettings(
            "register_image", (("image_id", "ImageId"),), description="keep the new image id in the settings"
        ),
        _tag(s, IMAGE_ID, s.region, "the image"),
        *_finish(s, IMAGE_ID, s.region, "the image"),
    ]
    for region in s.copy_to_regions:
        copy = copy_image_id(region)
        params: list[tuple[str, object]] = [
            ("SourceImageId", IMAGE_ID),
            ("SourceRegion", s.region),
            ("Name", s.image_name),
        ]
        if s.image_description:
            params.append(("Description", s.image_description))
        params += copy_params(region)
        actions += [
            AwsCall(
                "ec2",
                "CopyImage",
                tuple(params),
                region=region,
                result_name="copy_image",
                description=f"copy the image to {region}",
            ),
            UpdateSettings(
                "copy_image", ((copy.setting, "ImageId"),), description=f"keep the id of the copy in {region}"
            ),
            _tag(s, copy, region, f"the copy in {region}"),
        ]
    for region in s.copy_to_regions:
        actions += _finish(s, copy_image_id(region), region, f"the copy in {region}")
    return actions


def copies(s: AmiSettings, values: dict[str, str]) -> dict[str, str]:
    """The ids of the image's copies a run made, by region."""
    found = {region: values.get(copy_image_id(region).setting) for region in s.copy_to_regions}
    return {region: image_id for region, image_id in found.items() if image_id}
