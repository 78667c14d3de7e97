"""invoke tasks for the bundle format: bundle-image, verify-bundle, unbundle, image-ls.

Thin by design: parse options, call the library, print the result. Every problem the library
reports becomes `Exit(message, code=2)`, which invoke prints without a traceback.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from invoke import Context, task
from invoke.exceptions import Exit

from amidsl.bundle.bundle import bundle_image as bundle_image_file
from amidsl.bundle.errors import BundleError
from amidsl.bundle.keys import describe_certificate, load_certificate, load_private_key
from amidsl.bundle.ls import list_image, printable
from amidsl.bundle.unbundle import unbundle as unbundle_manifest
from amidsl.bundle.verify import verify_bundle as verify_manifest

USAGE_ERROR = 2
T = TypeVar("T")


def _read_pem(path: str, what: str, check: Callable[[bytes], object]) -> bytes:
    """Read a PEM file and check that it parses; errors name the file, never its content."""
    file = Path(path)
    try:
        pem = file.read_bytes()
    except OSError as exc:
        message = f"cannot read {what} file {file}: {exc.strerror}; check the path"
        raise Exit(message, USAGE_ERROR) from None
    try:
        check(pem)
    except BundleError as exc:
        raise Exit(f"{what} file {file}: {exc}", USAGE_ERROR) from None
    return pem


def _run(action: Callable[[], T]) -> T:
    """Run a library call, turning its errors into a clean exit with the library's message."""
    try:
        return action()
    except BundleError as exc:
        raise Exit(f"error: {exc}", USAGE_ERROR) from None
    except OSError as exc:
        raise Exit(f"error: {exc.filename}: {exc.strerror}", USAGE_ERROR) from None


def _require(**options: str | None) -> None:
    """Exit naming every required option that was not given."""
    missing = [f"--{name.replace('_', '-')}" for name, value in options.items() if not value]
    if missing:
        raise Exit(f"missing required option(s): {', '.join(missing)}", USAGE_ERROR)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _mappings(value: str) -> dict[str, str] | None:
    if not value:
        return None
    pairs = {}
    for item in _split(value):
        virtual, sep, device = item.partition("=")
        if not sep or not virtual or not device:
            raise Exit(
                f"block device mapping {item!r} must look like virtual=device, e.g. root=/dev/sda1",
                USAGE_ERROR,
            )
        pairs[virtual] = device
    return pairs


@task(
    positional=[],
    auto_shortflags=False,
    help={
        "image": "the image file to bundle",
        "cert": "PEM X.509 certificate of the user (the manifest's signer)",
        "privkey": "PEM RSA private key of that certificate (signs the manifest; never printed)",
        "user": "12-digit AWS account number (dashes allowed)",
        "ec2cert": "PEM X.509 certificate of EC2 (it decrypts the bundle when registering)",
        "destination": "directory for the parts and manifest (default: current directory)",
        "prefix": "file name prefix of the parts and manifest (default: image)",
        "arch": "architecture: x86_64 (default), i386 or arm64",
        "kernel": "kernel id (aki-…) to record in the manifest",
        "ramdisk": "ramdisk id (ari-…) to record in the manifest",
        "product_codes": "comma-separated product codes",
        "block_device_mapping": "comma-separated virtual=device pairs (default: ec2-bundle-vol's)",
        "ancestry": "comma-separated ancestor AMI ids",
    },
)
def bundle_image(
    c: Context,
    image: str | None = None,
    cert: str | None = None,
    privkey: str | None = None,
    user: str | None = None,
    ec2cert: str | None = None,
    destination: str = ".",
    prefix: str = "image",
    arch: str = "x86_64",
    kernel: str | None = None,
    ramdisk: str | None = None,
    product_codes: str = "",
    block_device_mapping: str = "",
    ancestry: str = "",
) -> None:
    """Bundle an image file into encrypted 10 MiB parts and a signed manifest."""
    _require(image=image, cert=cert, privkey=privkey, user=user, ec2cert=ec2cert)
    user_cert = _read_pem(cert, "certificate", load_certificate)
    user_key = _read_pem(privkey, "private key", load_private_key)
    ec2_cert = _read_pem(ec2cert, "EC2 certificate", load_certificate)
    manifest = _run(
        lambda: bundle_image_file(
            image,
            destination,
            prefix=prefix,
            user_id=user,
            user_cert_pem=user_cert,
            user_private_key_pem=user_key,
            ec2_cert_pem=ec2_cert,
            arch=arch,
            kernel_id=kernel,
            ramdisk_id=ramdisk,
            product_codes=_split(product_codes),
            block_device_mappings=_mappings(block_device_mapping),
            ancestry=_split(ancestry),
        )
    )
    manifest_path = Path(destination) / f"{prefix}.manifest.xml"
    count = len(manifest.parts)
    print(f"bundled {image} ({manifest.size} bytes) into {count} part{'s' if count > 1 else ''}")
    print(f"manifest: {manifest_path}")


