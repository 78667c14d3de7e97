"""Errors raised by the bundle format: one class per way a bundle or image can be wrong."""


class BundleError(Exception):
    """Base of every bundle, manifest and image problem; the message says what and how to fix."""


class ManifestParseError(BundleError):
    """The manifest is truncated, not XML, or misses a required element."""


class WrongCertificateError(BundleError):
    """The manifest signature was made by a key other than the given certificate's."""


class ManifestEditedError(BundleError):
    """The manifest was signed by the certificate's key but its content changed afterwards."""


class KeyMismatchError(BundleError):
    """A private key does not belong to the certificate it was given with."""


class WrongPrivateKeyError(BundleError):
    """The private key cannot decrypt the bundle's AES key and IV."""


class PartCountMismatchError(BundleError):
    """The number of parts differs between the manifest's count, its part list or the directory."""


class PartNameError(BundleError):
    """A part entry has an unsafe file name or an out-of-order index."""


class MissingPartError(BundleError):
    """A part file listed in the manifest does not exist."""


class PartsReorderedError(BundleError):
    """Part files hold each other's content: they were renamed or shuffled."""


class PartDigestMismatchError(BundleError):
    """A part file's SHA-1 differs from the manifest's."""


class BundledSizeMismatchError(BundleError):
    """The part files' total size differs from the manifest's bundled_size."""


class CorruptBundleError(BundleError):
    """The decrypted stream is not a valid gzip/tar stream of one image file."""


class ImageDigestMismatchError(BundleError):
    """The restored tar stream's SHA-1 differs from the manifest's image digest."""


class ImageError(BundleError):
    """Building or reading a filesystem image failed."""
