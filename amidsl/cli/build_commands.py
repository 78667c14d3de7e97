"""The live commands: `amidsl build` and the AWS checks behind `amidsl validate --live`.

Thin: parse options, load and validate the settings, call amidsl.live.build. Bad input exits with
status 2 and every problem; a failed build exits with status 1 and names the phase and action.
"""

from __future__ import annotations

from dataclasses import replace

from amidsl.cli.support import (
    LiveConfig,
    announce_config,
    find_config,
    load_live_config,
    refuse_example_credentials,
)
from amidsl.cli.table import FAILED, INTERRUPTED, CommandError
from amidsl.live.aws import Aws, AwsError, check_aws_side
from amidsl.live.build import build_on_host, make_ami, make_ami_from_group_node
from amidsl.live.ssh import NodeConnectionError
from amidsl.run.progress import Progress
from amidsl.run.runner import ON_ERROR_POLICIES, BuildError, BuildInterrupted
from amidsl.settings import SettingsError


def check_aws(loaded: LiveConfig) -> list[str]:
    """Check the AWS side of loaded settings before any node work; print-ready lines, or CommandError."""
    try:
        return check_aws_side(loaded.plan.settings, Aws(loaded.plan.settings, loaded.live))
    except (SettingsError, AwsError) as err:
        raise CommandError(str(err)) from None


def build(
    *,
    config: list[str],
    set: list[str],
    host: str | None,
    group: str | None,
    launch: bool,
    phase: list[str],
    on_error: str,
    trust_new_host_key: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Build the AMI on a real node over SSH, calling AWS with boto3."""
    if on_error not in ON_ERROR_POLICIES:
        raise CommandError(f"--on-error {on_error!r}: choose {', '.join(ON_ERROR_POLICIES)}")
    modes = [name for name, given in (("--host", host), ("--group", group), ("--launch", launch)) if given]
    if len(modes) > 1:
        raise CommandError(f"{' and '.join(modes)}: choose one of --host, --group and --launch")
    choice = find_config(config, set)
    announce_config(choice, data_on_stdout=False)
    loaded = load_live_config(choice, phase)
    refuse_example_credentials(choice, loaded.plan.settings)
    live = replace(loaded.live, trust_on_first_use=True) if trust_new_host_key else loaded.live
    host = host or (None if modes else live.host)
    if not modes and not host:
        raise CommandError(
            "say where to build: --host NODE, --group GROUP or --launch (or set host in [live])"
        )
    problems = live.required_for("launch") if launch else []
    if problems:
        raise CommandError(str(SettingsError(problems, origin=str(choice.path))))
    settings = loaded.plan.settings
    chosen = [p.name for p in loaded.plan.phases]
    progress = Progress.for_command(quiet=quiet, verbose=verbose)
    try:
        aws = Aws(settings, live)
        for line in check_aws_side(settings, aws, image_name_must_be_free="ami-register" in chosen):
            progress(f"ok: {line}")
        options = {"aws": aws, "on_error": on_error, "progress": progress}
        copies: dict[str, str] = {}  # a launched build reports its copies in the progress lines
        if launch:
            image_id = make_ami(loaded.spec, settings, live=live, phases=phase or None, **options)
        else:
            if group:
                result = make_ami_from_group_node(
                    group, settings, spec=loaded.spec, live=live, phases=chosen, **options
                )
            else:
                result = build_on_host(host, settings, spec=loaded.spec, live=live, phases=chosen, **options)
            image_id, copies = result.image_id, result.copies
    except SettingsError as err:
        raise CommandError(str(err)) from None
    except BuildInterrupted as err:
        raise CommandError(f"build interrupted: {err}", INTERRUPTED) from None
    except (BuildError, NodeConnectionError, AwsError) as err:
        raise CommandError(f"build failed: {err}", FAILED) from None
    except KeyboardInterrupt:
        # Before any phase ran (the AWS checks, a launch): no credentials reached a node.
        raise CommandError("build interrupted before any phase ran on a node", INTERRUPTED) from None
    if image_id:
        print(f"image {image_id} ({settings.image_name}) is registered in {settings.region}")
        for region, copy in copies.items():
            print(f"copy {copy} ({settings.image_name}) is available in {region}")
    else:
        print(f"phases done: {', '.join(chosen)}")
