"""Helpers the amidsl commands share: finding and loading the settings, writing output."""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amidsl.cli.table import CommandError
from amidsl.example import example_config_path
from amidsl.live.settings import LiveSettings, live_table, resolve_live
from amidsl.model.plan import Plan, Spec, build_plan
from amidsl.settings import AmiSettings, Problem, SettingsError, ami_table, load_toml, read_settings_file
from amidsl.strategies import server_spec

CONFIG_ENV = "AMIDSL_CONFIG"
LOCAL_CONFIG = "amidsl.toml"


@dataclass(frozen=True)
class ConfigChoice:
    """The settings file a command uses and why: --config, $AMIDSL_CONFIG, ./amidsl.toml or the example."""

    path: Path
    origin: str

    @property
    def is_example(self) -> bool:
        """True when no settings file was found and the built-in example stands in."""
        return self.origin == "built-in example"

    def describe(self) -> str:
        """One line saying which settings are in use."""
        if self.is_example:
            return f"using the built-in example settings ({LOCAL_CONFIG} not found; give --config FILE)"
        return f"using settings {self.path} (from {self.origin})"


def find_config(config: str | None) -> ConfigChoice:
    """--config, then $AMIDSL_CONFIG, then ./amidsl.toml, then the built-in example."""
    if config:
        return ConfigChoice(Path(config), "--config")
    if os.environ.get(CONFIG_ENV):
        return ConfigChoice(Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}")
    if Path(LOCAL_CONFIG).is_file():
        return ConfigChoice(Path(LOCAL_CONFIG), f"./{LOCAL_CONFIG}")
    return ConfigChoice(example_config_path(), "built-in example")


def announce_config(choice: ConfigChoice, data_on_stdout: bool) -> None:
    """Say which settings are in use: on stderr when stdout carries data (a plan, a script, JSON)."""
    print(choice.describe(), file=sys.stderr if data_on_stdout else sys.stdout, flush=True)


def load_spec(choice: ConfigChoice, bundler: str | None = None) -> Spec:
    """The ami server spec for a settings file; `bundler` overrides the file's own."""
    settings = load_toml(choice.path)
    return server_spec(settings | {"bundler": bundler} if bundler else settings)


def load_plan(choice: ConfigChoice, phases: list[str] | None) -> Plan:
    """Load, validate and plan; bad input becomes a CommandError with status 2 and every problem."""
    try:
        return build_plan(load_spec(choice), phases=phases or None)
    except SettingsError as err:
        raise CommandError(str(err)) from None


def emit(text: str, output: str | None) -> None:
    """Print text, or write it to `output` (a new file gets 0666 less the umask, as `>` would give)."""
    if not output:
        print(text, end="")
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise CommandError(f"-o {output}: cannot write ({err.strerror}); choose a writable path") from None
    print(f"wrote {output}")


KNOWN_TABLES = ("ami", "live")


@dataclass(frozen=True)
class LiveConfig:
    """A settings file's spec (from [ami]), its plan for the chosen phases, and its [live] settings."""

    spec: Spec
    plan: Plan
    live: LiveSettings


def unknown_tables(document: dict[str, Any]) -> list[Problem]:
    """A problem for each top-level table amidsl does not read (a typo like [aws] or [Live])."""
    problems = []
    for name in document:
        if name not in KNOWN_TABLES:
            close = difflib.get_close_matches(name, KNOWN_TABLES, n=1)
            hint = f"did you mean [{close[0]}]?" if close else "amidsl reads [ami] and [live]"
            problems.append(Problem(f"[{name}]", "is not a table amidsl knows", f"remove it ({hint})"))
    return problems


def load_live_config(choice: ConfigChoice, phases: list[str] | None = None) -> LiveConfig:
    """Load and validate [ami] and [live] of a settings file, with every problem in one CommandError."""
    try:
        document = read_settings_file(choice.path)  # read and parsed once for all three checks
    except SettingsError as err:
        raise CommandError(str(err)) from None
    problems = unknown_tables(document)
    plan = live = None
    try:
        spec = server_spec(ami_table(document, choice.path))
        plan = build_plan(spec, phases=phases or None)
    except SettingsError as err:
        problems += err.problems
    try:
        live = resolve_live(live_table(document, choice.path), origin=f"{choice.path} [live]")
    except SettingsError as err:
        problems += err.problems
    if problems:
        raise CommandError(str(SettingsError(problems, origin=str(choice.path))))
    assert plan is not None and live is not None
    return LiveConfig(spec, plan, live)


def refuse_example_credentials(choice: ConfigChoice, settings: AmiSettings) -> None:
    """Stop a live command before it touches AWS or a node when the settings are the throwaway example."""
    if choice.is_example:
        raise CommandError(
            "--config: live builds and AWS checks need your settings file ([ami] and [live]); "
            f"give --config FILE, set ${CONFIG_ENV}, or write ./{LOCAL_CONFIG}"
        )
    example = [
        name for name in ("private_key_source", "certificate_source") if getattr(settings, name).example
    ]
    if example:
        raise CommandError(
            f"{choice.path}: {' and '.join(example)} = {{ example = true }} is amidsl's throwaway example "
            "pair, which AWS never accepts; give your own files, e.g. "
            '{ local_file = "~/.ec2/pk-XXXX.pem" }'
        )
