"""The bundle format's commands: bundle-image, verify-bundle, unbundle, image-ls, migrate-manifest.

Thin by design: call the library, print the result. Every problem the library reports becomes a
CommandError (exit status 2), printed without a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from amidsl.bundle.bundle import (
    account_number,
    check_image_file,
    check_image_id,
    check_prefix,
)
from amidsl.bundle.bundle import bundle_image as bundle_image_file
from amidsl.bundle.errors import BundleError
from amidsl.bundle.keys import SigningKeys, describe_certificate, load_certificate, load_private_key
from amidsl.bundle.ls import describe_layout, list_image, listing_line
from amidsl.bundle.manifest import read_manifest, write_manifest
from amidsl.bundle.migrate import migrate_manifest as migrate
from amidsl.bundle.unbundle import unbundle as unbundle_manifest
from amidsl.bundle.verify import verify_bundle as verify_manifest
from amidsl.cli.table import STANDARD_OUTPUT, CommandError
from amidsl.strategies.ec2_certificate import (
    Ec2CertificateError,
    certificate_file,
    certificate_from_directory,
)

T = TypeVar("T")
P = TypeVar("P")


def _read_pem(path: str, what: str, check: Callable[[bytes], object]) -> bytes:
    """Read a PEM file and check that it parses; errors name the file, never its content."""
    pem, _ = _load_pem(path, what, check)
    return pem


def _load_pem(path: str, what: str, load: Callable[[bytes], P]) -> tuple[bytes, P]:
    """Read and parse a PEM file: its bytes and what it holds; errors name the file, never its content."""
    file = Path(path)
    try:
        pem = file.read_bytes()
    except OSError as exc:
        message = f"cannot read {what} file {file}: {exc.strerror}; check the path"
        raise CommandError(message) from None
    try:
        loaded = load(pem)
    except BundleError as exc:
        raise CommandError(f"{what} file {file}: {exc}") from None
    return pem, loaded


def _run(action: Callable[[], T]) -> T:
    """Run a library call, turning its errors into a clean exit with the library's message."""
    try:
        return action()
    except BundleError as exc:
        raise CommandError(f"error: {exc}") from None
    except OSError as exc:
        raise CommandError(f"error: {exc.filename}: {exc.strerror}") from None


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _mappings(value: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in _split(value):
        virtual, sep, device = (part.strip() for part in item.partition("="))
        if not sep or not virtual or not device:
            raise CommandError(
                f"--block-device-mapping: {item!r} must look like virtual=device, e.g. root=/dev/sda1"
            )
        pairs[virtual] = device
    return pairs


def _checked(check: Callable[[], T]) -> T:
    """Run an argument check of the library; what it refuses is a usage error naming the option."""
    try:
        return check()
    except BundleError as exc:
        raise CommandError(str(exc)) from None


def _missing_directories(path: Path) -> list[Path]:
    """The directories mkdir(parents=True) would create for `path`, outermost first."""
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def bundle_image(
    *,
    image: str,
    cert: str,
    privkey: str,
    user: str,
    ec2cert: str,
    destination: str,
    prefix: str,
    arch: str,
    kernel: str | None,
    ramdisk: str | None,
    product_codes: str,
    block_device_mapping: str,
    ancestry: str,
) -> None:
    """Bundle an image file into encrypted 10 MiB parts and a signed manifest."""
    # Every argument is checked before anything is made: a refused run leaves no destination behind.
    _checked(lambda: check_prefix(prefix, "--prefix"))
    _checked(lambda: account_number(user, "--user"))
    _checked(lambda: check_image_id(kernel, "aki", "--kernel"))
    _checked(lambda: check_image_id(ramdisk, "ari", "--ramdisk"))
    mappings = _mappings(block_device_mapping)
    _checked(lambda: check_image_file(image, "--image"))
    _, user_cert = _load_pem(cert, "certificate", load_certificate)
    _, user_key = _load_pem(privkey, "private key", load_private_key)
    _, ec2_cert = _load_pem(ec2cert, "EC2 certificate", load_certificate)
    signing = _run(lambda: SigningKeys(user_cert, user_key, ec2_cert))
    out_dir = Path(destination)
    if out_dir.exists() and not out_dir.is_dir():
        raise CommandError(f"--destination {destination}: is a file, not a directory; give a directory")
    created = _missing_directories(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--destination {destination}: cannot create it ({exc.strerror})") from None
    try:
        manifest = _run(
            lambda: bundle_image_file(
                image,
                out_dir,
                prefix=prefix,
                user_id=user,
                signing=signing,
                arch=arch,
                kernel_id=kernel,
                ramdisk_id=ramdisk,
                product_codes=_split(product_codes),
                block_device_mappings=mappings,
                ancestry=_split(ancestry),
            )
        )
    except BaseException:
        for directory in reversed(created):  # nothing half-done: the directories made for this run go
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    manifest_path = out_dir / f"{prefix}.manifest.xml"
    count = len(manifest.parts)
    print(f"bundled {image} ({manifest.size} bytes) into {count} part{'s' if count > 1 else ''}")
    print(f"manifest: {manifest_path}")


def verify_bundle(*, manifest: str, cert: str, parts_dir: str | None) -> None:
    """Check a bundle's signature, part list, sizes and part digests."""
    user_cert, signer = _load_pem(cert, "certificate", load_certificate)
    checked = _run(lambda: verify_manifest(manifest, user_cert, parts_dir=parts_dir))
    print(
        f"OK: {manifest}: signed by {describe_certificate(signer)}, "
        f"{len(checked.parts)} parts, {checked.bundled_size} bytes, every part digest matches"
    )


def unbundle(
    *,
    manifest: str,
    privkey: str,
    destination: str,
    parts_dir: str | None,
    cert: str | None,
    no_verify: bool,
) -> None:
    """Check a bundle's signature, then decrypt and unpack it, checking part and image digests."""
    key = _read_pem(privkey, "private key", load_private_key)
    if not cert and not no_verify:
        raise CommandError(
            "unbundle checks the manifest's signature before decrypting: give --cert (the certificate "
            "of the user who bundled it), or --no-verify to skip the check"
        )
    user_cert = _read_pem(cert, "certificate", load_certificate) if cert else None
    restored = _run(
        lambda: unbundle_manifest(
            manifest, key, destination, parts_dir=parts_dir, user_cert_pem=user_cert, no_verify=no_verify
        )
    )
    print(f"restored {restored}")


def image_ls(*, image: str) -> None:
    """List an image's layout (partition table, boot loader), then its files, without mounting it."""
    entries = _run(lambda: list_image(image))
    for line in describe_layout(image):
        print(f"# {line}")
    for entry in entries:
        print(listing_line(entry))


def migrate_manifest(
    *,
    manifest: str,
    cert: str,
    privkey: str,
    region: str,
    ec2cert: str | None,
    ec2_certificates: str | None,
    output: str | None,
    kernel: str | None,
    ramdisk: str | None,
) -> None:
    """Encrypt a bundle's key and IV for another region's EC2 certificate and sign the manifest again."""
    if bool(ec2cert) == bool(ec2_certificates):
        raise CommandError(
            f"say which certificate EC2 decrypts with in {region}: --ec2cert FILE (that certificate), or "
            "--ec2-certificates DIR (a directory holding the ec2-ami-tools' etc/ec2/amitools certificates, "
            f"of which {certificate_file(region)} is {region}'s, or the ec2-ami-tools zip itself)"
        )
    user_cert = _read_pem(cert, "certificate", load_certificate)
    user_key = _read_pem(privkey, "private key", load_private_key)
    if ec2cert:
        ec2_cert: bytes | str = _read_pem(ec2cert, "EC2 certificate", load_certificate)
    else:
        try:
            ec2_cert = certificate_from_directory(ec2_certificates or "", region)
        except Ec2CertificateError as err:
            raise CommandError(f"--ec2-certificates: {err}") from None
    migrated = _run(
        lambda: migrate(
            read_manifest(manifest),
            user_private_key_pem=user_key,
            user_cert_pem=user_cert,
            ec2_cert_pem=ec2_cert,
            kernel_id=kernel,
            ramdisk_id=ramdisk,
        )
    )
    to_stdout = output == STANDARD_OUTPUT
    if to_stdout:
        sys.stdout.write(migrated.xml)
    else:
        _run(lambda: write_manifest(output or manifest, migrated))
    print(
        f"migrated {manifest} for {region}: EC2's copy of key and IV re-encrypted, signed again "
        f"({len(migrated.parts)} parts unchanged); "
        + ("wrote it to standard output" if to_stdout else f"wrote {output or manifest}"),
        file=sys.stderr if to_stdout else sys.stdout,
    )
