"""The plan, script and validate commands: load the settings, render, print.

They import nothing of boto3, moto or paramiko (`validate --live` loads the AWS side only when asked),
which keeps them fast.
"""

from __future__ import annotations

from amidsl.cli.support import (
    announce_config,
    emit,
    find_config,
    load_live_config,
    load_plan,
    refuse_example_credentials,
)
from amidsl.render.preview import render_json, render_text
from amidsl.render.shell import render_script
from amidsl.render.summary import image_words


def plan(*, config: list[str], set: list[str], phase: list[str], json: bool, output: str | None) -> None:
    """Preview the plan: each phase's numbered actions and the commands they run."""
    choice = find_config(config, set)
    announce_config(choice, data_on_stdout=True)
    built = load_plan(choice, phase)
    emit(render_json(built) if json else render_text(built), output)


def script(*, config: list[str], set: list[str], phase: list[str], output: str | None) -> None:
    """Render the plan as one reviewable bash script (exactly what a live build runs)."""
    choice = find_config(config, set)
    announce_config(choice, data_on_stdout=True)
    emit(render_script(load_plan(choice, phase)), output)


def validate(*, config: list[str], set: list[str], phase: list[str], live: bool) -> None:
    """Check the settings ([ami], [live], no unknown tables) and report every problem (exit status 2)."""
    choice = find_config(config, set)
    announce_config(choice, data_on_stdout=False)
    loaded = load_live_config(choice, phase)
    s = loaded.plan.settings
    print(f"settings OK: {image_words(s)}, phases: {', '.join(p.name for p in loaded.plan.phases)}")
    if live:
        refuse_example_credentials(choice, loaded)
        from amidsl.cli.build_commands import check_aws  # boto3 only for the AWS checks

        for line in check_aws(loaded):
            print(f"AWS OK: {line}")
