"""The `[ami]` table of the starter settings file `amidsl init` writes, generated from the settings table.

Made from the rows as the README's reference is, so it cannot drift from them: the required settings
first, each with a `<...>` placeholder that validation refuses until it is replaced, then every other
setting commented out with its meaning and default. Rows that share a doc share one comment.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from collections.abc import Mapping

from amidsl.settings.constants import INSTANCE_STORE
from amidsl.settings.reference import shown_default
from amidsl.settings.schema import Setting
from amidsl.settings.table import ROWS

WIDTH = 100


def placeholder(row: Setting) -> str:
    """A required setting's placeholder as TOML: '"<image name>"', '{ local_file = "<certificate file>" }'."""
    if row.type.startswith("Source"):
        what = row.name.removesuffix("_source").replace("_", " ")
        return f'{{ local_file = "<{what} file>" }}'
    return f'"<{row.name.replace("_", " ")}>"'


def toml_value(value: object) -> str:
    """A plain default written as TOML (strings, booleans, integers and lists of strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return json.dumps(list(value), ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def sample(row: Setting) -> str:
    """What an optional setting's commented line shows: its default where TOML can say it, else a shape."""
    if row.default_from is None and not row.shown_default and row.default is not None:
        return toml_value(row.default)
    if row.type.startswith("Source"):
        return '{ local_file = "..." }'
    if row.type.startswith("tuple"):
        return "{}" if row.shown_default == "`{}`" else "[]"
    if row.type.startswith("bool"):
        return "true"
    return '"..."' if row.holds_text else "..."


def comment(text: str) -> list[str]:
    """Text as wrapped `#` comment lines; a link to a README section becomes the section's name."""
    text = re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1 (README)", text)
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def ami_starter(given: Mapping[str, str] | None = None) -> str:
    """The starter's [ami] table; `given` holds TOML values for some required settings (else placeholders)."""
    given = given or {}
    rows = [row for row in ROWS if row.given]
    lines = ["[ami]", "# -- required: replace each <...> placeholder " + "-" * 50, ""]
    # The default backing's required settings among them (an S3 bundle's bucket and signing pair).
    required = [
        row for row in rows if row.required and (not row.required_in or INSTANCE_STORE in row.required_in)
    ]
    for row in required:
        doc = row.doc + (
            ' (only for an S3 bundle: leave it out with backing = "ebs")'
            if row.backings
            else " (required only for an S3 bundle)"
            if row.required_in
            else ""
        )
        lines += [*comment(doc), f"{row.name} = {given.get(row.name, placeholder(row))}", ""]
    lines += ["# -- optional: the defaults; remove the '# ' before a setting to change it " + "-" * 20, ""]
    optional = [row for row in rows if row not in required]
    for doc, group in itertools.groupby(optional, key=lambda row: row.doc):
        members = list(group)
        defaults = ", ".join(dict.fromkeys(shown_default(row).replace("`", "") for row in members))
        lines += comment(f"{doc} (default: {defaults})")
        lines += [f"# {row.name} = {sample(row)}" for row in members]
        lines.append("")
    return "\n".join(lines)
