"""Properties of the bundle format under arbitrary tampering, checked with Hypothesis."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path

import pytest
from crafting import bundle_bytes, craft_bundle, make_identity, parse_seconds, plain_tar
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from amidsl.bundle import BundleError, unbundle, verify_bundle
from amidsl.bundle.manifest import parse_manifest
from amidsl.bundle.verify import check_signature_of

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# What the signature vouches for: every value taken from the signed sections.
SIGNED_FIELDS = [
    "name",
    "user",
    "architecture",
    "digest",
    "size",
    "bundled_size",
    "keys",
    "parts",
    "parts_count",
    "block_device_mappings",
    "kernel_id",
    "ramdisk_id",
    "product_codes",
    "ancestry",
    "image_type",
    "digest_algorithm",
    "cipher_algorithm",
    "signed_text",
]
XML_PIECES = st.sampled_from(
    ["<", ">", "/", "!", "-", "?", "'", '"', "=", "&", ";", " ", "\n", "x", "<!--", "-->", "<?x ?>",
     "<![CDATA[", "]]>", "<image>", "</image>", "<machine_configuration>", "</machine_configuration>",
     "<name>evil</name>", "<size>1</size>", "<signature>00</signature>", "<!DOCTYPE m>", "&amp;", "&#60;"]
)  # fmt: skip


@pytest.fixture(scope="module")
def identities():
    return make_identity("property user"), make_identity("property ec2")


@pytest.fixture(scope="module")
def original(tmp_path_factory, identities):
    """A genuine bundle (manifest path) that each example copies before tampering with it."""
    user, ec2 = identities
    directory = tmp_path_factory.mktemp("original")
    return bundle_bytes(directory, os.urandom(20_000), user, ec2)


def _copy(original: Path) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="tampered-"))
    for file in original.parent.iterdir():
        shutil.copy(file, directory / file.name)
    return directory / original.name


def _signed_span(text: str) -> tuple[int, int]:
    start = text.index("<machine_configuration>")
    return start, text.index("</image>") + len("</image>")


@SETTINGS
@given(data=st.data())
def test_an_edit_outside_the_signed_bytes_is_ignored_or_refused(original, identities, data):
    user, _ = identities
    text = original.read_text()
    start, end = _signed_span(text)
    genuine = parse_manifest(text)
    position = data.draw(st.sampled_from([*range(0, start + 1), *range(end, len(text) + 1)]))
    inserted = "".join(data.draw(st.lists(XML_PIECES, min_size=0, max_size=6)))
    deleted = data.draw(st.integers(0, (start - position) if position <= start else len(text) - position))
    edited = text[:position] + inserted + text[position + deleted :]
    try:
        manifest = parse_manifest(edited)
        check_signature_of(manifest, user.cert_pem)
    except BundleError:
        return  # refused
    for name in SIGNED_FIELDS:
        assert getattr(manifest, name) == getattr(genuine, name), name


@SETTINGS
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_a_byte_flip_in_the_signed_bytes_is_refused(original, identities, where, mask):
    user, _ = identities
    path = _copy(original)
    raw = bytearray(path.read_bytes())
    start, end = _signed_span(raw.decode())
    raw[start + int(where * (end - start))] ^= mask
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError):
        verify_bundle(path, user.cert_pem)
    shutil.rmtree(path.parent)


@SETTINGS
@given(part=st.integers(0, 100), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_a_byte_flip_in_any_part_is_refused(original, identities, part, where, mask):
    user, _ = identities
    path = _copy(original)
    parts = sorted(path.parent.glob("image.part.*"))
    target = parts[part % len(parts)]
    raw = bytearray(target.read_bytes())
    raw[int(where * len(raw))] ^= mask
    target.write_bytes(bytes(raw))
    with pytest.raises(BundleError):
        verify_bundle(path, user.cert_pem)
    with pytest.raises(BundleError):
        unbundle(path, user.key_pem, path.parent / "out", user_cert_pem=user.cert_pem)
    assert not (path.parent / "out").exists()
    shutil.rmtree(path.parent)


NAME_PIECES = st.sampled_from(["image", "..", ".", "/", "a", "\n", " ", "x" * 50, "\x00", "é"])


def _outside(sandbox: Path, destination: Path) -> set[str]:
    """Every path in the sandbox that is not inside the destination."""
    return {str(p) for p in sandbox.rglob("*") if destination not in (p, *p.parents)}


@SETTINGS
@given(
    member=st.lists(NAME_PIECES, min_size=1, max_size=5).map("".join),
    manifest_name=st.one_of(st.just("image"), st.lists(NAME_PIECES, min_size=1, max_size=4).map("".join)),
    link=st.booleans(),
)
@example(member="image", manifest_name="image\n", link=False)  # the manifest's name is read stripped
def test_unbundle_never_writes_outside_its_destination(identities, member, manifest_name, link):
    user, ec2 = identities
    sandbox = Path(tempfile.mkdtemp(prefix="sandbox-"))
    tar = plain_tar(member.encode()[:99], b"data")
    manifest = craft_bundle(sandbox / "bundle", user, ec2, tar, name=manifest_name, size=4)
    destination = sandbox / "out"
    destination.mkdir()
    victim = sandbox / "elsewhere" / "victim"
    victim.parent.mkdir()
    if link:
        with suppress(OSError, ValueError):
            (destination / manifest_name).symlink_to(victim)
    outside = _outside(sandbox, destination)
    try:
        restored = unbundle(manifest, user.key_pem, destination, user_cert_pem=user.cert_pem)
    except BundleError:
        restored = None
    assert _outside(sandbox, destination) == outside and not victim.exists()
    if restored is not None:
        # The manifest's values are read with surrounding whitespace stripped, as XML text values are.
        name = manifest_name.strip()
        assert restored == destination / name and restored.read_bytes() == b"data"
        # tar name fields end at the first NUL, as in any tar reader.
        assert member.encode()[:99].split(b"\x00")[0].decode() == name
    shutil.rmtree(sandbox)


@settings(max_examples=25, deadline=None)
@given(unit=st.lists(XML_PIECES, min_size=1, max_size=8).map("".join))
def test_parsing_time_is_linear_for_any_repeated_fragment(unit):
    head = "<?xml version='1.0'?><manifest><version>2007-10-10</version><machine_configuration>"
    small, large = head + unit * (20_000 // len(unit)), head + unit * (200_000 // len(unit))

    assert parse_seconds(large) <= 20 * max(parse_seconds(small), 0.005)
