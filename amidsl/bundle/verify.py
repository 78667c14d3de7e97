"""Verify a bundle against its manifest: signature, part list, sizes and part digests."""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amidsl.bundle.errors import (
    BundledSizeMismatchError,
    ManifestParseError,
    MissingPartError,
    PartCountMismatchError,
    PartDigestMismatchError,
    PartNameError,
    PartsReorderedError,
)
from amidsl.bundle.keys import check_signature, load_certificate
from amidsl.bundle.manifest import MANIFEST_VERSION, Manifest, read_manifest
from amidsl.iterate import zip_strict

_HEX = re.compile(r"^[0-9a-f]+$")


def file_sha1(path: Path) -> str:
    """Hex SHA-1 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def check_signature_of(manifest: Manifest, user_cert_pem: bytes | str) -> None:
    """Raise unless the manifest's signature is valid for the user's certificate."""
    if not _HEX.fullmatch(manifest.signature) or len(manifest.signature) % 2:
        raise ManifestParseError("the manifest's <signature> is not a hex string")
    check_signature(
        load_certificate(user_cert_pem),
        manifest.signed_text.encode("utf-8"),
        bytes.fromhex(manifest.signature),
    )


def check_part_entries(manifest: Manifest) -> None:
    """Raise unless the manifest's part list is well formed: count, order, plain unique names, digests."""
    if manifest.version != MANIFEST_VERSION:
        raise ManifestParseError(
            f"manifest version {manifest.version!r} is not supported (expected {MANIFEST_VERSION})"
        )
    parts = manifest.parts
    if not parts or manifest.parts_count != len(parts):
        raise PartCountMismatchError(
            f"the manifest says count='{manifest.parts_count}' but lists {len(parts)} parts; "
            "the manifest is damaged, bundle the image again"
        )
    for position, part in enumerate(parts):
        if part.index != position:
            raise PartNameError(
                f"part {part.filename!r} has index {part.index} at position {position}; "
                "the manifest's part list is out of order"
            )
        if not part.filename or "/" in part.filename or part.filename in (".", ".."):
            raise PartNameError(
                f"part {part.index} has file name {part.filename!r}, which is not a plain file "
                "name; refusing to read outside the bundle directory"
            )
        if not _HEX.fullmatch(part.digest) or len(part.digest) != 40:
            raise ManifestParseError(f"part {part.filename!r} has no 40-digit hex SHA-1 digest")
    names = [p.filename for p in parts]
    if len(set(names)) != len(names):
        raise PartNameError("the manifest lists the same part file name twice")


def check_part_list(manifest: Manifest, parts_dir: Path) -> None:
    """Raise unless the manifest's part list is well formed and matches the part files present."""
    check_part_entries(manifest)
    parts = manifest.parts
    if not parts_dir.is_dir():
        raise MissingPartError(f"parts directory {parts_dir} is missing; pass where the parts are")
    names = [p.filename for p in parts]
    listed = set(names)
    pattern = re.compile(re.escape(manifest.name) + r"\.part\.\d+")
    extra = sorted(f for f in os.listdir(parts_dir) if pattern.fullmatch(f) and f not in listed)
    if extra:
        raise PartCountMismatchError(
            f"{parts_dir} holds part files the manifest does not list ({', '.join(extra)}); "
            f"the manifest lists {len(parts)} parts: remove stale parts or use the right manifest"
        )
    missing = [name for name in names if not (parts_dir / name).is_file()]
    if missing:
        raise MissingPartError(
            f"{len(missing)} of {len(parts)} part files are missing from {parts_dir}: "
            f"{', '.join(missing)}; copy or download them again"
        )
    total = sum((parts_dir / name).stat().st_size for name in names)
    if total != manifest.bundled_size:
        raise BundledSizeMismatchError(
            f"the part files in {parts_dir} hold {total} bytes but the manifest's bundled_size is "
            f"{manifest.bundled_size}; a part is truncated or extended, copy the parts again"
        )


def check_part_digests(manifest: Manifest, parts_dir: Path) -> None:
    """Raise unless every part file's SHA-1 equals the manifest's digest for it."""
    paths = [parts_dir / p.filename for p in manifest.parts]
    # hashlib releases the GIL, so threads hash parts on every core.
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        actual = list(pool.map(file_sha1, paths))
    expected_owner = {p.digest: p.filename for p in manifest.parts}
    wrong = [(p, a) for p, a in zip_strict(manifest.parts, actual) if p.digest != a]
    if not wrong:
        return
    swapped = [(p.filename, expected_owner[a]) for p, a in wrong if a in expected_owner]
    if swapped and len(swapped) == len(wrong):
        pairs = ", ".join(f"{name} holds {owner}'s content" for name, owner in swapped)
        raise PartsReorderedError(
            f"part files in {parts_dir} are in the wrong order: {pairs}; restore the original file names"
        )
    names = ", ".join(p.filename for p, _ in wrong)
    raise PartDigestMismatchError(
        f"SHA-1 of part file(s) {names} in {parts_dir} differs from the manifest: the part was "
        "corrupted in transit or on disk; copy or download it again"
    )


def verify_bundle(
    manifest_path: Path | str, user_cert_pem: bytes | str, *, parts_dir: Path | str | None = None
) -> Manifest:
    """Check a bundle's signature, part list, sizes and digests; return its manifest."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    check_signature_of(manifest, user_cert_pem)
    directory = Path(parts_dir) if parts_dir is not None else manifest_path.parent
    check_part_list(manifest, directory)
    check_part_digests(manifest, directory)
    return manifest
