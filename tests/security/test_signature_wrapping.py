"""A manifest's signature covers exactly the sections whose values are used."""

from __future__ import annotations

import re

import pytest

from amidsl.bundle import ManifestParseError, read_manifest, unbundle, verify_bundle
from amidsl.bundle.manifest import parse_manifest

SIGNED = re.compile(r"<machine_configuration>.*</image>", re.DOTALL)


def _signed_sections(text: str) -> str:
    return SIGNED.search(text).group(0)


def _wrapped(genuine_text: str, forged_text: str, hide: str) -> str:
    """The genuine signed sections hidden by `hide` (a format string), the forged ones in plain sight."""
    hidden = hide.format(_signed_sections(genuine_text))
    return genuine_text.replace(_signed_sections(genuine_text), hidden + _signed_sections(forged_text))


@pytest.fixture
def forged(genuine, make_bundle):
    """A second bundle (another image) in the same directory: what an attacker substitutes."""
    return make_bundle(genuine.parent, b"forged image content " * 100, prefix="forged")


@pytest.mark.parametrize(
    "hide",
    [
        "<!--{}-->",
        "<?pi {}?>",
        "<![CDATA[{}]]>",
    ],
    ids=["comment", "processing-instruction", "cdata"],
)
def test_genuine_sections_hidden_from_the_tree_are_refused(genuine, forged, user, hide):
    wrapped = _wrapped(genuine.read_text(), forged.read_text(), hide)
    genuine.write_text(wrapped)
    with pytest.raises(ManifestParseError):
        verify_bundle(genuine, user.cert_pem)
    with pytest.raises(ManifestParseError):
        unbundle(genuine, user.key_pem, genuine.parent / "restored", user_cert_pem=user.cert_pem)
    assert not (genuine.parent / "restored" / "forged").exists()


def test_a_second_image_section_after_the_signed_ones_is_refused(genuine, forged):
    text = genuine.read_text()
    forged_image = re.search(r"<image>.*</image>", forged.read_text(), re.DOTALL).group(0)
    doubled = text.replace("</image>", "</image>" + forged_image, 1)
    with pytest.raises(ManifestParseError, match="image"):
        parse_manifest(doubled)


def test_a_duplicate_element_inside_a_signed_section_is_refused(genuine):
    text = genuine.read_text()
    doubled = text.replace("<name>image</name>", "<name>image</name><name>other</name>")
    with pytest.raises(ManifestParseError, match="name"):
        parse_manifest(doubled)


def test_sections_nested_in_an_unknown_element_are_refused(genuine):
    text = genuine.read_text()
    sections = _signed_sections(text)
    nested = text.replace(sections, f"<extra>{sections}</extra>")
    with pytest.raises(ManifestParseError):
        parse_manifest(nested)


def test_a_doctype_is_refused(genuine):
    text = genuine.read_text().replace("<manifest>", "<!DOCTYPE manifest []><manifest>")
    with pytest.raises(ManifestParseError, match="DOCTYPE"):
        parse_manifest(text)


def test_the_signed_text_is_the_parsed_sections_byte_for_byte(genuine):
    text = genuine.read_text()
    assert read_manifest(genuine).signed_text == _signed_sections(text)


def test_the_signed_text_ends_after_a_section_whose_last_child_is_an_empty_element_tag(genuine):
    text = genuine.read_text().replace("</machine_configuration>", "<product_codes/></machine_configuration>")
    manifest = parse_manifest(text)
    assert manifest.product_codes == () and manifest.signed_text == _signed_sections(text)


def test_the_signed_text_of_sections_holding_non_ascii_text_is_exact(genuine):
    text = genuine.read_text().replace("<name>image</name>", "<name>imag\u00e9 \u2603</name>")
    manifest = parse_manifest(text)
    assert manifest.name == "imag\u00e9 \u2603" and manifest.signed_text == _signed_sections(text)


def test_a_manifest_as_the_real_tools_write_it_parses(genuine):
    """REXML writes attributes in double quotes and may indent; both still parse and verify."""
    text = genuine.read_text().replace("'", '"')
    text = text.replace("<manifest>", "<manifest>\n  ").replace("</manifest>", "\n</manifest>\n")
    manifest = parse_manifest(text)
    assert manifest.name == "image" and manifest.signed_text == _signed_sections(text)


def test_a_raw_control_character_is_refused(genuine):
    text = genuine.read_text().replace("<name>image</name>", "<name>image\x1b[2J</name>")
    with pytest.raises(ManifestParseError, match="control character"):
        parse_manifest(text)
