"""Parsing a manifest takes time linear in its size, whatever its content; oversized ones are refused."""

import pytest
from crafting import parse_seconds

from amidsl.bundle import ManifestParseError, read_manifest
from amidsl.bundle.manifest import MAX_MANIFEST_BYTES, parse_manifest

HEAD = "<?xml version='1.0'?><manifest><version>2007-10-10</version>"
SECTION = "<machine_configuration></machine_configuration>"


# Shapes of hostile input, each a function of a repeat count n.
SHAPES = {
    "repeated section openings": lambda n: HEAD + "<machine_configuration>" * n,
    "repeated empty sections": lambda n: HEAD + SECTION * n + "</manifest>",
    "repeated signed sections": lambda n: (
        HEAD + "<machine_configuration></machine_configuration><image></image>" * n
    ),
    "repeated closed sections": lambda n: HEAD + "<machine_configuration>" + "</x>" * n,
    "many parts": lambda n: (
        HEAD
        + "<machine_configuration><architecture>x86_64</architecture></machine_configuration><image><parts>"
        + "<part index='0'><filename>p</filename><digest>0</digest></part>" * n
    ),
    "long text": lambda n: HEAD + "<signature>" + "ab" * n,
    "many attributes": lambda n: HEAD + "<image " + " a='1'" * n + ">",
    "whitespace in a tag": lambda n: HEAD + "<image" + " " * n + "a",
    "many references": lambda n: HEAD + "<signature>" + "&amp;" * n,
    "unterminated comment": lambda n: HEAD + "<!--" + "<image>" * n,
}


def test_the_reported_38_kb_manifest_of_repeated_sections_parses_at_once():
    """Well-formed XML that made a regex over the raw text take a minute (cubic backtracking)."""
    text = HEAD + SECTION * (38_000 // len(SECTION)) + "</manifest>"
    assert parse_seconds(text) < 1.0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_parsing_time_grows_linearly_with_input_size(shape):
    small, large = shape(1_500), shape(15_000)
    assert len(large) < MAX_MANIFEST_BYTES  # measured below the cap, where the parser really runs
    # 10x the input may take 20x the time; the floor keeps timer noise on tiny figures harmless.
    assert parse_seconds(large) <= 20 * max(parse_seconds(small), 0.005)


def test_a_manifest_over_one_mebibyte_is_refused_before_parsing(tmp_path):
    path = tmp_path / "image.manifest.xml"
    path.write_text(HEAD + " " * MAX_MANIFEST_BYTES + "</manifest>")
    with pytest.raises(ManifestParseError, match="larger than a manifest can be"):
        read_manifest(path)
    with pytest.raises(ManifestParseError, match="more than a manifest can be"):
        parse_manifest(path.read_text())
