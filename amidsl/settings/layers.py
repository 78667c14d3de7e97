"""Settings from several sources: `--config` files layered in order, then `--set KEY=VALUE` overrides.

Each source is a layer holding a TOML document (`[ami]`, `[live]`). Layers are merged per key of each
table: a later layer's value replaces an earlier one's whole (a table-valued setting such as `tags`
too), and the merged settings remember which layer gave each key, so that a message can say where a
bad value came from.

`--set` writes one key as a line of the file would: `KEY` is an `[ami]` setting, `live.KEY` one of
`[live]` (`ami.KEY` works too); the value is a TOML value (`true`, `8`, `["eu-west-1"]`,
`{ local_file = "pk.pem" }`), except that a string setting takes the text as it is (TOML quotes are
optional there). A secret never goes on a command line, which every user of the machine can read: a
secret string setting takes only an `{env:NAME}` reference there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amidsl.settings.schema import Problem, SettingsError
from amidsl.settings.variables import is_env_reference

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

OVERRIDE = "--set"
TABLES = ("ami", "live")
SET_EXAMPLES = (
    "--set image_name=web-{date}, --set upload_concurrency=8, --set 'copy_to_regions=[\"eu-west-1\"]'"
)


@dataclass(frozen=True)
class TableKeys:
    """What the settings tables hold, per table ("ami", "live"): every key, the strings, the secrets,
    and the tables and lists of strings (tags, keys by region, regions, accounts)."""

    known: Mapping[str, frozenset[str]]
    text: Mapping[str, frozenset[str]]
    secret: Mapping[str, frozenset[str]]
    text_collections: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def is_text(self, table: str, key: str) -> bool:
        """Whether the setting holds a string (snake_case key)."""
        return key in self.text.get(table, frozenset())

    def is_text_collection(self, table: str, key: str) -> bool:
        """Whether the setting is a table whose values are strings, or a list of strings (snake_case key)."""
        return key in self.text_collections.get(table, frozenset())

    def is_secret(self, table: str, key: str) -> bool:
        """Whether no message may show the setting's value (snake_case key)."""
        return key in self.secret.get(table, frozenset())


@dataclass(frozen=True)
class Layer:
    """One source of settings: a settings file's TOML document, or the --set overrides."""

    name: str  # the file's path as given, or "--set"
    document: Mapping[str, Any]
    folder: Path  # what relative file paths in it are relative to


@dataclass(frozen=True)
class Layered:
    """The layers merged: the document that results, and which layer gave each key."""

    document: dict[str, Any]
    layers: tuple[Layer, ...]
    origins: Mapping[tuple[str, str], str]  # (table, snake_case key) -> layer name

    @property
    def names(self) -> tuple[str, ...]:
        """The layers' names, first to last."""
        return tuple(layer.name for layer in self.layers)

    @property
    def origin(self) -> str:
        """Where the settings come from, for the head of a message: 'base.toml + ci.toml + --set'."""
        return " + ".join(self.names)

    def folder_of(self, table: str, key: str) -> Path:
        """The folder a relative file path in a key is relative to: that of the layer that gave it."""
        origin = self.origins.get((table, snake(key)))
        return next((layer.folder for layer in self.layers if layer.name == origin), Path.cwd())

    def origin_of(self, setting: str) -> str | None:
        """The layer that gave a setting a problem names ('image_name', 'live.host'), if one did."""
        table, _, rest = setting.partition(".") if setting.startswith("live.") else ("ami", "", setting)
        key = rest.split(".")[0].split(" ")[0].split("[")[0]  # tags.Build, copy_to_regions[0]
        return self.origins.get((table, key.replace("-", "_")))

    def annotate(self, problems: Iterable[Problem]) -> list[Problem]:
        """The problems, each naming the layer its setting came from when there are several layers."""
        if len(self.names) < 2:
            return list(problems)
        annotated = []
        for problem in problems:
            origin = self.origin_of(problem.setting)
            where = f"set by {origin}" if origin == OVERRIDE else f"from {origin}"
            annotated.append(replace(problem, setting=f"{problem.setting} ({where})") if origin else problem)
        return annotated

    def error(self, problems: Iterable[Problem]) -> SettingsError:
        """A SettingsError over all the layers, each problem saying where its value came from."""
        return SettingsError(self.annotate(problems), origin=self.origin)


