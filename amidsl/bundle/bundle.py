"""Bundle an image file: tar → SHA-1 → parallel gzip → AES-128-CBC → parts, signed manifest."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import gzip_ng_threaded

from amidsl.bundle.errors import BundleError
from amidsl.bundle.keys import SigningKeys, encrypt_for_certificate, load_signing_keys
from amidsl.bundle.manifest import (
    BlockDeviceMapping,
    Bundler,
    EncryptedKeys,
    Manifest,
    ManifestPart,
    sign_manifest,
    write_manifest,
)
from amidsl.node import amidsl_node as node

MIB = 1024 * 1024
PART_SIZE = 10 * MIB
# zlib-ng level 5 stays within ~2.5% of `gzip -9` output (level 6: ~2%, level 4: ~4.5%) while
# compressing about 12 times faster per core; 6 costs a quarter more time for half a percent.
COMPRESS_LEVEL = 5
_USER_ID = re.compile(r"^\d{12}$")
ARCHITECTURES = ("i386", "x86_64", "arm64")


@dataclass(frozen=True)
class WrittenPart:
    """A finished part file: where it is, how big, and its SHA-1."""

    path: Path
    size: int
    digest: str


class _CryptographyAes:
    """AES-128-CBC with PKCS#7 padding, the node program's encryptor interface over cryptography."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._padder = sym_padding.PKCS7(128).padder()

    def update(self, data: bytes) -> bytes:
        return self._encryptor.update(self._padder.update(data))

    def finish(self) -> bytes:
        return self._encryptor.update(self._padder.finalize()) + self._encryptor.finalize()


class _RawSink(io.RawIOBase):
    """The encrypting sink as the binary file zlib-ng's threaded gzip writer wants."""

    def __init__(self, sink: node.EncryptingSink) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._sink.write(bytes(data))


def check_prefix(prefix: str, name: str = "prefix") -> None:
    """Refuse a prefix that is no plain file name (BundleError naming it as `name`)."""
    if not prefix or "/" in prefix or prefix in (".", "..") or len(prefix.encode()) >= 100:
        raise BundleError(f"{name} {prefix!r} must be a plain file name shorter than 100 bytes")


def account_number(user_id: str, name: str = "user_id") -> str:
    """The 12-digit AWS account number of `user_id`, dashes removed (BundleError naming it as `name`)."""
    account = user_id.replace("-", "")
    if not _USER_ID.fullmatch(account):
        raise BundleError(f"{name} {user_id!r} must be the 12-digit AWS account number")
    return account


def check_image_id(value: str | None, kind: str, name: str) -> None:
    """Refuse a kernel (`aki`) or ramdisk (`ari`) id of another form (BundleError naming it as `name`)."""
    if value is not None and not re.fullmatch(rf"{kind}-[0-9a-f]{{8}}([0-9a-f]{{9}})?", value):
        raise BundleError(f"{name} {value!r} is not an {kind}- image id (e.g. {kind}-1a2b3c4d)")


def check_image_file(image_path: Path | str, name: str = "image") -> None:
    """Refuse a missing image, and one larger than an S3-backed AMI may be (BundleError naming `name`)."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise BundleError(f"{name} {image_path} does not exist or is not a file")
    size = image_path.stat().st_size
    if size > node.MAX_IMAGE_MB * MIB:
        raise BundleError(
            f"{name} {image_path} is {size} bytes ({-(-size // MIB)} MB), more than the "
            f"{node.MAX_IMAGE_MB} MB an S3-backed (instance-store) AMI may have; make a smaller image"
        )


def _random_or_given(value: bytes | None, what: str) -> bytes:
    if value is None:
        return os.urandom(16)
    if len(value) != 16:
        raise BundleError(f"the AES {what} must be 16 bytes, got {len(value)}")
    return value


def _mappings(given: Mapping[str, str] | Iterable[BlockDeviceMapping]) -> tuple[BlockDeviceMapping, ...]:
    # Only the mappings asked for: like ec2-bundle-image and ec2-bundle-vol without -B, no defaults.
    if isinstance(given, Mapping):
        given = [BlockDeviceMapping(v, d) for v, d in given.items()]
    # ec2-ami-tools writes mappings sorted by virtual name; keep the object in written order.
    return tuple(sorted(given, key=lambda m: m.virtual))


def stream_bundle(
    image_path: Path,
    out_dir: Path,
    prefix: str,
    key: bytes,
    iv: bytes,
    *,
    part_size: int = PART_SIZE,
    compresslevel: int = COMPRESS_LEVEL,
    threads: int | None = None,
) -> tuple[str, list[WrittenPart]]:
    """Run the node program's streaming pipeline with zlib-ng; return the tar SHA-1 and parts."""
    threads = threads or len(os.sched_getaffinity(0))
    cleanup = node.Cleanup()
    try:
        # The parts are written in a private directory (0700) and moved into out_dir when all are done.
        work_dir = tempfile.mkdtemp(prefix=f".{prefix}.parts.", dir=out_dir)
        cleanup.add(work_dir)
        parts = node.PartWriter(str(out_dir), work_dir, part_size, cleanup)
        sink = node.EncryptingSink(_CryptographyAes(key, iv), parts)
        # zlib-ng compresses several times faster than zlib at the same ratio.
        gz = gzip_ng_threaded.open(_RawSink(sink), "wb", compresslevel=compresslevel, threads=threads)
        try:
            digest = node.bundle_stream(image_path, prefix, gz, sink)  # closes gz when done
        except BaseException:
            _abandon(gz)
            raise
        written = parts.finish(prefix)
    except BaseException as exc:
        cleanup.remove_all()
        if isinstance(exc, OSError):
            where = exc.filename or image_path
            raise BundleError(
                f"bundling {image_path} into {out_dir} failed at {where}: {exc.strerror or exc}; "
                "check free space and permissions"
            ) from exc
        raise
    cleanup.remove_all()  # the work directory, empty now
    return digest, [WrittenPart(out_dir / p["filename"], p["size"], p["sha1"]) for p in written]


