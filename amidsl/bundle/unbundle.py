"""Unbundle: decrypt the AES key with a private key, then parts → AES → gunzip → tar → image."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import zlib_ng

from amidsl.bundle.errors import (
    BundledSizeMismatchError,
    BundleError,
    CorruptBundleError,
    ImageDigestMismatchError,
    ManifestParseError,
    WrongPrivateKeyError,
)
from amidsl.bundle.keys import decrypt_with_key, load_private_key
from amidsl.bundle.manifest import Manifest, read_manifest
from amidsl.bundle.untar import CHUNK, copy_member, read_end, read_member
from amidsl.bundle.verify import check_part_digests, check_part_list, check_signature_of

# What a damaged or wrongly decrypted stream raises while it is gunzipped and untarred.
_CORRUPT_STREAM = (EOFError, zlib_ng.error)
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


def decrypt_keys(manifest: Manifest, private_key_pem: bytes | str, key_checked: bool = False) -> BundleKeys:
    """Recover key and IV with the user's private key (or EC2's, which opens the EC2 copy);
    `key_checked`: the key was checked already (see load_private_key)."""
    private_key = load_private_key(private_key_pem, checked=key_checked)
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
    remaining = manifest.bundled_size
    for part in manifest.parts:
        with open(parts_dir / part.filename, "rb") as f:
            # A part that grew since it was checked must not feed more than bundled_size bytes.
            while chunk := f.read(min(CHUNK, remaining + 1)):
                if len(chunk) > remaining:
                    raise BundledSizeMismatchError(
                        f"the parts of bundle {manifest.name!r} hold more than the manifest's "
                        f"bundled_size ({manifest.bundled_size} bytes); copy the parts again"
                    )
                remaining -= len(chunk)
                yield unpadder.update(decryptor.update(chunk))
    try:
        yield unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise CorruptBundleError(
            f"the last part of bundle {manifest.name!r} does not decrypt to valid padding: "
            "the key does not fit or the parts are damaged"
        ) from None


class _Gunzip(io.RawIOBase):
    """Gunzip an iterator of byte chunks, never inflating more than one read asked for.

    A gzip reader that inflates a whole input buffer at once turns 1 MiB of compressed zeros into
    1 GiB of memory; bounding each inflate by the caller's buffer keeps a gzip bomb small.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._inflater = zlib_ng.decompressobj(31)  # 31: a gzip wrapper, its CRC and size checked
        self._input = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while True:
            data = self._inflater.decompress(self._input, len(buffer))
            self._input = self._inflater.unconsumed_tail
            if self._inflater.eof and self._inflater.unused_data:
                # Another gzip member follows (a concatenated stream): inflate it too.
                self._input = self._inflater.unused_data
                self._inflater = zlib_ng.decompressobj(31)
            if data:
                buffer[: len(data)] = data
                return len(data)
            if self._input:
                continue
            try:
                self._input = next(self._chunks)
            except StopIteration:
                if not self._inflater.eof:
                    raise EOFError("the gzip stream ends before its end marker") from None
                return 0


class _HashingReader(io.RawIOBase):
    """Passes reads through while computing the SHA-1 of every byte read."""

    def __init__(self, source: io.RawIOBase) -> None:
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


def check_image_name(manifest: Manifest) -> str:
    """The manifest's image name, refused unless it is a plain file name (it names the output)."""
    name = manifest.name
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)
        or len(name.encode("utf-8", "surrogateescape")) > 255
    ):
        raise ManifestParseError(
            f"the manifest's image name {name!r} is not a plain file name; refusing to write it"
        )
    return name


def _restore_single_file(stream: _HashingReader, staging: Path, manifest: Manifest) -> Path:
    """Write the stream's one member into staging (0600, never through a link), checked against the
    manifest's name and size; then read the end of the archive."""
    name = check_image_name(manifest)
    try:
        member = read_member(stream)
        if member.name != name:
            raise CorruptBundleError(
                f"bundle {manifest.name!r} holds a file named {member.name!r}, not the manifest's "
                f"image name {name!r}; refusing to write it"
            )
        if member.size != manifest.size:
            raise CorruptBundleError(
                f"bundle {manifest.name!r} holds a {member.size}-byte image but the manifest's size "
                f"is {manifest.size}; the bundle is damaged or forged"
            )
        target = staging / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(target, flags, 0o600), "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            copy_member(stream, member, out)
        read_end(stream)
    except _CORRUPT_STREAM as exc:
        raise CorruptBundleError(
            f"bundle {manifest.name!r} does not decrypt to a gzip-compressed tar stream ({exc}); "
            "the key does not fit or the parts are damaged"
        ) from None
    except OSError as exc:
        raise BundleError(
            f"writing the image of bundle {manifest.name!r} into {staging.parent} failed: "
            f"{exc.strerror or exc}; check free space and permissions"
        ) from None
    return target


def place_file(restored: Path, target: Path) -> None:
    """Move the restored image to target, replacing a regular file but never a link or directory."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        kind = "a symbolic link" if target.is_symlink() else "not a regular file"
        raise BundleError(f"{target} exists and is {kind}; remove it or choose another destination")
    # rename() replaces a name without following it, so a link planted meanwhile is not written through.
    os.replace(restored, target)


def unbundle(
    manifest_path: Path | str,
    private_key_pem: bytes | str,
    out_dir: Path | str,
    *,
    parts_dir: Path | str | None = None,
    user_cert_pem: bytes | str | None = None,
    no_verify: bool = False,
    key_checked: bool = False,
) -> Path:
    """Restore a bundle's image into out_dir after checking its signature (unless no_verify),
    part digests, the manifest's sizes and the image digest (`key_checked`: see load_private_key)."""
    manifest_path, out_dir = Path(manifest_path), Path(out_dir)
    manifest = read_manifest(manifest_path)
    if user_cert_pem is not None:
        check_signature_of(manifest, user_cert_pem)
    elif not no_verify:
        raise BundleError(
            f"unbundling {manifest_path} checks the manifest's signature before decrypting: give the "
            "certificate of the user who bundled it (user_cert_pem, --cert), or skip the check "
            "with no_verify=True (--no-verify) if you trust the bundle's origin"
        )
    name = check_image_name(manifest)
    directory = Path(parts_dir) if parts_dir is not None else manifest_path.parent
    check_part_list(manifest, directory)
    check_part_digests(manifest, directory)
    keys = decrypt_keys(manifest, private_key_pem, key_checked)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Restore into a private directory first: a bad digest must not leave a plausible image behind.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".unbundle-") as staging:
        hashing = _HashingReader(_Gunzip(decrypted_chunks(manifest, keys, directory)))
        restored = _restore_single_file(hashing, Path(staging), manifest)
        digest = hashing.sha1.hexdigest()
        if digest != manifest.digest:
            raise ImageDigestMismatchError(
                f"the restored tar stream of bundle {manifest.name!r} has SHA-1 {digest}, "
                f"but the manifest says {manifest.digest}; the bundle is damaged, bundle again"
            )
        target = out_dir / name
        place_file(restored, target)
    return target