def snake(key: object) -> str:
    """A key as the settings name it (kebab-case is an alias)."""
    return str(key).replace("-", "_")


def merge_layers(layers: Sequence[Layer]) -> Layered:
    """Merge the layers in order: per key of each table, the last layer that gives it wins."""
    document: dict[str, Any] = {}
    origins: dict[tuple[str, str], str] = {}
    for layer in layers:
        for table, values in layer.document.items():
            earlier = document.get(table, {})
            if not isinstance(values, Mapping) or not isinstance(earlier, Mapping):
                document[table] = values  # not a table: reported by whoever reads it
                continue
            names = {snake(key) for key in values}
            # Another spelling from an earlier layer goes too; two spellings in one layer stay, and are
            # reported as given twice.
            merged = {key: value for key, value in earlier.items() if snake(key) not in names}
            merged.update(values)
            document[table] = merged
            origins.update(((table, name), layer.name) for name in names)
    return Layered(document, tuple(layers), origins)


def override_layer(items: Sequence[str], keys: TableKeys) -> Layer:
    """The --set KEY=VALUE items as a layer; a SettingsError listing every malformed one."""
    document: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key:
            problems.append(
                Problem(OVERRIDE, f"{key or item!r} is not KEY=VALUE", f"write e.g. {SET_EXAMPLES}")
            )
            continue
        parts = key.split(".")
        table, name = ("ami", parts[0]) if len(parts) == 1 else (parts[0], ".".join(parts[1:]))
        if table not in TABLES or "." in name or not name:
            problems.append(
                Problem(
                    f"{OVERRIDE} {key}",
                    "names no setting: a key is an [ami] setting, or live.NAME for one of [live]",
                    "give a table-valued setting whole, e.g. --set 'tags={ Team = \"ops\" }'",
                )
            )
            continue
        value = _override_value(table, name, text, keys, problems)
        if value is not None:
            document.setdefault(table, {})[name] = value
    if problems:
        raise SettingsError(problems, origin=OVERRIDE)
    return Layer(OVERRIDE, document, Path.cwd())  # relative files given with --set: the current folder


def _override_value(
    table: str, name: str, text: str, keys: TableKeys, problems: list[Problem]
) -> object | None:
    """The value of one --set item, typed as its setting's (None, with a problem, if it cannot be)."""
    setting = f"{OVERRIDE} {name}" if table == "ami" else f"{OVERRIDE} {table}.{name}"
    key = snake(name)
    secret = keys.is_secret(table, key)
    if keys.is_text(table, key):
        value: object = text
        if text.startswith(('"', "'")):  # TOML quotes are optional; a value that is not one is text
            try:
                parsed = _toml_value(text)
            except tomllib.TOMLDecodeError:
                parsed = None
            value = parsed if isinstance(parsed, str) else text
        if secret and not is_env_reference(str(value)):
            problems.append(_secret_on_command_line(setting, f"--set '{name}={{env:NAME}}'"))
            return None
        return value
    try:
        value = _toml_value(text)
    except tomllib.TOMLDecodeError:
        if key not in keys.known.get(table, frozenset()):
            return text  # an unknown key: its own problem (with a suggestion) comes when it is read
        shown = "the value" if secret else repr(text)
        problems.append(
            Problem(
                setting,
                f"{shown} is not a TOML value",
                f"write it as in the file, e.g. {SET_EXAMPLES}",
            )
        )
        return None
    if secret and isinstance(value, Mapping) and "content" in value:
        problems.append(_secret_on_command_line(setting, f"--set '{name}={{ local_file = \"pk.pem\" }}'"))
        return None
    return value


def _toml_value(text: str) -> object:
    """A TOML value written alone, as after `key =` in a file."""
    return tomllib.loads(f"value = {text}")["value"]


def _secret_on_command_line(setting: str, fix: str) -> Problem:
    return Problem(
        setting,
        "would put a secret on the command line, where every user of the machine can read it",
        f"pass it through a file or the environment: {fix}",
    )
