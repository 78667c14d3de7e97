"""Rules across settings: each a small function of the settings read, returning what is wrong.

`RULES` run for every build; the rules of one strategy are named in `STRATEGY_RULES` beside the
`bundler` row of the table (amidsl/settings/table.py). A setting only the other backing reads is not
read (its value is its row's default, see Reading.value): a rule that refuses one, because the build
would silently not do what it says, looks at what was given instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from amidsl.node.amidsl_node import MIN_HVM_IMAGE_MB
from amidsl.settings.checks import KMS_KEY_ARN, partition_of
from amidsl.settings.constants import MAX_IMAGE_SIZE_MB
from amidsl.settings.paths import is_within
from amidsl.settings.reading import Reading
from amidsl.settings.schema import Problem

Rule = Callable[[Reading], list[Problem]]


def aws_keys_go_together(r: Reading) -> list[Problem]:
    """access_key with secret_key, and a session token only with both."""
    problems = []
    secret_key = r.value("secret_key")
    # Given, not read: a value given in the wrong form is its own row's problem, not a missing one.
    access_given, secret_given = (r.given.get(name) is not None for name in ("access_key", "secret_key"))
    if access_given != secret_given:
        problems.append(
            Problem(
                "access_key" if secret_given else "secret_key",
                "is missing while its partner is set",
                "give both access_key and secret_key, or neither to use the AWS credential chain",
            )
        )
    if r.value("session_token") is not None and secret_key is None:
        problems.append(
            Problem(
                "session_token",
                "is set without access_key and secret_key",
                "give the temporary access_key and secret_key that go with the token",
            )
        )
    return problems


def credentials_inside_credential_dir(r: Reading) -> list[Problem]:
    """The key and certificate paths lie in credential_dir, which cleanup removes and the image excludes."""
    credential_dir = r.value("credential_dir")
    return [
        Problem(
            name,
            f"{path!r} is outside credential_dir {credential_dir!r}",
            "keep the credentials inside credential_dir so cleanup removes them and the image excludes them",
        )
        for name in ("private_key_path", "certificate_path")
        if (path := r.value(name)) is not None and not is_within(path, credential_dir)
    ]


def no_ruby_means_no_install_strategy(r: Reading) -> list[Problem]:
    """install_ruby = false (the crate's spelling) goes only with install_strategy "none"."""
    strategy = r.value("install_strategy")
    if r.given.get("install_ruby") is not False or strategy == "none":
        return []
    return [
        Problem(
            "install_ruby",
            f"is false but install_strategy is {strategy!r}",
            'remove install_ruby, or set install_strategy = "none"',
        )
    ]


def hvm_takes_no_kernel(r: Reading) -> list[Problem]:
    """An hvm image boots its own kernel: EC2 takes no kernel or ramdisk for it."""
    # Given, not read: an EBS build (always hvm) reads neither.
    kernel_id, ramdisk_id = r.given.get("kernel_id"), r.given.get("ramdisk_id")
    if r.value("virtualization_type") != "hvm" or not (kernel_id or ramdisk_id):
        return []
    return [
        Problem(
            "kernel_id" if kernel_id else "ramdisk_id",
            "an hvm image boots its own kernel through its boot loader; EC2 takes no kernel or "
            "ramdisk for it",
            'remove kernel_id and ramdisk_id, or set virtualization_type = "paravirtual"',
        )
    ]


def attributes_need_hvm(r: Reading) -> list[Problem]:
    """boot_mode, ena_support and sriov_net_support: EC2 supports them only for HVM images."""
    if r.value("virtualization_type") == "hvm":
        return []
    return [
        Problem(
            name,
            "EC2 supports it only for HVM images (a paravirtual instance may become unreachable)",
            'set virtualization_type = "hvm", or remove it',
        )
        for name in ("boot_mode", "ena_support", "sriov_net_support")
        if r.value(name) is not None
    ]


def native_limits(r: Reading) -> list[Problem]:
    """What a native build cannot make into an image EC2 launches, refused before anything runs."""
    problems = []
    if r.value("arch") == "arm64":
        why = "the images of native builds boot through GRUB for BIOS (i386-pc), which arm64 systems lack"
        if r.value("backing") != "ebs":
            why = "no instance type launches an arm64 instance-store AMI (only Xen x86 types do), and " + why
        problems.append(Problem("arch", why, 'build from an x86_64 node with arch = "x86_64"'))
    size = r.value("image_size_mb")
    if r.value("virtualization_type") == "hvm" and size is not None and size < MIN_HVM_IMAGE_MB:
        problems.append(
            Problem(
                "image_size_mb",
                f"{size} MB is too small for an hvm disk (its partition starts at 1 MiB, after GRUB)",
                f"give at least {MIN_HVM_IMAGE_MB}, or remove image_size_mb to size the disk to the volume",
            )
        )
    return problems


def ami_tools_limits(r: Reading) -> list[Problem]:
    """What ec2-ami-tools 1.5 cannot do, refused before anything runs."""
    problems = []
    if r.value("arch") == "arm64":
        problems.append(
            Problem(
                "arch",
                "'arm64' is not supported by ec2-bundle-vol (it prints 'Unsupported architecture' and "
                "carries on), and no instance type launches an arm64 instance-store AMI",
                'use arch = "x86_64" (or "i386") with bundler = "ami-tools"',
            )
        )
    if r.value("volume") != "/":
        problems.append(
            Problem(
                "volume",
                f"{r.value('volume')!r}: the ami-tools strategy images the root volume (ec2-bundle-vol "
                "copies / into its image; amidsl passes no --volume)",
                'remove volume, or use bundler = "native", which images any directory',
            )
        )
    temporary = r.value("secret_key") is not None and r.value("session_token") is not None
    if temporary and r.value("upload_credentials") == "keys":
        problems.append(
            Problem(
                "session_token",
                "ec2-upload-bundle drops the session token under SigV4, so S3 rejects temporary "
                "credentials with the ami-tools strategy",
                'use bundler = "native" (the token stays on the controller), or '
                'upload_credentials = "instance-profile" (the node\'s instance profile uploads)',
            )
        )
    strategy = r.value("install_strategy")
    if r.value("inherit") and strategy in ("package", "none"):
        problems.append(
            Problem(
                "inherit",
                "inherit reads instance metadata with Kernel#open, which fails on Ruby 3 (a "
                f"distribution Ruby, as install_strategy {strategy!r} may give)",
                'remove inherit, or set install_strategy = "rbenv" (Ruby 2.7; the instance must also '
                "allow IMDSv1)",
            )
        )
    return problems


def ami_tools_image_limits(r: Reading) -> list[Problem]:
    """An image ec2-bundle-vol makes that EC2 could not boot, refused before anything runs."""
    if r.value("virtualization_type") != "hvm" or r.value("partition") != "none":
        return []
    return [
        Problem(
            "virtualization_type",
            "'hvm' boots the image as a whole disk through BIOS, but partition 'none' makes a "
            "plain filesystem image without a partition table or boot loader",
            'use virtualization_type = "paravirtual" (pv-grub), or partition = "mbr" (needs legacy '
            "grub, a /dev/xvd* or /dev/sd* root device, dmsetup, kpartx, parted and sgdisk on the node)",
        )
    ]


def ebs_limits(r: Reading) -> list[Problem]:
    """What an EBS-backed build needs, and what it does not do yet, refused before anything runs."""
    if r.value("backing") != "ebs":
        return []
    problems = []
    if r.value("bundler") != "native":
        problems.append(
            Problem(
                "backing",
                "ec2-ami-tools make only S3 bundles: an EBS-backed image is made by amidsl's node program",
                'use bundler = "native" with backing = "ebs"',
            )
        )
    if r.value("virtualization_type") != "hvm":
        problems.append(
            Problem(
                "virtualization_type",
                "an EBS-backed image here is a bootable disk (MBR and GRUB), which EC2 boots as hvm",
                'use virtualization_type = "hvm" (the native default) with backing = "ebs"',
            )
        )
    if r.value("boot_mode") not in (None, "legacy-bios"):
        problems.append(
            Problem(
                "boot_mode",
                "the disk boots through GRUB for BIOS, and today's instance types that can boot UEFI would "
                f"boot an image of boot_mode {r.value('boot_mode')!r} with UEFI, finding no boot loader",
                'remove boot_mode, or set boot_mode = "legacy-bios" (what an EBS-backed build registers)',
            )
        )
    if r.given.get("block_device_mappings"):  # given: an EBS build does not read it
        problems.append(
            Problem(
                "block_device_mappings",
                'with backing = "ebs": these name instance-store volumes (ephemeral0...) of an S3-backed '
                "image; an EBS-backed image here has its root volume only",
                "remove block_device_mappings (instances can still be launched with their own mappings), "
                'or use backing = "instance-store"',
            )
        )
    if r.given.get("bundle_tags"):
        problems.append(
            Problem(
                "bundle_tags",
                'with backing = "ebs": bundle_tags tags the S3 bundle\'s objects, and an EBS-backed build '
                "makes no S3 bundle",
                'remove bundle_tags (tags also go on the snapshot), or use backing = "instance-store"',
            )
        )
    return problems


def s3_image_size(r: Reading) -> list[Problem]:
    """An S3-backed image is at most 10240 MB (ec2-bundle-vol's and EC2's limit); an EBS disk may be more."""
    size = r.value("image_size_mb")
    if r.value("backing") == "ebs" or size is None or size <= MAX_IMAGE_SIZE_MB:
        return []
    return [
        Problem(
            "image_size_mb",
            f"{size} MB is more than an S3-backed image may have ({MAX_IMAGE_SIZE_MB} MB)",
            f'give at most {MAX_IMAGE_SIZE_MB}, or set backing = "ebs" for a larger root disk',
        )
    ]


def ebs_encryption(r: Reading) -> list[Problem]:
    """encrypted, kms_key_id and copy_kms_key_ids: only for an EBS snapshot, each key in the region it
    encrypts in, and only where EC2 can share what they make."""
    if r.value("backing") != "ebs":
        # Given, not read: a build of another backing does not read them.
        given = [name for name in ("encrypted", "kms_key_id", "copy_kms_key_ids") if r.given.get(name)]
        if not given:
            return []
        return [
            Problem(
                name,
                f"{name} is for an EBS snapshot; an S3 bundle is always encrypted (AES, its key encrypted to "
                "EC2's certificate), and its instances' root is not an EBS volume",
                f'remove {name}, or set backing = "ebs"',
            )
            for name in given
        ]
    encrypted, key, copy_keys = r.value("encrypted"), r.value("kms_key_id"), dict(r.value("copy_kms_key_ids"))
    given = [
        name
        for name, value in (("encrypted", encrypted), ("kms_key_id", key), ("copy_kms_key_ids", copy_keys))
        if value
    ]
    if not given:
        return []
    if not encrypted:
        # StartSnapshot and CopyImage refuse a key without Encrypted (EBS user guide, "Encryption outcomes").
        name = given[0]
        return [Problem(name, f"{name} is used only to encrypt", f"set encrypted = true, or remove {name}")]
    problems = []
    region, copies = r.value("region"), r.value("copy_to_regions")
    for name, where, arn in [
        ("kms_key_id", region, key),
        *((f"copy_kms_key_ids.{c}", c, k) for c, k in copy_keys.items()),
    ]:
        found = re.fullmatch(KMS_KEY_ARN, arn or "")
        if found is None:
            continue  # no key, or a malformed ARN: its row's problem
        if found.group(2) != where:
            problems.append(
                Problem(
                    name,
                    f"the key is in {found.group(2)}, and a KMS key encrypts only in its own region "
                    f"({where})",
                    f"give a key of {where} (a multi-Region key's replica there has its own ARN)",
                )
            )
        elif (partition := partition_of(where)) not in (None, found.group(1)):
            problems.append(
                Problem(
                    name,
                    f"the key's ARN is of partition {found.group(1)}, and {where} is in partition "
                    f"{partition}",
                    f"give the key's ARN as KMS in {where} shows it (arn:{partition}:kms:...)",
                )
            )
    given_copy_keys = r.given.get("copy_kms_key_ids")
    keyed = {str(c) for c in given_copy_keys} if isinstance(given_copy_keys, Mapping) else set(copy_keys)
    for copy in sorted(keyed - set(copies)):
        problems.append(
            Problem(
                f"copy_kms_key_ids.{copy}",
                f"{copy} is not one of copy_to_regions, so no copy is made there",
                f"add {copy} to copy_to_regions, or remove its key",
            )
        )
    if r.value("public_image"):
        problems.append(
            Problem(
                "public_image",
                "EC2 does not make an image with encrypted snapshots public",
                "remove public_image, or set encrypted = false",
            )
        )
    if r.value("launch_permissions"):
        # The default EBS key is the AWS managed key aws/ebs unless the account set another, and aws/ebs
        # cannot be shared: the accounts could not launch the image, or a copy, encrypted with it.
        if key is None:
            problems.append(
                Problem(
                    "launch_permissions",
                    "without kms_key_id the snapshot is encrypted with the account's default EBS key, the "
                    "AWS managed key aws/ebs unless the account set another, and aws/ebs cannot be shared: "
                    "the accounts it is shared with could not launch it",
                    "give kms_key_id, a customer managed key whose key policy lets those accounts use it",
                )
            )
        unkeyed = [copy for copy in copies if copy not in keyed]
        if unkeyed:
            problems.append(
                Problem(
                    "copy_kms_key_ids",
                    f"has no key for {', '.join(unkeyed)}: the copy there would be encrypted with the "
                    "region's default EBS key, aws/ebs unless the account set another, which cannot be "
                    "shared, so the accounts the image is shared with could not launch the copy",
                    f"give copy_kms_key_ids a key of {', '.join(unkeyed)} whose key policy lets those "
                    "accounts use it",
                )
            )
    return problems


def instance_store_only(r: Reading) -> list[Problem]:
    """What only an S3-backed (instance-store) build does with a setting, refused for another backing,
    and the reverse: a setting that only resumes an EBS-backed build."""
    problems = []
    if r.value("backing") != "ebs" and r.value("boot_mode") == "uefi":
        problems.append(
            Problem(
                "boot_mode",
                "'uefi' cannot boot an instance-store image: its root device runs only on Xen instance "
                "types (C1, C3, D2, I2, M1, M2, M3, R3, X1), which boot with legacy BIOS",
                'use boot_mode = "legacy-bios" (or "uefi-preferred", which falls back to it), or remove it',
            )
        )
    if r.value("backing") != "ebs" and r.given.get("snapshot_id") is not None:  # given: not read there
        problems.append(
            Problem(
                "snapshot_id",
                "snapshot_id resumes an EBS-backed build at ami-register; an S3-backed build registers its "
                "bundle, and would make a new one",
                'remove snapshot_id, or set backing = "ebs" as the build that made the snapshot had it',
            )
        )
    return problems


RULES: tuple[Rule, ...] = (
    aws_keys_go_together,
    credentials_inside_credential_dir,
    no_ruby_means_no_install_strategy,
    hvm_takes_no_kernel,
    attributes_need_hvm,
    ebs_limits,
    ebs_encryption,
    instance_store_only,
    s3_image_size,
)
