"""Helpers the amidsl commands share: finding and loading the settings, writing output."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from amidsl.cli.table import STANDARD_OUTPUT, CommandError
from amidsl.example import example_config_path
from amidsl.live.settings import (
    LIVE_KEYS,
    LIVE_TEXT_KEYS,
    LiveSettings,
    anchor_live_paths,
    live_table,
    resolve_live,
)
from amidsl.model.plan import Plan, Spec, build_plan
from amidsl.settings import (
    AmiSettings,
    Problem,
    SettingsError,
    normalise_keys,
    read_settings_file,
    resolve,
)
from amidsl.settings.constants import BACKINGS
from amidsl.settings.files import anchor_local_files
from amidsl.settings.layers import TABLES, Layer, Layered, TableKeys, merge_layers, override_layer
from amidsl.settings.table import ROWS, SECRET_KEYS, SETTINGS, USER_KEYS
from amidsl.settings.variables import RunValues, expand_tables
from amidsl.strategies import server_spec

CONFIG_ENV = "AMIDSL_CONFIG"
LOCAL_CONFIG = "amidsl.toml"


@dataclass(frozen=True)
class ConfigChoice:
    """The settings a command uses and why: --config, $AMIDSL_CONFIG, ./amidsl.toml or the example.

    Several --config files are layered in order (a later file's key wins), then the --set items. The
    clock is read once, when the command chooses its settings, so `{date}` and `{timestamp}` are the
    same in everything one command shows and runs.
    """

    path: Path  # the last (or only) settings file
    origin: str
    under: tuple[Path, ...] = ()  # files read before `path`, whose keys it overrides
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE items, applied after every file
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every settings file, first to last."""
        return (*self.under, self.path)

    @property
    def files(self) -> list[str]:
        """Every settings file as given, first to last: what a result document names."""
        return [str(path) for path in self.paths]

    @property
    def is_example(self) -> bool:
        """True when no settings file was found and the built-in example stands in."""
        return self.origin == "built-in example"

    @property
    def git_dir(self) -> Path:
        """Where `{git_sha}` is asked: the last settings file's directory (the example: the current one)."""
        return Path.cwd() if self.is_example else self.path.parent

    def describe(self) -> str:
        """One line saying which settings are in use (the --set keys, never their values)."""
        if self.is_example:
            text = f"using the built-in example settings ({LOCAL_CONFIG} not found; give --config FILE)"
        else:
            text = f"using settings {' + '.join(str(p) for p in self.paths)} (from {self.origin})"
        if self.overrides:
            keys = ", ".join(dict.fromkeys(item.partition("=")[0].strip() for item in self.overrides))
            text += f", with --set {keys}"
        return text


def find_config(config: Sequence[str] | str | None, overrides: Sequence[str] = ()) -> ConfigChoice:
    """--config (one or more files), then $AMIDSL_CONFIG, then ./amidsl.toml, then the built-in example."""
    files = [config] if isinstance(config, str) else list(config or [])
    if files:
        paths = [Path(name) for name in files]
        return ConfigChoice(paths[-1], "--config", tuple(paths[:-1]), tuple(overrides))
    if os.environ.get(CONFIG_ENV):
        return ConfigChoice(Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}", overrides=tuple(overrides))
    if Path(LOCAL_CONFIG).is_file():
        return ConfigChoice(Path(LOCAL_CONFIG), f"./{LOCAL_CONFIG}", overrides=tuple(overrides))
    return ConfigChoice(example_config_path(), "built-in example", overrides=tuple(overrides))


def announce_config(choice: ConfigChoice, data_on_stdout: bool) -> None:
    """Say which settings are in use: on stderr when stdout carries data (a plan, a script, JSON)."""
    print(choice.describe(), file=sys.stderr if data_on_stdout else sys.stdout, flush=True)


def table_keys() -> TableKeys:
    """The keys of [ami] and [live]: every one, the strings, the secrets, the tables and lists of strings."""
    return TableKeys(
        known={"ami": frozenset(USER_KEYS), "live": frozenset(LIVE_KEYS)},
        text={"ami": frozenset(r.name for r in ROWS if r.given and r.holds_text), "live": LIVE_TEXT_KEYS},
        secret={"ami": SECRET_KEYS, "live": frozenset()},
        text_collections={
            "ami": frozenset(r.name for r in ROWS if r.given and (r.holds_pairs or r.holds_text_list))
        },
    )


def unread_by_backing(ami: Mapping[str, Any]) -> frozenset[str]:
    """The settings a build of the [ami] table's backing does not read (none while the backing is not
    one amidsl knows as written, e.g. made of a variable: then every setting is worked out)."""
    backing = ami.get("backing", SETTINGS["backing"].default)
    if backing not in BACKINGS:
        return frozenset()
    return frozenset(row.name for row in ROWS if row.backings and backing not in row.backings)


def load_layered(choice: ConfigChoice) -> Layered:
    """Read the settings files and the --set items, merge them, expand variables; SettingsError.

    Relative file paths are made absolute last, against the folder of the file that gave each key (the
    current folder for --set), so that a path made of variables is anchored as what it expands to.
    """
    keys = table_keys()
    layers = [Layer(str(path), _read_file(path, choice.origin), path.parent) for path in choice.paths]
    if choice.overrides:
        layers.append(override_layer(choice.overrides, keys))
    layered = merge_layers(layers)
    tables = {name: value for name, value in layered.document.items() if name in TABLES}
    tables = {name: value for name, value in tables.items() if isinstance(value, dict)}
    run = RunValues(now=choice.started, git_dir=choice.git_dir)
    # The settings this build's backing does not read are not read at all: nor are their variables.
    unread = unread_by_backing(tables.get("ami", {}))
    expanded, problems = expand_tables(
        tables,
        lambda table, key: keys.is_text(table, key) and not (table == "ami" and key in unread),
        keys.is_secret,
        run,
        is_text_collection=lambda table, key: (
            keys.is_text_collection(table, key) and not (table == "ami" and key in unread)
        ),
    )
    if problems:
        raise layered.error(problems)
    anchor = {"ami": anchor_local_files, "live": anchor_live_paths}
    for name, values in expanded.items():
        anchored: dict[str, Any] = {}
        for key, value in values.items():
            anchored.update(anchor[name]({key: value}, layered.folder_of(name, key)))
        expanded[name] = anchored
    return replace(layered, document={**layered.document, **expanded})


def _read_file(path: Path, origin: str) -> dict[str, Any]:
    """One settings file's document; its problems name where its path came from (--config, $AMIDSL_CONFIG)."""
    if origin == f"${CONFIG_ENV}":
        return read_settings_file(path, origin, f"set {CONFIG_ENV} to an existing TOML file, or unset it")
    return read_settings_file(path, origin)


def _ami_values(layered: Layered) -> dict[str, Any]:
    """The merged [ami] table, or a SettingsError saying no file has one."""
    table = layered.document.get("ami")
    if not isinstance(table, dict):
        where = "the file has" if len(layered.names) == 1 else "none of the files has"
        fix = "put the settings under an [ami] table header"
        raise SettingsError([Problem("[ami]", f"{where} no [ami] table", fix)], origin=layered.origin)
    return table


def load_settings(choice: ConfigChoice, bundler: str | None = None) -> tuple[Spec, AmiSettings]:
    """The ami spec and its resolved settings; `bundler` overrides the settings' own. SettingsError.

    The typos a file may hold elsewhere are refused too (see `typos`), so that what `validate` refuses
    no other command takes.
    """
    layered = load_layered(choice)
    problems = typos(layered)
    try:
        loaded = _resolve_ami(layered, bundler)
    except SettingsError as err:
        raise SettingsError(problems + err.problems, origin=layered.origin) from None
    if problems:
        raise SettingsError(problems, origin=layered.origin)
    return loaded


def _resolve_ami(layered: Layered, bundler: str | None = None) -> tuple[Spec, AmiSettings]:
    raw = _ami_values(layered)
    raw = raw | {"bundler": bundler} if bundler else raw
    try:
        return server_spec(raw), resolve(raw, origin=layered.origin)
    except SettingsError as err:
        raise layered.error(err.problems) from None


def load_plan(choice: ConfigChoice, phases: list[str] | None) -> Plan:
    """Load, validate and plan; bad input becomes a CommandError with status 2 and every problem."""
    try:
        spec, settings = load_settings(choice)
        return build_plan(spec, settings, phases=phases or None)
    except SettingsError as err:
        raise CommandError(str(err)) from None


def emit(text: str, output: str | None) -> None:
    """Print text, or write it to `output` (a new file gets 0666 less the umask, as `>` would give);
    an `output` of '-' is standard output."""
    if not output or output == STANDARD_OUTPUT:
        print(text, end="")
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise CommandError(f"-o {output}: cannot write ({err.strerror}); choose a writable path") from None
    print(f"wrote {output}")


KNOWN_TABLES = TABLES  # [ami] and [live]


@dataclass(frozen=True)
class LiveConfig:
    """A settings file's spec (from [ami]), its plan for the chosen phases, and its [live] settings."""

    spec: Spec
    plan: Plan
    live: LiveSettings
    origin: str  # every file (and --set) the settings came from, for the head of a message


def unknown_tables(document: dict[str, Any]) -> list[Problem]:
    """A problem for each top-level table amidsl does not read (a typo like [aws] or [Live])."""
    problems = []
    for name in document:
        if name not in KNOWN_TABLES:
            close = difflib.get_close_matches(name, KNOWN_TABLES, n=1)
            hint = f"did you mean [{close[0]}]?" if close else "amidsl reads [ami] and [live]"
            problems.append(Problem(f"[{name}]", "is not a table amidsl knows", f"remove it ({hint})"))
    return problems


def unknown_tables_in(layered: Layered) -> list[Problem]:
    """The tables amidsl does not read, in every layer, each naming its file when there are several."""
    problems = []
    for layer in layered.layers:
        found = unknown_tables(layer.document)
        if len(layered.layers) > 1:
            found = [replace(p, setting=f"{p.setting} (in {layer.name})") for p in found]
        problems += found
    return problems


def typos(layered: Layered) -> list[Problem]:
    """What the commands that use only [ami] refuse of the rest: unknown tables and unknown [live] keys.

    They check no [live] value: an identity file, say, may exist only on the machine that builds.
    """
    problems = unknown_tables_in(layered)
    live = layered.document.get("live", {})
    if not isinstance(live, Mapping):
        return [
            *problems,
            Problem("[live]", "is not a table", "write the live settings under a [live] header"),
        ]
    found: list[Problem] = []
    normalise_keys(live, LIVE_KEYS, found, table="live.")
    return problems + layered.annotate(found)


def load_live_config(choice: ConfigChoice, phases: list[str] | None = None) -> LiveConfig:
    """Load and validate [ami] and [live] of the settings, with every problem in one CommandError."""
    try:
        layered = load_layered(choice)  # each file read and parsed once for all three checks
    except SettingsError as err:
        raise CommandError(str(err)) from None
    problems = unknown_tables_in(layered)
    plan = live = None
    try:
        spec, settings = _resolve_ami(layered)
        plan = build_plan(spec, settings, phases=phases or None)
    except SettingsError as err:
        problems += err.problems
    try:
        live_values = live_table(layered.document, choice.path)
        live = resolve_live(live_values, origin=f"{layered.origin} [live]")
    except SettingsError as err:
        problems += layered.annotate(err.problems)
    if problems:
        raise CommandError(str(SettingsError(problems, origin=layered.origin)))
    assert plan is not None and live is not None
    return LiveConfig(spec, plan, live, layered.origin)


def refuse_example_credentials(choice: ConfigChoice, loaded: LiveConfig) -> None:
    """Stop a live command before it touches AWS or a node when the settings are the throwaway example."""
    settings = loaded.plan.settings
    if choice.is_example:
        raise CommandError(
            "--config: live builds and AWS checks need your settings file ([ami] and [live]); "
            f"give --config FILE, set ${CONFIG_ENV}, or write ./{LOCAL_CONFIG}"
        )
    example = [
        name
        for name in ("private_key_source", "certificate_source")
        if getattr(settings, name) is not None and getattr(settings, name).example
    ]
    if example:
        raise CommandError(
            f"{loaded.origin}: {' and '.join(example)} = {{ example = true }} is amidsl's throwaway example "
            "pair, which AWS never accepts; give your own files, e.g. "
            '{ local_file = "~/.ec2/pk-XXXX.pem" }'
        )
