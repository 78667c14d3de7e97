"""The native strategy, EBS-backed (`backing = "ebs"`): the same node program and the same hvm disk,
which goes into an EBS snapshot instead of an S3 bundle, so the image launches on today's instance types.

ami-bundle: the node program makes the disk (MBR, GRUB, image hygiene) as for an S3 bundle, but keeps it
whole in destination_dir (`<prefix>.disk`, 0600) instead of compressing, encrypting and splitting it.
ami-upload: the controller reads the disk's blocks that hold data from the node program (`blocks`, over
the SSH channel) and uploads them itself with the EBS direct APIs, so no AWS credential or URL reaches
the node; the snapshot's id is kept. ami-register: RegisterImage with the snapshot as the root device.
Install, configure and the checks are the S3 path's.
"""

from __future__ import annotations

from dataclasses import replace

from amidsl.model.actions import (
    Action,
    NodeProgram,
    PlanWarning,
    Remove,
    RuntimeValue,
    UpdateSettings,
    UploadSnapshot,
)
from amidsl.settings import AmiSettings, Problem, SettingsError
from amidsl.snapshots import delete_snapshots_command
from amidsl.strategies import native
from amidsl.strategies.hygiene import hygiene_notes
from amidsl.strategies.register import ami_register, image_tags
from amidsl.strategies.strategy import FailureAdvice, Strategy

SNAPSHOT_ID = RuntimeValue("snapshot_id", "ami-upload")
# Where EC2 presents the root volume to an hvm instance (as /dev/nvme0n1 on Nitro types).
ROOT_DEVICE = "/dev/xvda"
VOLUME_TYPE = "gp3"


def install(s: AmiSettings) -> list[Action | PlanWarning]:
    """The S3 path's install, whose node check also asks whether the disk boots on Nitro types."""
    return [
        replace(a, request=(*a.request, ("output", "disk")), description=a.description + NITRO_CHECK)
        if isinstance(a, NodeProgram) and a.command == "check"
        else a
        for a in native.install(s)
    ]


NITRO_CHECK = (
    "; for today's instance types, that the newest kernel has the nvme driver (built in or in its "
    "initramfs) and the ena driver"
)


def disk_path(s: AmiSettings) -> str:
    """The disk the node program keeps between ami-bundle and ami-upload."""
    return f"{s.destination_dir.rstrip('/')}/{s.prefix}.disk"


