"""Build hostile bundles for the security tests: any tar or gzip stream under a valid signature."""

from __future__ import annotations

import gc
import hashlib
import os
import time
import zlib
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amidsl.bundle import bundle_image
from amidsl.bundle.errors import ManifestParseError
from amidsl.bundle.keys import encrypt_for_certificate, load_certificate, load_private_key
from amidsl.bundle.manifest import EncryptedKeys, Manifest, ManifestPart, parse_manifest, sign_manifest
from tests.bundle.conftest import Identity, make_identity

__all__ = ["Identity", "make_identity"]  # the bundle tests' identities, shared


def bundle_bytes(directory: Path, data: bytes, user: Identity, ec2: Identity, prefix: str = "image") -> Path:
    """Bundle data as an image named prefix into directory with the real bundler; return the manifest."""
    image = directory / f"{prefix}.source"
    image.write_bytes(data)
    bundle_image(
        image,
        directory,
        prefix=prefix,
        user_id="123456789012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        part_size=4096,
    )
    image.unlink()
    return directory / f"{prefix}.manifest.xml"


def tar_header(name: bytes, size: int, typeflag: bytes = b"0", sparse: bytes = b"") -> bytes:
    """A 512-byte old-GNU tar header with a valid checksum (size in GNU base-256 when large)."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:124] = b"0000000\x00" * 2
    block[124:136] = b"%011o\x00" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    block[136:148] = b"00000000000\x00"
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = b"ustar  \x00"
    block[386 : 386 + len(sparse)] = sparse
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def plain_tar(name: bytes, data: bytes) -> bytes:
    """A tar stream of one regular file, ended by two zero blocks."""
    return tar_header(name, len(data)) + data + b"\x00" * (-len(data) % 512) + b"\x00" * 1024


def craft_bundle(
    directory: Path,
    user: Identity,
    ec2: Identity,
    tar: bytes = b"",
    *,
    gzip_stream: bytes | None = None,
    **fields: object,
) -> Path:
    """Encrypt a tar stream (or a ready gzip stream) into one part under a manifest the user signed."""
    if gzip_stream is None:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        gzip_stream = compressor.compress(tar) + compressor.flush()
    key, iv = os.urandom(16), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padder.update(gzip_stream) + padder.finalize()) + encryptor.finalize()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "image.part.0").write_bytes(encrypted)
    user_cert, ec2_cert = load_certificate(user.cert_pem), load_certificate(ec2.cert_pem)
    key_hex, iv_hex = key.hex().encode(), iv.hex().encode()
    manifest = Manifest(
        name="image",
        user="123456789012",
        architecture="x86_64",
        digest=hashlib.sha1(tar).hexdigest(),
        size=len(tar),
        bundled_size=len(encrypted),
        keys=EncryptedKeys(
            user_encrypted_key=encrypt_for_certificate(user_cert, key_hex).hex(),
            ec2_encrypted_key=encrypt_for_certificate(ec2_cert, key_hex).hex(),
            user_encrypted_iv=encrypt_for_certificate(user_cert, iv_hex).hex(),
            ec2_encrypted_iv=encrypt_for_certificate(ec2_cert, iv_hex).hex(),
        ),
        parts=(ManifestPart(0, "image.part.0", hashlib.sha1(encrypted).hexdigest()),),
        signature="",
    )
    signed = sign_manifest(replace(manifest, **fields), load_private_key(user.key_pem))
    (directory / "image.manifest.xml").write_text(signed.xml)
    return directory / "image.manifest.xml"


def parse_seconds(text: str) -> float:
    """CPU seconds spent parsing text (best of three), whether it parses or is refused.

    The garbage collector is paused while timing: its full passes walk every object of the test
    process, so their cost depends on what other tests left behind, not on the parser. (No collection
    first either: late in a run, each takes a tenth of a second, for nothing the timing needs.)
    """
    best = float("inf")
    gc.disable()
    try:
        for _ in range(3):
            start = time.process_time()
            with suppress(ManifestParseError):
                parse_manifest(text)
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best
