"""The settings reference, docs/settings.md, generated from the settings table.

Rows given next to each other with the same doc share one line of the reference (`s3_bucket`,
`s3_path`); derived settings are left out. tests/test_settings_table.py checks that docs/settings.md
is exactly `settings_document()` (AMIDSL_UPDATE_DOCS=1 writes it).
"""

from __future__ import annotations

import itertools

from amidsl.settings.schema import Setting
from amidsl.settings.table import ROWS

UPDATE_ENV = "AMIDSL_UPDATE_DOCS"  # set to 1, the settings-table test writes docs/settings.md
# The docs of the rows link to sections of the README, which is one directory up from docs/.
README_LINK = "](#"


def shown_default(row: Setting) -> str:
    """A row's default as the reference shows it."""
    if row.required and row.required_in:
        return f"required for {', '.join(f'`{value}`' for value in row.required_in)}"
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


def settings_document() -> str:
    """The whole of docs/settings.md: a short introduction and the reference."""
    tables = ", ".join(f"`{row.name}`" for row in ROWS if row.given and row.holds_pairs)
    lists = ", ".join(f"`{row.name}`" for row in ROWS if row.given and row.holds_text_list)
    intro = (
        "# amidsl settings\n\n"
        "Settings live in the `[ami]` table of a TOML file (kebab-case keys such as `image-name` work as "
        "well, for people porting pallet maps). Start from "
        "[`examples/ami.toml`](../examples/ami.toml); the [README](../README.md) says how a build uses "
        "them.\n\n"
        f"Settings given as strings, the values of the tables of strings ({tables}) and the strings of "
        f"the lists ({lists}) may use variables such as "
        "`{date}`, `{git_sha_short}` and `{env:NAME}` "
        "(see [Overrides and variables](../README.md#overrides-and-variables)); the tables' keys are "
        "taken as written.\n\n"
        "This file is generated from the settings table (`amidsl/settings/table.py`, one row per "
        "setting): change a row, then run\n"
        f"`{UPDATE_ENV}=1 python -m pytest tests/test_settings_table.py`.\n\n"
    )
    return intro + settings_reference().replace(README_LINK, "](../README.md#")
