"""The bundle manifest (version 2007-10-10): typed data, XML rendering, parsing and signing."""

from __future__ import annotations

import os
import re
import xml.parsers.expat
from collections.abc import Callable
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


MAX_MANIFEST_BYTES = 1024 * 1024  # real manifests are a few KiB; a 10 GiB image has ~1000 parts
_MAX_DEPTH = 8

# One strict expat parse of the UTF-8 bytes: the byte spans of the signed sections and the values used
# both come from it, so nothing can hide a section from one while showing it to the other (signature
# wrapping). Expat parses in linear time; everything but elements, attributes and text is refused.

# Expat's errors for input that ends too early (inside an element, a tag or a character).
_TRUNCATION_ERRORS = {
    xml.parsers.expat.errors.codes[message]
    for message in (
        xml.parsers.expat.errors.XML_ERROR_NO_ELEMENTS,
        xml.parsers.expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        xml.parsers.expat.errors.XML_ERROR_PARTIAL_CHAR,
    )
}
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in XML 1.0 text

# Which children each container element may have: ONE at most once, MANY any number of times.
ONE, MANY = 1, 2
_ROOT_ORDER = ("version", "bundler", "machine_configuration", "image", "signature")
_CONTAINERS: dict[str, dict[str, int]] = {
    "manifest": dict.fromkeys(_ROOT_ORDER, ONE),
    "bundler": {"name": ONE, "version": ONE, "release": ONE},
    "machine_configuration": {
        "architecture": ONE,
        "block_device_mapping": ONE,
        "product_codes": ONE,
        "kernel_id": ONE,
        "ramdisk_id": ONE,
    },
    "block_device_mapping": {"mapping": MANY},
    "mapping": {"virtual": ONE, "device": ONE},
    "product_codes": {"product_code": MANY},
    "image": dict.fromkeys(
        (
            "name",
            "user",
            "type",
            "ancestry",
            "digest",
            "size",
            "bundled_size",
            "ec2_encrypted_key",
            "user_encrypted_key",
            "ec2_encrypted_iv",
            "user_encrypted_iv",
            "parts",
        ),
        ONE,
    ),
    "ancestry": {"ancestor_ami_id": MANY},
    "parts": {"part": MANY},
    "part": {"filename": ONE, "digest": ONE},
}


@dataclass
class _Element:
    """A parsed element and the span [start, end) of its bytes in the manifest's UTF-8 encoding."""

    tag: str
    attributes: dict[str, str]
    start: int
    end: int = -1
    text: list[str] = field(default_factory=list)
    children: list[_Element] = field(default_factory=list)

    def child(self, tag: str) -> _Element | None:
        return next((c for c in self.children if c.tag == tag), None)

    def value(self) -> str:
        return "".join(self.text).strip()


def _refusal(source: str, what: str, position: int) -> ManifestParseError:
    return ManifestParseError(
        f"{source} is not a manifest amidsl accepts: {what} at byte {position}; "
        "a manifest holds only elements, attributes and text (no comments, processing "
        "instructions, CDATA or DOCTYPE); copy it again from where the bundle was written"
    )


def _parse_xml(data: bytes, source: str) -> _Element:
    """Parse manifest XML (UTF-8 bytes) with expat into elements that know their byte spans."""
    control = _CONTROL.search(data)
    if control:
        raise _refusal(source, f"control character {control.group(0).decode()!r}", control.start())
    # The text was encoded here, so a declared encoding must not change how the bytes are read.
    parser = xml.parsers.expat.ParserCreate(encoding="UTF-8")
    parser.buffer_text = True  # one text event per run of text, however many references it holds
    stack: list[_Element] = []
    root: _Element | None = None
    just_started: _Element | None = None  # the element whose start was the last event, if any

    def refuse(what: str) -> Callable[..., None]:
        def handler(*_: object) -> None:
            raise _refusal(source, what, parser.CurrentByteIndex)

        return handler

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal root, just_started
        element = _Element(tag, attributes, start=parser.CurrentByteIndex)
        if stack:
            stack[-1].children.append(element)
        else:
            root = element  # expat itself refuses a second top-level element
        stack.append(element)
        if len(stack) > _MAX_DEPTH:
            raise _refusal(source, "elements nested too deeply", element.start)
        just_started = element

    def end(tag: str) -> None:
        nonlocal just_started
        element = stack.pop()
        position = parser.CurrentByteIndex
        # Expat reports an end tag </a> at its first byte, but an empty-element tag <a/> just after
        # its last byte. Only an element with no event since its start can be the latter, and then
        # its last two bytes are "/>" (a start tag followed by </a> ends with another character).
        if element is just_started and data[position - 2 : position] == b"/>":
            element.end = position
        else:
            element.end = data.index(b">", position) + 1  # an end tag holds no other ">"
        just_started = None

    def characters(text: str) -> None:
        nonlocal just_started
        stack[-1].text.append(text)
        just_started = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.CommentHandler = refuse("a comment")
    parser.ProcessingInstructionHandler = refuse("a processing instruction")
    parser.StartCdataSectionHandler = refuse("a CDATA section")
    parser.StartDoctypeDeclHandler = refuse("a DOCTYPE or entity declaration")
    parser.EntityDeclHandler = refuse("a DOCTYPE or entity declaration")
    parser.SkippedEntityHandler = refuse("an entity reference")
    try:
        parser.Parse(data, True)  # all at once: expat re-scans a token only when fed in pieces
    except xml.parsers.expat.ExpatError as error:
        if root is not None:
            truncated = bool(stack) and error.code in _TRUNCATION_ERRORS
            unclosed = f"; <{stack[-1].tag}> is never closed" if truncated else ""
            raise ManifestParseError(
                f"{source} is truncated or not valid XML ({xml.parsers.expat.ErrorString(error.code)} "
                f"at byte {parser.ErrorByteIndex}{unclosed}); copy it again from where the bundle was "
                "written"
            ) from None
    if root is None:
        raise ManifestParseError(f"{source} holds no XML element; is it a manifest?")
    return root