def _abandon(gz: Any) -> None:
    """Stop the compression threads without the final flush.

    After an interrupt (Ctrl-C) mid-write, zlib-ng's close() waits for queued work forever; the parts
    are discarded anyway, so stop the threads and mark the writer closed instead.
    """
    gz.raw.stop()
    gz.raw._closed = True  # zlib-ng has no abort(); without this, garbage collection would flush and wait


def bundle_image(
    image_path: Path | str,
    out_dir: Path | str,
    *,
    prefix: str = "image",
    user_id: str,
    user_cert_pem: bytes | str | None = None,
    user_private_key_pem: bytes | str | None = None,
    ec2_cert_pem: bytes | str | None = None,
    signing: SigningKeys | None = None,
    arch: str = "x86_64",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mappings: Mapping[str, str] | Iterable[BlockDeviceMapping] = (),
    ancestry: Iterable[str] = (),
    key: bytes | None = None,
    iv: bytes | None = None,
    part_size: int = PART_SIZE,
    compresslevel: int = COMPRESS_LEVEL,
    threads: int | None = None,
    bundler: Bundler | None = None,
) -> Manifest:
    """Bundle an image into `<prefix>.part.NN` files and a signed `<prefix>.manifest.xml`.

    The keys come either as the three PEMs or, already parsed, as `signing`.
    """
    image_path, out_dir = Path(image_path), Path(out_dir)
    check_prefix(prefix)
    account = account_number(user_id)
    if arch not in ARCHITECTURES:
        raise BundleError(f"arch {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    check_image_id(kernel_id, "aki", "kernel_id")
    check_image_id(ramdisk_id, "ari", "ramdisk_id")
    if part_size < 1:
        raise BundleError(f"part_size must be positive, got {part_size}")
    check_image_file(image_path)
    if not out_dir.is_dir():
        raise BundleError(f"output directory {out_dir} does not exist; create it first")
    # Bad or mismatched keys are found before the long work, not after.
    if signing is None:
        if user_cert_pem is None or user_private_key_pem is None or ec2_cert_pem is None:
            raise TypeError(
                "bundle_image needs signing= or all of user_cert_pem, user_private_key_pem, ec2_cert_pem"
            )
        signing = load_signing_keys(user_cert_pem, user_private_key_pem, ec2_cert_pem)
    aes_key, aes_iv = _random_or_given(key, "key"), _random_or_given(iv, "IV")
    digest, parts = stream_bundle(
        image_path,
        out_dir,
        prefix,
        aes_key,
        aes_iv,
        part_size=part_size,
        compresslevel=compresslevel,
        threads=threads,
    )
    manifest = signed_manifest(
        BundleFacts(
            prefix, image_path.stat().st_size, digest, [(p.path.name, p.size, p.digest) for p in parts]
        ),
        key=aes_key,
        iv=aes_iv,
        user_id=account,
        signing=signing,
        arch=arch,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        product_codes=product_codes,
        block_device_mappings=block_device_mappings,
        ancestry=ancestry,
        bundler=bundler,
    )
    write_manifest(out_dir / f"{prefix}.manifest.xml", manifest)
    return manifest


@dataclass(frozen=True)
class BundleFacts:
    """What bundling an image produced: its prefix, size and digest, and (filename, size, sha1) per part."""

    prefix: str
    image_size: int
    digest: str
    parts: list[tuple[str, int, str]]


def signed_manifest(
    facts: BundleFacts,
    *,
    key: bytes,
    iv: bytes,
    user_id: str,
    signing: SigningKeys,
    arch: str = "x86_64",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mappings: Mapping[str, str] | Iterable[BlockDeviceMapping] = (),
    ancestry: Iterable[str] = (),
    bundler: Bundler | None = None,
) -> Manifest:
    """The signed manifest of bundled parts: key and IV encrypted for the user's and EC2's certificates."""
    user_cert, ec2_cert = signing.user_cert, signing.ec2_cert
    # The format encrypts the hex text of key and IV, not the raw bytes.
    key_hex, iv_hex = key.hex().encode("ascii"), iv.hex().encode("ascii")
    unsigned = Manifest(
        name=facts.prefix,
        user=user_id.replace("-", ""),
        architecture=arch,
        digest=facts.digest,
        size=facts.image_size,
        bundled_size=sum(size for _, size, _ in facts.parts),
        keys=EncryptedKeys(
            user_encrypted_key=encrypt_for_certificate(user_cert, key_hex).hex(),
            ec2_encrypted_key=encrypt_for_certificate(ec2_cert, key_hex).hex(),
            user_encrypted_iv=encrypt_for_certificate(user_cert, iv_hex).hex(),
            ec2_encrypted_iv=encrypt_for_certificate(ec2_cert, iv_hex).hex(),
        ),
        parts=tuple(ManifestPart(i, name, digest) for i, (name, _, digest) in enumerate(facts.parts)),
        signature="",
        block_device_mappings=_mappings(block_device_mappings),
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        product_codes=tuple(product_codes),
        ancestry=tuple(ancestry),
        bundler=bundler or Bundler(),
    )
    return sign_manifest(unsigned, signing.private_key)
