"""The manifest: ec2-ami-tools layout, signature checkable by openssl, typed parsing."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given, settings
from hypothesis import strategies as st

from amidsl.bundle import (
    BlockDeviceMapping,
    EncryptedKeys,
    Manifest,
    ManifestParseError,
    ManifestPart,
    parse_manifest,
)
from amidsl.bundle.keys import load_private_key
from amidsl.bundle.manifest import sign_manifest


def unsigned_manifest(**changes) -> Manifest:
    fields = {
        "name": "image",
        "user": "123456789012",
        "architecture": "x86_64",
        "digest": "ab" * 20,
        "size": 1048576,
        "bundled_size": 2048,
        "keys": EncryptedKeys("11" * 256, "22" * 256, "33" * 256, "44" * 256),
        "parts": (
            ManifestPart(0, "image.part.0", "cd" * 20),
            ManifestPart(1, "image.part.1", "ef" * 20),
        ),
        "signature": "",
        "block_device_mappings": (
            BlockDeviceMapping("ami", "sda1"),
            BlockDeviceMapping("ephemeral0", "sdb"),
            BlockDeviceMapping("root", "/dev/sda1"),
        ),
    }
    return Manifest(**{**fields, **changes})


def test_layout_matches_ec2_ami_tools(user):
    manifest = sign_manifest(
        unsigned_manifest(kernel_id="aki-1", ramdisk_id="ari-2", product_codes=("PC1",), ancestry=("ami-9",)),
        load_private_key(user.key_pem),
    )
    xml = manifest.xml
    assert xml.startswith("<?xml version='1.0'?><manifest><version>2007-10-10</version><bundler>")
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == [
        "version",
        "bundler",
        "machine_configuration",
        "image",
        "signature",
    ]
    assert [c.tag for c in root.find("machine_configuration")] == [
        "architecture",
        "block_device_mapping",
        "product_codes",
        "kernel_id",
        "ramdisk_id",
    ]
    assert [c.tag for c in root.find("image")] == [
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
    ]
    assert "<digest algorithm='SHA1'>" in xml
    assert "<ec2_encrypted_key algorithm='AES-128-CBC'>" in xml
    assert "<parts count='2'><part index='0'><filename>image.part.0</filename>" in xml
    assert root.findtext("image/type") == "machine"
    assert "\n" not in xml


def test_signature_is_rsa_sha1_over_machine_configuration_then_image(tmp_path, user):
    manifest = sign_manifest(unsigned_manifest(), load_private_key(user.key_pem))
    sections = re.search(
        r"(<machine_configuration>.*</machine_configuration>)(<image>.*</image>)", manifest.xml
    )
    assert manifest.signed_text == sections.group(1) + sections.group(2)
    (tmp_path / "cert.pem").write_bytes(user.cert_pem)
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "cert.pem")],
        capture_output=True,
        check=True,
    ).stdout
    (tmp_path / "pub.pem").write_bytes(pubkey)
    (tmp_path / "signed.txt").write_text(manifest.signed_text)
    (tmp_path / "sig.bin").write_bytes(bytes.fromhex(manifest.signature))
    result = subprocess.run(
        ["openssl", "dgst", "-sha1", "-verify", "pub.pem", "-signature", "sig.bin", "signed.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Verified OK" in result.stdout


def test_signed_manifest_parses_back_to_the_same_value(user):
    manifest = sign_manifest(
        unsigned_manifest(product_codes=("A&B", "<c>"), kernel_id="aki-'q'"),
        load_private_key(user.key_pem),
    )
    assert parse_manifest(manifest.xml) == manifest
    assert "A&amp;B" in manifest.xml and "&lt;c&gt;" in manifest.xml and "aki-&apos;q&apos;" in manifest.xml


def test_optional_elements_are_left_out_when_empty(user):
    manifest = sign_manifest(unsigned_manifest(block_device_mappings=()), load_private_key(user.key_pem))
    for tag in ("block_device_mapping", "product_codes", "kernel_id", "ramdisk_id", "ancestry"):
        assert f"<{tag}>" not in manifest.xml
    parsed = parse_manifest(manifest.xml)
    assert (parsed.kernel_id, parsed.ramdisk_id, parsed.product_codes, parsed.ancestry) == (
        None,
        None,
        (),
        (),
    )


def test_pretty_printed_manifest_still_parses(user):
    manifest = sign_manifest(unsigned_manifest(), load_private_key(user.key_pem))
    element = ET.fromstring(manifest.xml)
    ET.indent(element)
    parsed = parse_manifest(ET.tostring(element, encoding="unicode"))
    assert parsed.parts == manifest.parts and parsed.digest == manifest.digest


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda xml: xml[: len(xml) // 2], "truncated or not valid XML"),
        (lambda xml: xml.replace("<size>1048576</size>", ""), "image/size is missing"),
        (
            lambda xml: xml.replace("<size>1048576</size>", "<size>big</size>"),
            "image/size is 'big'",
        ),
        (
            lambda xml: xml.replace("<manifest>", "<!DOCTYPE m [<!ENTITY e 'x'>]><manifest>"),
            "DOCTYPE",
        ),
        (lambda xml: xml.replace("manifest>", "other>"), "not <manifest>"),
    ],
)
def test_malformed_manifests_are_named(user, mangle, message):
    manifest = sign_manifest(unsigned_manifest(), load_private_key(user.key_pem))
    with pytest.raises(ManifestParseError, match=re.escape(message)):
        parse_manifest(mangle(manifest.xml), source="test manifest")


def test_key_material_is_the_hex_text_encrypted_with_pkcs1_v15(tmp_path, user, ec2):
    from amidsl.bundle import bundle_image

    image = tmp_path / "image.bin"
    image.write_bytes(b"x" * 1000)
    manifest = bundle_image(
        image,
        tmp_path,
        user_id="123456789012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        key=bytes(range(16)),
        iv=bytes(range(16, 32)),
    )
    user_key = load_private_key(user.key_pem)
    ec2_key = load_private_key(ec2.key_pem)

    def decrypt(key, value: str) -> bytes:
        return key.decrypt(bytes.fromhex(value), padding.PKCS1v15())

    assert decrypt(user_key, manifest.keys.user_encrypted_key) == bytes(range(16)).hex().encode()
    assert decrypt(ec2_key, manifest.keys.ec2_encrypted_key) == bytes(range(16)).hex().encode()
    assert decrypt(user_key, manifest.keys.user_encrypted_iv) == bytes(range(16, 32)).hex().encode()
    assert decrypt(ec2_key, manifest.keys.ec2_encrypted_iv) == bytes(range(16, 32)).hex().encode()


text_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
xml_text = st.text(alphabet=text_chars, min_size=1, max_size=20).map(str.strip).filter(bool)


@settings(max_examples=50, deadline=None)
@given(
    name=xml_text,
    codes=st.lists(xml_text, max_size=3),
    ancestry=st.lists(xml_text, max_size=3),
    kernel=st.none() | xml_text,
    mappings=st.dictionaries(xml_text, xml_text, max_size=4),
)
def test_any_text_survives_rendering_and_parsing(user, name, codes, ancestry, kernel, mappings):
    mapping_list = tuple(BlockDeviceMapping(v, d) for v, d in sorted(mappings.items()))
    manifest = sign_manifest(
        unsigned_manifest(
            name=name,
            product_codes=tuple(codes),
            ancestry=tuple(ancestry),
            kernel_id=kernel,
            block_device_mappings=mapping_list,
        ),
        load_private_key(user.key_pem),
    )
    assert parse_manifest(manifest.xml) == manifest
