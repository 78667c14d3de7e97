"""Bundle an image file: tar → SHA-1 → parallel gzip → AES-128-CBC → parts, signed manifest."""

import hashlib
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import gzip_ng_threaded

from amidsl.bundle.errors import BundleError
from amidsl.bundle.keys import (
    check_key_matches_certificate,
    encrypt_for_certificate,
    load_certificate,
    load_private_key,
)
from amidsl.bundle.manifest import (
    BlockDeviceMapping,
    Bundler,
    EncryptedKeys,
    Manifest,
    ManifestPart,
    default_block_device_mappings,
    sign_manifest,
)
from amidsl.bundle.tarstream import tar_one_file

PART_SIZE = 10 * 1024 * 1024
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


class _PartWriter(io.RawIOBase):
    """Splits a byte stream into part files of part_size bytes, hashing each as it goes."""

    def __init__(self, out_dir: Path, temp_prefix: str, part_size: int) -> None:
        self._out_dir, self._temp_prefix, self._part_size = out_dir, temp_prefix, part_size
        self.parts: list[WrittenPart] = []
        self._file: io.BufferedWriter | None = None
        self._hash = hashlib.sha1()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        while view:
            if self._file is None:
                path = self._out_dir / f"{self._temp_prefix}{len(self.parts)}"
                self._file = open(path, "wb")  # noqa: SIM115 - closed in _close_part
            room = self._part_size - self._written
            chunk = view[:room]
            self._file.write(chunk)
            self._hash.update(chunk)
            self._written += len(chunk)
            view = view[len(chunk) :]
            if self._written == self._part_size:
                self._close_part()
        return len(data)

    def _close_part(self) -> None:
        assert self._file is not None
        self._file.close()
        self.parts.append(WrittenPart(Path(self._file.name), self._written, self._hash.hexdigest()))
        self._file, self._hash, self._written = None, hashlib.sha1(), 0

    def finish(self) -> list[WrittenPart]:
        """Close the last, partly filled part and return every part."""
        if self._file is not None:
            self._close_part()
        return self.parts

    def discard(self) -> None:
        """Remove every part written so far (after a failure)."""
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None
        for part in self.parts:
            part.path.unlink(missing_ok=True)


class _EncryptingWriter(io.RawIOBase):
    """AES-128-CBC encrypts what is written (PKCS#7 padded at finish) into a part writer.

    The threaded gzip writer calls write() from its own output thread, where an exception would
    kill that thread and leave the compressors blocked forever. So a failure (a full disk, say)
    is kept in `error` for the main thread to raise, and later data is dropped.
    """

    def __init__(self, key: bytes, iv: bytes, sink: _PartWriter) -> None:
        self._encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._padder = sym_padding.PKCS7(128).padder()
        self._sink = sink
        self.error: Exception | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.error is None:
            try:
                self._sink.write(self._encryptor.update(self._padder.update(bytes(data))))
            except Exception as exc:
                self.error = exc
        return len(data)

    def finish(self) -> None:
        """Pad and flush the final cipher block."""
        self._sink.write(self._encryptor.update(self._padder.finalize()))
        self._sink.write(self._encryptor.finalize())


def _check_name(prefix: str) -> None:
    if not prefix or "/" in prefix or prefix in (".", "..") or len(prefix.encode()) >= 100:
        raise BundleError(f"prefix {prefix!r} must be a plain file name shorter than 100 bytes")


def _random_or_given(value: bytes | None, what: str) -> bytes:
    if value is None:
        return os.urandom(16)
    if len(value) != 16:
        raise BundleError(f"the AES {what} must be 16 bytes, got {len(value)}")
    return value


def _mappings(
    given: Mapping[str, str] | Iterable[BlockDeviceMapping] | None, arch: str
) -> tuple[BlockDeviceMapping, ...]:
    if given is None:
        return default_block_device_mappings(arch)
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
    """Run the streaming pipeline once over the image; return the tar SHA-1 and the final parts."""
    threads = threads or len(os.sched_getaffinity(0))
    temp_prefix = f".{prefix}.part.{os.getpid()}.tmp"
    parts = _PartWriter(out_dir, temp_prefix, part_size)
    encrypting = _EncryptingWriter(key, iv, parts)
    tar_digest = hashlib.sha1()
    gz = gzip_ng_threaded.open(encrypting, "wb", compresslevel=compresslevel, threads=threads)
    try:
        try:
            for chunk in tar_one_file(image_path, prefix):
                if encrypting.error is not None:
                    break
                tar_digest.update(chunk)
                gz.write(chunk)
        except BaseException:
            _abandon(gz)
            raise
        gz.close()
        if encrypting.error is not None:
            raise encrypting.error
        encrypting.finish()
        written = parts.finish()
    except BaseException as exc:
        parts.discard()
        if isinstance(exc, OSError):
            where = exc.filename or image_path
            raise BundleError(
                f"bundling {image_path} into {out_dir} failed at {where}: {exc.strerror or exc}; "
                "check free space and permissions"
            ) from exc
        raise
    return tar_digest.hexdigest(), _rename_parts(written, out_dir, prefix)


