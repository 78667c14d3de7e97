"""Helpers the amidsl command's tasks share: loading settings, clean exits, writing output."""

from __future__ import annotations

from pathlib import Path

from invoke.exceptions import Exit

from amidsl.crate import server_spec
from amidsl.example import example_config_path
from amidsl.plan import Plan, Spec, build_plan
from amidsl.settings import SettingsError, load_toml

BAD_INPUT = 2

CONFIG_HELP = "TOML settings file with an [ami] table (default: the built-in example)"
PHASE_HELP = "phase to include (repeatable; default: all phases in order)"
OUTPUT_HELP = "write to this file instead of standard output"


def load_spec(config: str | None, bundler: str | None = None) -> Spec:
    """The ami server spec for a settings file (or the built-in example); `bundler` overrides its own."""
    path = Path(config) if config else example_config_path()
    settings = load_toml(path)
    return server_spec(settings | {"bundler": bundler} if bundler else settings)


def load_plan(config: str | None, phases: list[str] | None) -> Plan:
    """Load, validate and plan; bad input becomes a clean exit with status 2 and every problem."""
    try:
        return build_plan(load_spec(config), phases=phases or None)
    except SettingsError as err:
        raise Exit(str(err), code=BAD_INPUT) from None


def emit(text: str, output: str | None) -> None:
    """Print text, or write it to `output` (reporting where)."""
    if not output:
        print(text, end="")
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise Exit(
            f"-o {output}: cannot write ({err.strerror}); choose a writable path", code=BAD_INPUT
        ) from None
    print(f"wrote {output}")
