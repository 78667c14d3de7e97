"""Unbundle: decrypt the AES key with a private key, then parts → AES → gunzip → tar → image."""

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import gzip_ng, zlib_ng

from amidsl.bundle.errors import (
    BundleError,
    CorruptBundleError,
    ImageDigestMismatchError,
    ManifestParseError,
    WrongPrivateKeyError,
)
from amidsl.bundle.keys import decrypt_with_key, load_private_key
from amidsl.bundle.manifest import Manifest, read_manifest
from amidsl.bundle.verify import check_part_digests, check_part_list, check_signature_of

CHUNK = 1024 * 1024
# What a damaged or wrongly decrypted stream raises while it is gunzipped and untarred.
_CORRUPT_STREAM = (tarfile.TarError, EOFError, gzip_ng.BadGzipFile, zlib_ng.error)
_KEY_TEXT = re.compile(rb"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class BundleKeys:
    """The bundle's AES-128 key and IV (raw bytes); never shown in reprs."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)


def _hex_field(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ManifestParseError(f"the manifest's {what} is not a hex string") from None


def decrypt_keys(manifest: Manifest, private_key_pem: bytes | str) -> BundleKeys:
    """Recover key and IV with the user's private key (or EC2's, which opens the EC2 copy)."""
    private_key = load_private_key(private_key_pem)
    k = manifest.keys
    for key_field, iv_field in (
        ("user_encrypted_key", "user_encrypted_iv"),
        ("ec2_encrypted_key", "ec2_encrypted_iv"),
    ):
        key_text = decrypt_with_key(private_key, _hex_field(getattr(k, key_field), key_field))
        iv_text = decrypt_with_key(private_key, _hex_field(getattr(k, iv_field), iv_field))
        # A wrong key may "decrypt" to random bytes (implicit rejection), never to 32 hex digits.
        if key_text and iv_text and _KEY_TEXT.fullmatch(key_text) and _KEY_TEXT.fullmatch(iv_text):
            return BundleKeys(bytes.fromhex(key_text.decode()), bytes.fromhex(iv_text.decode()))
    raise WrongPrivateKeyError(
        f"the private key opens neither the user's nor EC2's copy of bundle {manifest.name!r}'s "
        "AES key; use the private key of the certificate the image was bundled for"
    )


def decrypted_chunks(manifest: Manifest, keys: BundleKeys, parts_dir: Path) -> Iterator[bytes]:
    """Yield the gzip stream: the concatenated parts, AES-128-CBC decrypted and unpadded."""
    decryptor = Cipher(algorithms.AES(keys.key), modes.CBC(keys.iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    for part in manifest.parts:
        with open(parts_dir / part.filename, "rb") as f:
            while chunk := f.read(CHUNK):
                yield unpadder.update(decryptor.update(chunk))
    try:
        yield unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise CorruptBundleError(
            f"the last part of bundle {manifest.name!r} does not decrypt to valid padding: "
            "the key does not fit or the parts are damaged"
        ) from None


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]  # a view: no copy of the rest
        return n


class _HashingReader(io.RawIOBase):
    """Passes reads through while computing the SHA-1 of every byte read."""

    def __init__(self, source: io.BufferedIOBase) -> None:
        self._source, self.sha1, self.size = source, hashlib.sha1(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self._source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha1.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        """Read (and hash) whatever the tar reader left, e.g. the archive's record padding."""
        while self._source.read(CHUNK):
            pass


def _extract_single_file(tar_stream: io.RawIOBase, into: Path, manifest: Manifest) -> Path:
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|", bufsize=CHUNK) as archive:
            archive.copybufsize = CHUNK
            extracted: Path | None = None
            for position, member in enumerate(archive):
                if position > 0 or not member.isreg() or "/" in member.name.strip("/"):
                    raise CorruptBundleError(
                        f"bundle {manifest.name!r} must hold exactly one plain image file, "
                        f"found member {member.name!r}"
                    )
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extract(member, path=into, set_attrs=False, **extra)
                extracted = into / member.name.strip("/")
    except _CORRUPT_STREAM as exc:
        raise CorruptBundleError(
            f"bundle {manifest.name!r} does not decrypt to a gzip-compressed tar stream ({exc}); "
            "the key does not fit or the parts are damaged"
        ) from None
    except OSError as exc:
        raise BundleError(
            f"writing the image of bundle {manifest.name!r} into {into.parent} failed: "
            f"{exc.strerror or exc}; check free space and permissions"
        ) from None
    if extracted is None:
        raise CorruptBundleError(f"bundle {manifest.name!r} holds an empty tar archive")
    return extracted


def unbundle(
    manifest_path: Path | str,
    private_key_pem: bytes | str,
    out_dir: Path | str,
    *,
    parts_dir: Path | str | None = None,
    user_cert_pem: bytes | str | None = None,
) -> Path:
    """Restore a bundle's image file into out_dir, checking part digests and the image digest."""
    manifest_path, out_dir = Path(manifest_path), Path(out_dir)
    manifest = read_manifest(manifest_path)
    if user_cert_pem is not None:
        check_signature_of(manifest, user_cert_pem)
    directory = Path(parts_dir) if parts_dir is not None else manifest_path.parent
    check_part_list(manifest, directory)
    check_part_digests(manifest, directory)
    keys = decrypt_keys(manifest, private_key_pem)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Extract into a private directory first: a bad digest must not leave a plausible image behind.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".unbundle-") as staging:
        hashing = _HashingReader(
            gzip_ng.GzipNGFile(fileobj=_ChunkReader(decrypted_chunks(manifest, keys, directory)))
        )
        try:
            extracted = _extract_single_file(hashing, Path(staging), manifest)
            hashing.drain()
        except _CORRUPT_STREAM as exc:
            raise CorruptBundleError(
                f"bundle {manifest.name!r} is not a complete gzip stream ({exc}); the parts are damaged"
            ) from None
        digest = hashing.sha1.hexdigest()
        if digest != manifest.digest:
            raise ImageDigestMismatchError(
                f"the restored tar stream of bundle {manifest.name!r} has SHA-1 {digest}, "
                f"but the manifest says {manifest.digest}; the bundle is damaged, bundle again"
            )
        target = out_dir / extracted.name
        shutil.move(extracted, target)
    return target