def disk_request(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """The bundle request of the S3 path, for a disk: no key or IV (nothing is encrypted), output disk."""
    request = [
        (key, value) for key, value in native.bundle_request(s) if key not in ("key", "iv", "part_size")
    ]
    return (*request, ("output", "disk"))


def ami_bundle(s: AmiSettings) -> list[Action | PlanWarning]:
    """Image the volume into a bootable disk on the node, kept whole for the upload."""
    return [
        *hygiene_notes(s, "the node program applies it as it images the volume"),
        native.make_destination(s),
        NodeProgram(
            native.node_program(s),
            "bundle",
            disk_request(s),
            result_name="bundle",
            description=f"image the volume into a bootable disk on the node ({disk_path(s)}, root only)",
        ),
    ]


def snapshot_encryption(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """StartSnapshot's encryption parameters for the settings (none: the snapshot is not encrypted)."""
    if not s.encrypted:
        return ()
    return (("Encrypted", True),) + ((("KmsKeyArn", s.kms_key_id),) if s.kms_key_id else ())


def copy_key_arn(s: AmiSettings, region: str) -> str | None:
    """The key copy_kms_key_ids gives for the copy in `region`, if any."""
    return dict(s.copy_kms_key_ids).get(region)


def copy_key(s: AmiSettings, region: str) -> str:
    """The key an encrypted build's copy in `region` is encrypted with, in words."""
    return copy_key_arn(s, region) or f"the account's default EBS key in {region}"


def encryption_notes(s: AmiSettings) -> list[PlanWarning]:
    """What an encrypted snapshot means for sharing, and what a simulation can check of it."""
    if not s.encrypted:
        return []
    key = (
        s.kms_key_id
        or f"the account's default EBS key in {s.region} (aws/ebs unless the account set another)"
    )
    notes = [
        PlanWarning(
            f"encrypted = true: the snapshot, and every instance's root volume, is encrypted with {key}"
            + "".join(f"; the copy in {region} with {copy_key(s, region)}" for region in s.copy_to_regions)
            + ". A simulation checks the key ARN's form and region only, not that the key exists, is "
            "enabled and symmetric, or that you may use it: `amidsl validate --live` asks KMS",
            note=True,
        )
    ]
    if s.launch_permissions:
        keys = [key for key in (s.kms_key_id, *(copy_key_arn(s, r) for r in s.copy_to_regions)) if key]
        notes.append(
            PlanWarning(
                f"the image is shared with {', '.join(s.launch_permissions)} and encrypted with "
                f"{', '.join(keys)}: they can launch it only if each key's policy lets them use the key "
                "(kms:DescribeKey, kms:CreateGrant, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey*)"
            )
        )
    return notes


def ami_upload(s: AmiSettings) -> list[Action | PlanWarning]:
    """Upload the disk's data blocks into an EBS snapshot from the controller, and keep its id."""
    if s.snapshot_id is not None:
        # ami-register would name the given snapshot, not the one this phase uploads.
        raise SettingsError(
            [
                Problem(
                    "snapshot_id",
                    f"is given ({s.snapshot_id}), to resume at ami-register on that snapshot, but the phases "
                    "asked for include ami-upload, which would upload a new one",
                    "run the phases after it (--phase ami-register --phase cleanup), or remove snapshot_id "
                    "to upload the disk again",
                )
            ]
        )
    return [
        *encryption_notes(s),
        UploadSnapshot(
            native.node_program(s),
            from_result="bundle",
            result_name="snapshot",
            region=s.region,
            tags=image_tags(s),
            snapshot_description=f"root disk of {s.image_name}",
            concurrency=s.upload_concurrency,
            encryption=snapshot_encryption(s),
        ),
        UpdateSettings("snapshot", (("snapshot_id", "SnapshotId"),), description="keep the snapshot id"),
    ]


def blocks_program(action: UploadSnapshot, disk: str) -> NodeProgram:
    """The node-program run that streams the disk's data blocks to the controller."""
    return NodeProgram(
        action.program, "blocks", (("disk", disk),), result_name="", description=action.description
    )


def register_image_params(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """The RegisterImage parameters for an EBS-backed hvm image whose root is the uploaded snapshot."""
    params: list[tuple[str, object]] = [("Name", s.image_name)]
    if s.image_description:
        params.append(("Description", s.image_description))
    params += [
        ("Architecture", s.arch),
        ("RootDeviceName", ROOT_DEVICE),
        (
            "BlockDeviceMappings",
            (
                {
                    "DeviceName": ROOT_DEVICE,
                    # No VolumeSize: EC2 takes the snapshot's, the disk's size rounded up to a GiB.
                    "Ebs": {
                        # A build resumed at ami-register names the snapshot it was given.
                        "SnapshotId": s.snapshot_id or SNAPSHOT_ID,
                        "VolumeType": VOLUME_TYPE,
                        "DeleteOnTermination": True,
                    },
                },
            ),
        ),
        ("VirtualizationType", "hvm"),
        # Nitro types network only through ENA; GRUB on the disk boots by BIOS.
        ("EnaSupport", True if s.ena_support is None else s.ena_support),
        ("BootMode", s.boot_mode or "legacy-bios"),
    ]
    optional = (("ImdsSupport", s.imds_support), ("SriovNetSupport", s.sriov_net_support))
    params += [(key, value) for key, value in optional if value is not None]
    return tuple(params)


def copy_image_params(s: AmiSettings, region: str) -> tuple[tuple[str, object], ...]:
    """What the CopyImage of an EBS-backed image to `region` adds: the snapshots EC2 copies get the
    image's tags, and, when encrypted, the copy is, with the region's key in copy_kms_key_ids or else
    the region's default EBS key."""
    tags = (("TagSpecifications", ({"ResourceType": "snapshot", "Tags": image_tags(s)},)),)
    if not s.encrypted:
        return tags
    key = copy_key_arn(s, region)
    return (("Encrypted", True),) + ((("KmsKeyId", key),) if key else ()) + tags


def register(s: AmiSettings) -> list[Action | PlanWarning]:
    """Register the snapshot as an EBS-backed AMI, keep its id, and finish it as the settings say."""
    ena_warning = PlanWarning(
        "ena_support = false: Nitro instance types (most of today's, such as m5, c6i or t3) launch only "
        "images with ENA support; this one launches only on the older Xen types with an EBS root (such as "
        "t2 or m4)"
    )
    return [
        *([ena_warning] if s.ena_support is False else []),
        *ami_register(
            s,
            register_image_params(s),
            lambda region: copy_image_params(s, region),
            uses_bucket=STRATEGY.uses_bucket,
        ),
    ]


def cleanup(s: AmiSettings) -> list[Action]:
    """The node program's cleanup, as for the S3 path, and the disk it kept (it makes no parts)."""
    return [*native.program_cleanup(s), disk_removal(s)]


PHASE_FUNCTIONS = {
    "install": install,
    "configure": native.configure,
    "ami-bundle": ami_bundle,
    "ami-upload": ami_upload,
    "ami-register": register,
    "cleanup": cleanup,
}


def disk_removal(s: AmiSettings) -> Remove:
    """The action that removes the disk the node program kept (in cleanup, and after a failure)."""
    return Remove(disk_path(s), description="remove the disk kept for the upload")


def disk_note(s: AmiSettings, phase: str) -> str:
    """What becomes of a failed EBS-backed build's disk on the node."""
    if phase in ("install", "configure"):
        return "Nothing of the disk was made on the node."
    if phase == "ami-bundle":
        return f"The node program removes its partial disk from {s.destination_dir} when it fails."
    # `s` has the run's values: a snapshot the failed upload left (kept, or not deleted) is named.
    left = phase == "ami-upload" and s.snapshot_id
    upload = f" The upload's snapshot {s.snapshot_id} stays in {s.region}, as said above." if left else ""
    # No later run can use it (the upload needs this run's report), and it holds the whole volume.
    return f"The disk {disk_path(s)} was removed too.{upload}"


def after_failure(s: AmiSettings, phase: str) -> FailureAdvice:
    """As for the S3 path, and the disk goes too: no rerun can use it, and it holds the whole volume."""
    return replace(native.after_failure(s, phase, disk_note), also=(disk_removal(s),))


def resume_hint(s: AmiSettings, phase: str) -> str | None:
    """As for the S3 path, except a failed registration: the snapshot is there, named, to register again."""
    if phase != "ami-register" or s.snapshot_id is None:
        return native.resume_hint(s, phase)
    return kept_snapshot_hint(s.snapshot_id, s.region, registered=True)


def kept_snapshot_hint(
    snapshot_id: str, region: str, state: str = "completed", registered: bool = False
) -> str:
    """How to resume on a snapshot that holds the whole disk (`state`: completed, or what else it is),
    at ami-register, or to delete it instead; `registered`: an image may have been registered from it."""
    delete = delete_snapshots_command([snapshot_id], region)
    when = (
        "fix the cause and "
        if state == "completed"
        else f"once `aws ec2 describe-snapshots --region {region} --snapshot-ids {snapshot_id}` says "
        "completed, "
    )
    image = (
        "; where an image was registered from it, add --set force_deregister=true, which keeps this snapshot"
        if registered
        else ""
    )
    start_over = "deregister any image registered from it, then delete it" if registered else "delete it"
    return (
        f"The snapshot {snapshot_id} ({state}) stays in {region}. To resume, {when}run the "
        f"build again with --phase ami-register --phase cleanup --set snapshot_id={snapshot_id} (the disk "
        f"is in the snapshot{image}); to start over instead, {start_over}: `{delete}`."
    )


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """What an EBS-backed native build puts on the node and where the image goes, for the preview."""
    return (
        (
            "on the node",
            f"amidsl's node program (one stdlib Python file) in {s.install_dir}, during the build; the "
            f"disk in {disk_path(s)} (root only) from ami-bundle until cleanup; the node program checks "
            f"before any work that {s.destination_dir} has room for it",
        ),
        *[
            (topic, text)
            for topic, text in native.summary(s)
            if topic in ("stays in the image", "the node needs")
        ],
        (
            "image",
            f"EBS-backed: the disk's blocks that hold data become an EBS snapshot in {s.region} (EBS "
            f"direct APIs, uploaded from the controller), the root device {ROOT_DEVICE} of the image "
            f"({VOLUME_TYPE}, deleted with the instance"
            + (f", encrypted with {s.kms_key_id or 'the default EBS key'}" if s.encrypted else "")
            + (
                "); launched by today's instance types" if s.ena_support is not False else "); no ENA support"
            ),
        ),
        (
            "secrets",
            "AWS credentials stay on the controller, which uploads the snapshot; nothing secret reaches "
            "the node (the disk is sent unencrypted inside the SSH channel)",
        ),
    )


STRATEGY = Strategy(
    name="native-ebs",
    bundler="native",
    backing="ebs",
    phases=PHASE_FUNCTIONS,
    summary=summary,
    after_failure=after_failure,
    resume_hint=resume_hint,
    credential_use="used on the controller only (the node streams the disk's blocks to it)",
    runs_node_program=True,
    uses_bucket=False,
)
