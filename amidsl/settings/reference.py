"""The README's settings reference, generated from the settings table.

Rows given next to each other with the same doc share one line of the reference (`s3_bucket`,
`s3_path`); derived settings are left out. tests/test_settings_table.py checks that the README holds
exactly this text (AMIDSL_UPDATE_README=1 rewrites it there).
"""

from __future__ import annotations

import itertools

from amidsl.settings.schema import Setting
from amidsl.settings.table import ROWS

START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"


def shown_default(row: Setting) -> str:
    """A row's default as the reference shows it."""
    if row.required:
        return "required"
    if row.shown_default:
        return row.shown_default
    value = row.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`[]`" if not value else ", ".join(f"`{item}`" for item in value)
    if value == "":
        return '`""`'
    return f"`{value}`"


def settings_reference() -> str:
    """The settings reference as a markdown table, one line per setting (or per group sharing a doc)."""
    lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
    given = [row for row in ROWS if row.given]
    for doc, group in itertools.groupby(given, key=lambda row: row.doc):
        rows = list(group)
        names = ", ".join(f"`{row.name}`" for row in rows)
        defaults = ", ".join(dict.fromkeys(shown_default(row) for row in rows))
        lines.append(f"| {names} | {defaults} | {doc} |")
    return "\n".join(lines) + "\n"


def readme_with_reference(readme: str) -> str:
    """The README text with its settings reference (between the START and END markers) regenerated."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_reference()}{END}{tail}"
