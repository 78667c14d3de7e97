"""The invoke tasks behind `amidsl` and `inv`: thin wrappers that parse options and call the library."""

from __future__ import annotations

import os

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from amidsl.bundle.tasks import bundle_image, image_ls, unbundle, verify_bundle
from amidsl.cli_support import BAD_INPUT, CONFIG_HELP, OUTPUT_HELP, PHASE_HELP, emit, load_plan
from amidsl.live.tasks import build, validate_live
from amidsl.render.preview import render_json, render_text
from amidsl.render.shell import render_script
from simulator.tasks import simulate


@task(
    iterable=["phase"],
    help={"config": CONFIG_HELP, "phase": PHASE_HELP, "format": "text or json", "output": OUTPUT_HELP},
)
def plan(
    c: Context,
    config: str | None = None,
    phase: list[str] | None = None,
    format: str = "text",
    output: str | None = None,
) -> None:
    """Preview the plan: each phase's numbered actions and the commands they run."""
    if format not in ("text", "json"):
        raise Exit(f"--format {format!r}: choose text or json", code=BAD_INPUT)
    built = load_plan(config, phase)
    emit(render_json(built) if format == "json" else render_text(built), output)


@task(iterable=["phase"], help={"config": CONFIG_HELP, "phase": PHASE_HELP, "output": OUTPUT_HELP})
def script(
    c: Context, config: str | None = None, phase: list[str] | None = None, output: str | None = None
) -> None:
    """Render the plan as one reviewable bash script (exactly what a live build runs)."""
    emit(render_script(load_plan(config, phase)), output)
    if output:
        os.chmod(output, 0o755)


@task(help={"config": CONFIG_HELP, "live": "also check AWS: credentials, bucket and region, image name"})
def validate(c: Context, config: str | None = None, live: bool = False) -> None:
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


ns = Collection(plan, script, validate, simulate, bundle_image, verify_bundle, unbundle, image_ls)
ns.add_task(build)