def _abandon(gz: Any) -> None:
    """Stop the compression threads without the final flush.

    After an interrupt (Ctrl-C) mid-write, zlib-ng's close() waits for queued work forever; the parts
    are discarded anyway, so stop the threads and mark the writer closed instead.
    """
    gz.raw.stop()
    gz.raw._closed = True  # zlib-ng has no abort(); without this, garbage collection would flush and wait


def part_filename(prefix: str, index: int, count: int) -> str:
    """`<prefix>.part.<i>` with i zero-padded to the digit count of the number of parts."""
    return f"{prefix}.part.{index:0{len(str(count))}d}"


def _rename_parts(written: list[WrittenPart], out_dir: Path, prefix: str) -> list[WrittenPart]:
    # Parts of an earlier bundle with the same prefix would be mistaken for this bundle's.
    stale = re.compile(re.escape(prefix) + r"\.part\.\d+")
    for old in out_dir.iterdir():
        if stale.fullmatch(old.name):
            old.unlink()
    final = []
    for index, part in enumerate(written):
        path = out_dir / part_filename(prefix, index, len(written))
        os.replace(part.path, path)
        final.append(WrittenPart(path, part.size, part.digest))
    return final


def bundle_image(
    image_path: Path | str,
    out_dir: Path | str,
    *,
    prefix: str = "image",
    user_id: str,
    user_cert_pem: bytes | str,
    user_private_key_pem: bytes | str,
    ec2_cert_pem: bytes | str,
    arch: str = "x86_64",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mappings: Mapping[str, str] | Iterable[BlockDeviceMapping] | None = None,
    ancestry: Iterable[str] = (),
    key: bytes | None = None,
    iv: bytes | None = None,
    part_size: int = PART_SIZE,
    compresslevel: int = COMPRESS_LEVEL,
    threads: int | None = None,
    bundler: Bundler | None = None,
) -> Manifest:
    """Bundle an image into `<prefix>.part.NN` files and a signed `<prefix>.manifest.xml`."""
    image_path, out_dir = Path(image_path), Path(out_dir)
    _check_name(prefix)
    account = user_id.replace("-", "")
    if not _USER_ID.fullmatch(account):
        raise BundleError(f"user_id {user_id!r} must be the 12-digit AWS account number")
    if arch not in ARCHITECTURES:
        raise BundleError(f"arch {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    for name, value, kind in (("kernel_id", kernel_id, "aki"), ("ramdisk_id", ramdisk_id, "ari")):
        if value is not None and not re.fullmatch(rf"{kind}-[0-9a-f]{{8}}([0-9a-f]{{9}})?", value):
            raise BundleError(f"{name} {value!r} is not an {kind}- image id (e.g. {kind}-1a2b3c4d)")
    if part_size < 1:
        raise BundleError(f"part_size must be positive, got {part_size}")
    if not image_path.is_file():
        raise BundleError(f"image {image_path} does not exist or is not a file")
    if not out_dir.is_dir():
        raise BundleError(f"output directory {out_dir} does not exist; create it first")
    user_cert = load_certificate(user_cert_pem)
    ec2_cert = load_certificate(ec2_cert_pem)
    private_key = load_private_key(user_private_key_pem)
    # A bundle signed with a key that does not match the certificate could never be verified.
    check_key_matches_certificate(private_key, user_cert)
    aes_key, aes_iv = _random_or_given(key, "key"), _random_or_given(iv, "IV")
    # The format encrypts the hex text of key and IV, not the raw bytes.
    key_hex, iv_hex = aes_key.hex().encode("ascii"), aes_iv.hex().encode("ascii")

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
    unsigned = Manifest(
        name=prefix,
        user=account,
        architecture=arch,
        digest=digest,
        size=image_path.stat().st_size,
        bundled_size=sum(p.size for p in parts),
        keys=EncryptedKeys(
            user_encrypted_key=encrypt_for_certificate(user_cert, key_hex).hex(),
            ec2_encrypted_key=encrypt_for_certificate(ec2_cert, key_hex).hex(),
            user_encrypted_iv=encrypt_for_certificate(user_cert, iv_hex).hex(),
            ec2_encrypted_iv=encrypt_for_certificate(ec2_cert, iv_hex).hex(),
        ),
        parts=tuple(ManifestPart(i, p.path.name, p.digest) for i, p in enumerate(parts)),
        signature="",
        block_device_mappings=_mappings(block_device_mappings, arch),
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        product_codes=tuple(product_codes),
        ancestry=tuple(ancestry),
        bundler=bundler or Bundler(),
    )
    manifest = sign_manifest(unsigned, private_key)
    manifest_path = out_dir / f"{prefix}.manifest.xml"
    temp = manifest_path.with_name(f".{manifest_path.name}.tmp")
    temp.write_text(manifest.xml, encoding="utf-8")
    os.replace(temp, manifest_path)
    return manifest
