"""AmiSettings, made from the settings table, and `resolve`, which reads a user's mapping into it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from amidsl.settings.constants import BACKINGS
from amidsl.settings.keys import normalise_keys
from amidsl.settings.reading import Reading
from amidsl.settings.rules import RULES
from amidsl.settings.schema import Problem, Setting, SettingsError
from amidsl.settings.table import ROWS, SETTINGS, STRATEGY_RULES, USER_KEYS


def _tools_dir(self: Any) -> str:
    """The unpacked ec2-ami-tools folder (the crate renames `ec2-ami-tools-<version>` to this)."""
    return f"{self.install_dir}/ec2-ami-tools"


def _s3_location(self: Any) -> str:
    """Bucket and key prefix as ec2-upload-bundle's `-b` takes them."""
    return f"{self.s3_bucket}/{self.s3_path}" if self.s3_path else self.s3_bucket


def _with_values(self: Any, **changes: Any) -> Any:
    """Return a copy with some fields changed (e.g. the image id after registration)."""
    return dataclasses.replace(self, **changes)


# Made from the rows, so that adding a setting is adding a row: a hand-written class would repeat every
# name, type and order the table already holds. Its fields are the rows' (keep_<item> aside, folded
# into hygiene_keep), in row order, made with keywords; secrets stay out of its repr.
AmiSettings = dataclasses.make_dataclass(
    "AmiSettings",
    [(row.name, row.type, dataclasses.field(repr=not row.secret)) for row in ROWS if row.field],
    namespace={
        "__module__": __name__,
        "__doc__": "Finalised settings for one AMI build; every path and default filled in.",
        "tools_dir": property(_tools_dir),
        "s3_location": property(_s3_location),
        "with_values": _with_values,
    },
    frozen=True,
)


def _missing(row: Setting, backing: str) -> Problem:
    """A required setting not given: for every build, or for builds of its backings only."""
    if not row.required_in:
        return Problem(row.name, "is required", f"set {row.name} in the [ami] table")
    others = " or ".join(repr(b) for b in BACKINGS if b not in row.required_in)
    return Problem(
        row.name,
        f"is required for backing = {backing!r}",
        f"set {row.name} in the [ami] table, or choose backing = {others} (native builds)",
    )


def resolve(raw: Mapping[str, Any], origin: str = "settings") -> AmiSettings:
    """Merge defaults into `raw`, finalise derived values and validate; raise SettingsError on problems."""
    problems: list[Problem] = []
    given = normalise_keys(raw, USER_KEYS, problems)
    reading = Reading(given, SETTINGS, problems)
    values = {row.name: reading.value(row.name) for row in ROWS}
    for row in ROWS:
        if (
            row.required
            and given.get(row.name) in (None, "")
            and (values["backing"] in row.required_in or not row.required_in)
        ):
            problems.append(_missing(row, values["backing"]))
    for rule in (*RULES, *STRATEGY_RULES.get(values["bundler"], ())):
        problems += rule(reading)
    if problems:
        raise SettingsError(problems, origin=origin)
    return AmiSettings(**{row.name: values[row.name] for row in ROWS if row.field})
