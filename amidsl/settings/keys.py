"""The keys of a settings table: kebab-case aliases, unknown keys with a suggestion, control characters."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from amidsl.secrets import Secret
from amidsl.settings.schema import Problem
from amidsl.settings.table import FREE_TEXT_KEYS


def normalise_keys(
    raw: Mapping[str, Any],
    known: Sequence[str],
    problems: list[Problem],
    table: str = "",
) -> dict[str, Any]:
    """Accept kebab-case aliases; report unknown keys (with a suggestion) and duplicates.

    `table` prefixes the names in messages (e.g. "live." for the [live] table).
    """
    values: dict[str, Any] = {}
    where = f"[{table.rstrip('.')}] " if table else ""
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        _check_control_characters(f"{table}{name}", name, value, problems)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(known)}"
            problems.append(Problem(f"{table}{key}", f"is not a known {where}setting", f"remove it ({hint})"))
            continue
        if name in values:
            problems.append(
                Problem(
                    f"{table}{name}",
                    f"is given twice (as {key!r} and another spelling)",
                    "keep one of the two",
                )
            )
            continue
        values[name] = value
    return values


def _check_control_characters(setting: str, name: str, value: Any, problems: list[Problem]) -> None:
    """Refuse NUL and other control characters in a value (and in the lists and tables it holds).

    A shell drops a NUL and a terminal obeys an escape sequence, so such a value makes what runs or
    what is shown differ from what was written. Line breaks are allowed only in free text.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            key_name = str(key).replace("-", "_")
            _check_control_characters(f"{setting}.{key_name}", key_name, item, problems)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_control_characters(setting, name, item, problems)
        return
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        return
    allowed = "\n\r\t" if name in FREE_TEXT_KEYS else ""
    for position, char in enumerate(text):
        if is_control(char) and char not in allowed:
            # Name the character and where it is, never the value (it may be a secret).
            problems.append(
                Problem(
                    setting,
                    f"contains a control character (U+{ord(char):04X}) at position {position}",
                    "remove it: only printable characters are allowed"
                    + (" (and line breaks)" if allowed else ""),
                )
            )
            return


def is_control(char: str) -> bool:
    """A C0 or C1 control character, DEL, or a Unicode line/paragraph separator."""
    code = ord(char)
    return code < 32 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"
