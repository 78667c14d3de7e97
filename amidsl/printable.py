"""Text shown on a terminal: whatever could move the cursor, recolour, reorder or hide it, escaped.

Two callers' rules differ only in line breaks and backslashes: messages and node output keep
their lines; a name (a path in an image) is one line and must read back unambiguously.
"""

from __future__ import annotations

import re
import unicodedata

# What may need escaping: anything but printable ASCII (which never does) and, in lines of text, the
# line break. Output is mostly plain ASCII, so only these characters go through `_escaped`.
_NOT_PLAIN_LINES = re.compile(r"[^\n\x20-\x7e]")
_NOT_PLAIN_NAME = re.compile(r"[^\x20-\x7e]|\\")


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if unicodedata.category(char) in ("Cf", "Zl", "Zp", "Cs"):  # e.g. a right-to-left override
        return f"\\u{code:04x}"
    return char


def printable(text: str) -> str:
    """Lines of text for a terminal: control, format and undecodable characters escaped, line breaks kept."""
    return _NOT_PLAIN_LINES.sub(lambda found: _escaped(found[0]), text)


def printable_output(text: str) -> str:
    """A program's output for a terminal: a carriage return starts a new line (progress redrawn in place
    would otherwise overwrite, and could hide, what came before it), tabs become spaces, the rest as
    `printable`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return printable("\n".join(line.expandtabs(8) for line in lines))


def printable_name(text: str) -> str:
    """A name on one line, unambiguously: as printable, with line breaks and backslashes escaped too."""
    return _NOT_PLAIN_NAME.sub(lambda found: "\\\\" if found[0] == "\\" else _escaped(found[0]), text)
