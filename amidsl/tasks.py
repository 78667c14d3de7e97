"""The invoke tasks behind `amidsl` and `inv`: thin wrappers that parse options and call the library."""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from amidsl.crate import server_spec
from amidsl.example import example_config_path
from amidsl.live.tasks import build, validate_live
from amidsl.plan import Plan, Spec, build_plan
from amidsl.render.preview import render_json, render_text
from amidsl.render.shell import render_script
from amidsl.settings import SettingsError, load_toml

BAD_INPUT = 2

CONFIG_HELP = "TOML settings file with an [ami] table (default: the built-in example)"
PHASE_HELP = "phase to include (repeatable; default: all phases in order)"
OUTPUT_HELP = "write to this file instead of standard output"


def load_spec(config: str | None) -> Spec:
    """The ami server spec for a settings file (or the built-in example)."""
    path = Path(config) if config else example_config_path()
    return server_spec(load_toml(path))


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


@task(
    iterable=["phase"],
    help={"config": CONFIG_HELP, "phase": PHASE_HELP, "format": "text or json", "output": OUTPUT_HELP},
)
def plan(c, config=None, phase=None, format="text", output=None):
    """Preview the plan: each phase's numbered actions and the commands they run."""
    if format not in ("text", "json"):
        raise Exit(f"--format {format!r}: choose text or json", code=BAD_INPUT)
    built = load_plan(config, phase)
    emit(render_json(built) if format == "json" else render_text(built), output)


@task(iterable=["phase"], help={"config": CONFIG_HELP, "phase": PHASE_HELP, "output": OUTPUT_HELP})
def script(c, config=None, phase=None, output=None):
    """Render the plan as one reviewable bash script (exactly what a live build runs)."""
    emit(render_script(load_plan(config, phase)), output)
    if output:
        os.chmod(output, 0o755)


@task(help={"config": CONFIG_HELP, "live": "also check AWS: credentials, bucket and region, image name"})
def validate(c, config=None, live=False):
    """Check the settings and report every problem (exit status 2 if there are any)."""
    built = load_plan(config, None)
    s = built.settings
    print(
        f"settings OK: image {s.image_name!r} ({s.arch}) in {s.region}, "
        f"bundle to s3://{s.s3_location}/, phases: {', '.join(p.name for p in built.phases)}"
    )
    if live:
        for line in validate_live(config):
            print(f"AWS OK: {line}")


ns = Collection(plan, script, validate)
ns.add_task(build)