@task(
    positional=[],
    auto_shortflags=False,
    help={
        "manifest": "the bundle's manifest file (<prefix>.manifest.xml)",
        "cert": "PEM X.509 certificate of the user who signed the manifest",
        "parts_dir": "directory holding the parts (default: the manifest's directory)",
    },
)
def verify_bundle(
    c: Context, manifest: str | None = None, cert: str | None = None, parts_dir: str | None = None
) -> None:
    """Check a bundle's signature, part list, sizes and part digests."""
    _require(manifest=manifest, cert=cert)
    user_cert = _read_pem(cert, "certificate", load_certificate)
    checked = _run(lambda: verify_manifest(manifest, user_cert, parts_dir=parts_dir))
    print(
        f"OK: {manifest}: signed by {describe_certificate(load_certificate(user_cert))}, "
        f"{len(checked.parts)} parts, {checked.bundled_size} bytes, every part digest matches"
    )


@task(
    positional=[],
    auto_shortflags=False,
    help={
        "manifest": "the bundle's manifest file (<prefix>.manifest.xml)",
        "privkey": "PEM RSA private key of the user (or of EC2); never printed",
        "destination": "directory to restore the image into (default: current directory)",
        "parts_dir": "directory holding the parts (default: the manifest's directory)",
        "cert": "PEM X.509 certificate of the user who signed the manifest (checked before decrypting)",
        "no_verify": "skip the signature check when you have no certificate (trust the bundle's origin)",
    },
)
def unbundle(
    c: Context,
    manifest: str | None = None,
    privkey: str | None = None,
    destination: str = ".",
    parts_dir: str | None = None,
    cert: str | None = None,
    no_verify: bool = False,
) -> None:
    """Check a bundle's signature, then decrypt and unpack it, checking part and image digests."""
    _require(manifest=manifest, privkey=privkey)
    key = _read_pem(privkey, "private key", load_private_key)
    if not cert and not no_verify:
        raise Exit(
            "unbundle checks the manifest's signature before decrypting: give --cert (the certificate "
            "of the user who bundled it), or --no-verify to skip the check",
            USAGE_ERROR,
        )
    user_cert = _read_pem(cert, "certificate", load_certificate) if cert else None
    restored = _run(
        lambda: unbundle_manifest(
            manifest, key, destination, parts_dir=parts_dir, user_cert_pem=user_cert, no_verify=no_verify
        )
    )
    print(f"restored {restored}")


@task(positional=[], auto_shortflags=False, help={"image": "an ext2/3/4 image file"})
def image_ls(c: Context, image: str | None = None) -> None:
    """List the files inside an image without mounting it (mode, owner, size, path)."""
    _require(image=image)
    for entry in _run(lambda: list_image(image)):
        kind = {"dir": "d", "symlink": "l", "fifo": "p", "socket": "s", "char": "c", "block": "b"}
        # Names come from the image: escape control characters so none can rewrite the terminal.
        link = f" -> {printable(entry.target)}" if entry.target is not None else ""
        print(
            f"{kind.get(entry.type, '-')}{entry.mode:04o} {entry.uid:>6} {entry.gid:>6} "
            f"{entry.size:>12} {printable(entry.path)}{link}"
        )
