"""The bundle manifest (version 2007-10-10): typed data, XML rendering, parsing and signing."""

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from amidsl import __version__
from amidsl.bundle.errors import ManifestParseError
from amidsl.bundle.keys import sign_sha1

MANIFEST_VERSION = "2007-10-10"
CIPHER_ALGORITHM = "AES-128-CBC"
DIGEST_ALGORITHM = "SHA1"
XML_DECLARATION = "<?xml version='1.0'?>"


@dataclass(frozen=True)
class Bundler:
    """Which program wrote the bundle."""

    name: str = "amidsl"
    version: str = __version__
    release: str = "0"


@dataclass(frozen=True)
class BlockDeviceMapping:
    """One manifest mapping of a virtual device name (ami, root, ephemeral0…) to a device."""

    virtual: str
    device: str


@dataclass(frozen=True)
class ManifestPart:
    """One part file of a bundle: its position, file name and hex SHA-1."""

    index: int
    filename: str
    digest: str


@dataclass(frozen=True)
class EncryptedKeys:
    """The AES key and IV, each RSA-encrypted for the user and for EC2, hex-encoded."""

    user_encrypted_key: str
    ec2_encrypted_key: str
    user_encrypted_iv: str
    ec2_encrypted_iv: str


@dataclass(frozen=True)
class Manifest:
    """A parsed or freshly built manifest; signed_text is exactly what the signature covers."""

    name: str
    user: str
    architecture: str
    digest: str
    size: int
    bundled_size: int
    keys: EncryptedKeys
    parts: tuple[ManifestPart, ...]
    signature: str
    block_device_mappings: tuple[BlockDeviceMapping, ...] = ()
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    product_codes: tuple[str, ...] = ()
    ancestry: tuple[str, ...] = ()
    bundler: Bundler = field(default_factory=Bundler)
    version: str = MANIFEST_VERSION
    image_type: str = "machine"
    digest_algorithm: str = DIGEST_ALGORITHM
    cipher_algorithm: str = CIPHER_ALGORITHM
    parts_count: int = -1
    signed_text: str = field(default="", repr=False)
    xml: str = field(default="", repr=False)


# ec2-bundle-vol's defaults, written when the caller gives no mappings.
DEFAULT_BLOCK_DEVICE_MAPPINGS: dict[str, tuple[BlockDeviceMapping, ...]] = {
    "i386": (
        BlockDeviceMapping("ami", "sda1"),
        BlockDeviceMapping("ephemeral0", "sda2"),
        BlockDeviceMapping("root", "/dev/sda1"),
        BlockDeviceMapping("swap", "sda3"),
    ),
    "x86_64": (
        BlockDeviceMapping("ami", "sda1"),
        BlockDeviceMapping("ephemeral0", "sdb"),
        BlockDeviceMapping("ephemeral1", "sdc"),
        BlockDeviceMapping("ephemeral2", "sdd"),
        BlockDeviceMapping("ephemeral3", "sde"),
        BlockDeviceMapping("root", "/dev/sda1"),
    ),
    "arm64": (
        BlockDeviceMapping("ami", "sda1"),
        BlockDeviceMapping("root", "/dev/sda1"),
    ),
}


def default_block_device_mappings(arch: str) -> tuple[BlockDeviceMapping, ...]:
    """The block device mappings ec2-bundle-vol writes for an architecture."""
    return DEFAULT_BLOCK_DEVICE_MAPPINGS.get(arch, DEFAULT_BLOCK_DEVICE_MAPPINGS["arm64"])


# REXML, which wrote the original manifests, escapes these characters in text and attributes.
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in text)


def _el(tag: str, content: str, **attributes: str) -> str:
    attrs = "".join(f" {name}='{_escape(value)}'" for name, value in attributes.items())
    return f"<{tag}{attrs}>{content}</{tag}>"


def _text(tag: str, text: str, **attributes: str) -> str:
    return _el(tag, _escape(text), **attributes)


def _render_machine_configuration(m: Manifest) -> str:
    content = _text("architecture", m.architecture)
    if m.block_device_mappings:
        mappings = "".join(
            _el("mapping", _text("virtual", b.virtual) + _text("device", b.device))
            for b in sorted(m.block_device_mappings, key=lambda b: b.virtual)
        )
        content += _el("block_device_mapping", mappings)
    if m.product_codes:
        content += _el("product_codes", "".join(_text("product_code", c) for c in m.product_codes))
    if m.kernel_id is not None:
        content += _text("kernel_id", m.kernel_id)
    if m.ramdisk_id is not None:
        content += _text("ramdisk_id", m.ramdisk_id)
    return _el("machine_configuration", content)


