"""Choices, defaults and limits of the settings: plain values, cheap to import.

The command table (amidsl/cli/table.py) takes `BUNDLERS` from here for `simulate --bundler`, so this
module imports nothing: loading it must not load the rest of the settings (cryptography, the node
program) on every `amidsl` run.
"""

from __future__ import annotations

AMI_TOOLS_URL = "https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip"
# ec2-ami-tools 1.5 runs on Ruby 2.x; Ruby 3.0 removed URI.escape, which its S3 code calls.
DEFAULT_RUBY_VERSION = "2.7.8"

INSTALL_STRATEGIES = ("auto", "rbenv", "package", "none")
# ec2-bundle-vol --partition: "none" makes a plain filesystem image; the others need a standard
# /dev/(xvd|sd) root device, dmsetup, kpartx, parted, sgdisk and legacy grub on the node.
PARTITIONS = ("none", "mbr", "gpt", "auto")
# How ec2-upload-bundle gets AWS credentials: the keys (-a/-s, at run time) or the node's instance profile.
UPLOAD_CREDENTIALS = ("keys", "instance-profile")
# The build strategies: the choices of the `bundler` setting.
BUNDLERS = ("native", "ami-tools")
# What the image's root device is: an S3 bundle (instance store, launched only by old Xen types) or an
# EBS snapshot (EBS direct APIs; launched by today's Nitro types too).
INSTANCE_STORE, EBS = "instance-store", "ebs"
BACKINGS = (INSTANCE_STORE, EBS)
# What the `arch` setting accepts, and what `amidsl bundle-image --arch` offers. Manifests may also say
# arm64, but no instance type launches an arm64 instance-store AMI: the strategies' rules refuse it,
# saying why for each (rules.py).
ARCHITECTURES = ("x86_64", "i386")
VIRTUALIZATION_TYPES = ("paravirtual", "hvm")
# What RegisterImage accepts (botocore's EC2 model): ImdsSupport only "v2.0", SriovNetSupport only
# "simple". BootMode "uefi" is refused: instance-store root devices run only on Xen instance types
# (C1, C3, D2, I2, M1, M2, M3, R3, X1), which boot with legacy BIOS; UEFI needs a Nitro type.
IMDS_SUPPORT = ("v2.0",)
BOOT_MODES = ("legacy-bios", "uefi-preferred")
SRIOV_NET_SUPPORT = ("simple",)

MAX_IMAGE_TAGS = 50  # EC2's limit per resource (amidsl's own tag included)
MAX_OBJECT_TAGS = 10  # S3's limit per object
DEFAULT_IMAGE_WAIT_SECONDS = 1800
# Parts a native build's node uploads at once (its presigned PUTs).
DEFAULT_UPLOAD_CONCURRENCY = 4
# The node holds each part it is sending in memory (10 MiB): 16 at once stay within 160 MiB.
MAX_UPLOAD_CONCURRENCY = 16
MAX_IMAGE_SIZE_MB = 10240  # ec2-bundle-vol -s
# The largest EBS-backed disk: 2 TiB, what its MBR partition table holds (and EC2 boots an MBR root of at
# most 2 TiB).
MAX_EBS_DISK_MB = 2 * 1024 * 1024