def _check_structure(element: _Element, source: str, path: str) -> None:
    """Refuse unknown, repeated or misplaced elements and stray text in containers."""
    allowed = _CONTAINERS.get(element.tag)
    if allowed is None:
        if element.children:
            raise ManifestParseError(f"{source}: {path} must hold text, not elements")
        return
    if element.value():
        raise ManifestParseError(f"{source}: {path} holds stray text {element.value()[:40]!r}")
    seen: set[str] = set()
    for child in element.children:
        where = f"{path}/{child.tag}"
        if child.tag not in allowed:
            raise ManifestParseError(f"{source}: unexpected element {where}; is it a manifest?")
        if allowed[child.tag] == ONE and child.tag in seen:
            raise ManifestParseError(
                f"{source}: element {where} appears twice; the manifest is damaged or forged"
            )
        seen.add(child.tag)
        _check_structure(child, source, where)
    if element.tag == "manifest":
        order = [c.tag for c in element.children]
        if order != sorted(order, key=_ROOT_ORDER.index):
            raise ManifestParseError(
                f"{source}: the manifest's sections are out of order ({', '.join(order)}); "
                f"expected {', '.join(_ROOT_ORDER)}"
            )


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse manifest XML text into a Manifest, naming what is missing, malformed or forged."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestParseError(
            f"{source} is {len(text)} characters long, more than a manifest can be "
            f"({MAX_MANIFEST_BYTES}); is it a manifest?"
        )
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ManifestParseError(
            f"{source} holds a lone surrogate at character {error.start}, which is not text; "
            "is it a manifest?"
        ) from None
    root = _parse_xml(data, source)
    if root.tag != "manifest":
        raise ManifestParseError(f"{source}: the root element is <{root.tag}>, not <manifest>")
    _check_structure(root, source, "manifest")

    def optional_element(path: str) -> _Element | None:
        element: _Element | None = root
        for tag in path.split("/"):
            element = element.child(tag) if element is not None else None
        return element

    def find(path: str) -> _Element:
        element = optional_element(path)
        if element is None:
            raise ManifestParseError(f"{source}: required element {path} is missing")
        return element

    def text_of(path: str) -> str:
        return find(path).value()

    def optional(path: str) -> str | None:
        element = optional_element(path)
        return None if element is None else element.value()

    def all_of(path: str) -> list[_Element]:
        parent_path, _, tag = path.rpartition("/")
        parent = optional_element(parent_path)
        return [] if parent is None else [c for c in parent.children if c.tag == tag]

    def child_text(element: _Element, tag: str) -> str:
        child = element.child(tag)
        return "" if child is None else child.value()

    def integer(value: str | None, what: str) -> int:
        if value is None or not value.isascii() or not value.isdigit():
            raise ManifestParseError(f"{source}: {what} is {value!r}, not a number")
        return int(value)

    machine_configuration, image = find("machine_configuration"), find("image")
    parts_element = find("image/parts")
    parts = tuple(
        ManifestPart(
            index=integer(p.attributes.get("index"), "a part index"),
            filename=child_text(p, "filename"),
            digest=child_text(p, "digest").lower(),
        )
        for p in all_of("image/parts/part")
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
            BlockDeviceMapping(child_text(m, "virtual"), child_text(m, "device"))
            for m in all_of(f"{mc}/block_device_mapping/mapping")
        ),
        kernel_id=optional(f"{mc}/kernel_id"),
        ramdisk_id=optional(f"{mc}/ramdisk_id"),
        product_codes=tuple(c.value() for c in all_of(f"{mc}/product_codes/product_code")),
        name=text_of("image/name"),
        user=text_of("image/user"),
        image_type=text_of("image/type"),
        ancestry=tuple(a.value() for a in all_of("image/ancestry/ancestor_ami_id")),
        digest=text_of("image/digest").lower(),
        digest_algorithm=find("image/digest").attributes.get("algorithm", ""),
        size=integer(text_of("image/size"), "image/size"),
        bundled_size=integer(text_of("image/bundled_size"), "image/bundled_size"),
        cipher_algorithm=find("image/user_encrypted_key").attributes.get("algorithm", ""),
        keys=EncryptedKeys(
            user_encrypted_key=text_of("image/user_encrypted_key"),
            ec2_encrypted_key=text_of("image/ec2_encrypted_key"),
            user_encrypted_iv=text_of("image/user_encrypted_iv"),
            ec2_encrypted_iv=text_of("image/ec2_encrypted_iv"),
        ),
        parts=parts,
        parts_count=integer(parts_element.attributes.get("count"), "the parts count"),
        signature=text_of("signature"),
        # Exactly the text of the two elements the values above were read from.
        signed_text=(
            data[machine_configuration.start : machine_configuration.end] + data[image.start : image.end]
        ).decode("utf-8"),
        xml=text,
    )


def read_manifest(path: Path | str) -> Manifest:
    """Read and parse a manifest file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestParseError(f"manifest {path} does not exist; check the path") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestParseError(
            f"manifest {path} is larger than a manifest can be ({MAX_MANIFEST_BYTES} bytes); "
            "is it a manifest?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestParseError(f"manifest {path} is not UTF-8 text; is it a manifest?") from None
    return parse_manifest(text, source=f"manifest {path}")


def write_manifest(path: Path | str, manifest: Manifest) -> None:
    """Write a manifest's XML through a temporary file, so that no reader ever sees half of it."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(manifest.xml, encoding="utf-8")
    os.replace(temp, path)