def _render_image(m: Manifest) -> str:
    content = _text("name", m.name) + _text("user", m.user) + _text("type", m.image_type)
    if m.ancestry:
        content += _el("ancestry", "".join(_text("ancestor_ami_id", a) for a in m.ancestry))
    parts = "".join(
        _el(
            "part",
            _text("filename", p.filename) + _text("digest", p.digest, algorithm=m.digest_algorithm),
            index=str(p.index),
        )
        for p in m.parts
    )
    content += (
        _text("digest", m.digest, algorithm=m.digest_algorithm)
        + _text("size", str(m.size))
        + _text("bundled_size", str(m.bundled_size))
        + _text("ec2_encrypted_key", m.keys.ec2_encrypted_key, algorithm=m.cipher_algorithm)
        + _text("user_encrypted_key", m.keys.user_encrypted_key, algorithm=m.cipher_algorithm)
        + _text("ec2_encrypted_iv", m.keys.ec2_encrypted_iv)
        + _text("user_encrypted_iv", m.keys.user_encrypted_iv)
        + _el("parts", parts, count=str(len(m.parts)))
    )
    return _el("image", content)


def sign_manifest(unsigned: Manifest, private_key: rsa.RSAPrivateKey) -> Manifest:
    """Render a manifest and sign its machine_configuration and image text with the user's key."""
    signed_text = _render_machine_configuration(unsigned) + _render_image(unsigned)
    signature = sign_sha1(private_key, signed_text.encode("utf-8")).hex()
    b = unsigned.bundler
    bundler = _el(
        "bundler", _text("name", b.name) + _text("version", b.version) + _text("release", b.release)
    )
    body = _text("version", unsigned.version) + bundler + signed_text + _text("signature", signature)
    return replace(
        unsigned,
        signature=signature,
        parts_count=len(unsigned.parts),
        signed_text=signed_text,
        xml=XML_DECLARATION + _el("manifest", body),
    )


_SIGNED_SECTIONS = re.compile(
    r"(<machine_configuration>.*?</machine_configuration>).*?(<image>.*?</image>)", re.DOTALL
)


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse manifest XML text into a Manifest, naming what is missing or malformed."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ManifestParseError(f"{source}: a manifest must not contain a DOCTYPE or entities")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ManifestParseError(
            f"{source} is truncated or not valid XML ({exc}); copy the manifest again "
            "from where the bundle was written"
        ) from None
    if root.tag != "manifest":
        raise ManifestParseError(f"{source}: the root element is <{root.tag}>, not <manifest>")
    sections = _SIGNED_SECTIONS.search(text)
    if sections is None:
        raise ManifestParseError(f"{source}: no <machine_configuration> followed by <image>")

    def find(path: str) -> ET.Element:
        element = root.find(path)
        if element is None:
            raise ManifestParseError(f"{source}: required element {path} is missing")
        return element

    def text_of(path: str) -> str:
        return (find(path).text or "").strip()

    def optional(path: str) -> str | None:
        element = root.find(path)
        return None if element is None else (element.text or "").strip()

    def integer(value: str | None, what: str) -> int:
        try:
            return int(value or "")
        except ValueError:
            raise ManifestParseError(f"{source}: {what} is {value!r}, not a number") from None

    parts_element = find("image/parts")
    parts = tuple(
        ManifestPart(
            index=integer(p.get("index"), "a part index"),
            filename=(p.findtext("filename") or "").strip(),
            digest=(p.findtext("digest") or "").strip().lower(),
        )
        for p in parts_element.findall("part")
    )
    mc = "machine_configuration"
    return Manifest(
        version=text_of("version"),
        bundler=Bundler(
            name=optional("bundler/name") or "",
            version=optional("bundler/version") or "",
            release=optional("bundler/release") or "",
        ),
        architecture=text_of(f"{mc}/architecture"),
        block_device_mappings=tuple(
            BlockDeviceMapping((m.findtext("virtual") or "").strip(), (m.findtext("device") or "").strip())
            for m in root.findall(f"{mc}/block_device_mapping/mapping")
        ),
        kernel_id=optional(f"{mc}/kernel_id"),
        ramdisk_id=optional(f"{mc}/ramdisk_id"),
        product_codes=tuple((c.text or "").strip() for c in root.findall(f"{mc}/product_codes/product_code")),
        name=text_of("image/name"),
        user=text_of("image/user"),
        image_type=text_of("image/type"),
        ancestry=tuple((a.text or "").strip() for a in root.findall("image/ancestry/ancestor_ami_id")),
        digest=text_of("image/digest").lower(),
        digest_algorithm=find("image/digest").get("algorithm", ""),
        size=integer(text_of("image/size"), "image/size"),
        bundled_size=integer(text_of("image/bundled_size"), "image/bundled_size"),
        cipher_algorithm=find("image/user_encrypted_key").get("algorithm", ""),
        keys=EncryptedKeys(
            user_encrypted_key=text_of("image/user_encrypted_key"),
            ec2_encrypted_key=text_of("image/ec2_encrypted_key"),
            user_encrypted_iv=text_of("image/user_encrypted_iv"),
            ec2_encrypted_iv=text_of("image/ec2_encrypted_iv"),
        ),
        parts=parts,
        parts_count=integer(parts_element.get("count"), "the parts count"),
        signature=text_of("signature"),
        signed_text=sections.group(1) + sections.group(2),
        xml=text,
    )


def read_manifest(path: Path | str) -> Manifest:
    """Read and parse a manifest file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestParseError(f"manifest {path} does not exist; check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestParseError(f"manifest {path} is not UTF-8 text; is it a manifest?") from None
    return parse_manifest(text, source=f"manifest {path}")
