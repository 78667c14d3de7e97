"""Text for a terminal: every character is escaped or kept by one per-character rule, whatever path the
text takes through printable and printable_name."""

from hypothesis import given
from hypothesis import strategies as st

from amidsl.printable import _escaped, printable, printable_name

# Plain ASCII, with the characters each rule escapes mixed in often: controls, DEL and C1, format and
# separator characters, surrogate escapes of undecodable bytes, backslashes and line breaks.
TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from(["\n", "\\", "\x1b", "\0", "\t", "\x7f", "\x85", "\u202e", "\u2028", "\udc80", "é"]),
        st.characters(),
    )
)


@given(TEXT)
def test_printable_escapes_each_character_as_the_per_character_rule_does(text):
    assert printable(text) == "".join(char if char == "\n" else _escaped(char) for char in text)


@given(TEXT)
def test_printable_name_escapes_each_character_as_the_per_character_rule_does(text):
    assert printable_name(text) == "".join("\\\\" if char == "\\" else _escaped(char) for char in text)


def test_plain_text_comes_back_as_it_was():
    assert printable("phase install\n  [install 1] ok: /opt/ami-tools") == (
        "phase install\n  [install 1] ok: /opt/ami-tools"
    )
