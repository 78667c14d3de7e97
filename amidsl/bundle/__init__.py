"""The bundle format: filesystem image from a directory, bundle, verify, unbundle, list."""

from amidsl.bundle.bundle import bundle_image, part_filename
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
from amidsl.bundle.manifest import (
    BlockDeviceMapping,
    Bundler,
    EncryptedKeys,
    Manifest,
    ManifestPart,
    default_block_device_mappings,
    parse_manifest,
    read_manifest,
)
from amidsl.bundle.unbundle import BundleKeys, decrypt_keys, unbundle
from amidsl.bundle.verify import verify_bundle

__all__ = [
    "BlockDeviceMapping",
    "BundleError",
    "BundleKeys",
    "BundledSizeMismatchError",
    "Bundler",
    "CorruptBundleError",
    "EncryptedKeys",
    "ImageDigestMismatchError",
    "ImageError",
    "KeyMismatchError",
    "Manifest",
    "ManifestEditedError",
    "ManifestParseError",
    "ManifestPart",
    "MissingPartError",
    "PartCountMismatchError",
    "PartDigestMismatchError",
    "PartNameError",
    "PartsReorderedError",
    "WrongCertificateError",
    "WrongPrivateKeyError",
    "bundle_image",
    "decrypt_keys",
    "default_block_device_mappings",
    "parse_manifest",
    "part_filename",
    "read_manifest",
    "unbundle",
    "verify_bundle",
]
