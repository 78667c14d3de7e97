"""The bundle format: filesystem image from a directory, bundle, verify, unbundle, list.

    report = build_image("/", "/tmp/image", exclusions=["/opt/ami-tools"])  # like ec2-bundle-vol
    manifest = bundle_image("/tmp/image", "/tmp", user_id=..., user_cert_pem=...,
                            user_private_key_pem=..., ec2_cert_pem=...)     # parts + manifest
    verify_bundle("/tmp/image.manifest.xml", user_cert_pem)                  # signature, parts
    unbundle("/tmp/image.manifest.xml", private_key_pem, "/restore",
             user_cert_pem=user_cert_pem)                                    # back to the image
    list_image("/restore/image")                                            # what is inside

Every problem is a BundleError subclass whose message names the file and the fix, and never
contains key material.
"""

from amidsl.bundle.bundle import bundle_image
from amidsl.bundle.errors import (
    BundledSizeMismatchError,
    BundleError,
    CorruptBundleError,
    ImageDigestMismatchError,
    ImageError,
    KeyMismatchError,
    ManifestEditedError,
    ManifestParseError,
    MissingPartError,
    PartCountMismatchError,
    PartDigestMismatchError,
    PartNameError,
    PartsReorderedError,
    WrongCertificateError,
    WrongPrivateKeyError,
)
from amidsl.bundle.image import ImageReport, build_image
from amidsl.bundle.ls import ImageEntry, list_image
from amidsl.bundle.manifest import (
    BlockDeviceMapping,
    Bundler,
    EncryptedKeys,
    Manifest,
    ManifestPart,
    parse_manifest,
    read_manifest,
)
from amidsl.bundle.selection import ALWAYS_EXCLUDED, DEFAULT_FILTER, LeftOut, Reason
from amidsl.bundle.unbundle import BundleKeys, decrypt_keys, unbundle
from amidsl.bundle.verify import verify_bundle
from amidsl.node.amidsl_node import part_filename

__all__ = [
    "ALWAYS_EXCLUDED",
    "DEFAULT_FILTER",
    "BlockDeviceMapping",
    "BundleError",
    "BundleKeys",
    "BundledSizeMismatchError",
    "Bundler",
    "CorruptBundleError",
    "EncryptedKeys",
    "ImageDigestMismatchError",
    "ImageEntry",
    "ImageError",
    "ImageReport",
    "KeyMismatchError",
    "LeftOut",
    "Manifest",
    "ManifestEditedError",
    "ManifestParseError",
    "ManifestPart",
    "MissingPartError",
    "PartCountMismatchError",
    "PartDigestMismatchError",
    "PartNameError",
    "PartsReorderedError",
    "Reason",
    "WrongCertificateError",
    "WrongPrivateKeyError",
    "build_image",
    "bundle_image",
    "decrypt_keys",
    "list_image",
    "parse_manifest",
    "part_filename",
    "read_manifest",
    "unbundle",
    "verify_bundle",
]
