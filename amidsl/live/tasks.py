"""invoke tasks for live builds: `amidsl build` and the AWS checks behind `amidsl validate --live`.

Thin: parse options, load and validate the settings, call amidsl.live.build. Bad input exits with
status 2 and every problem; a failed build exits with status 1 and names the phase and action.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from invoke import Context, task
from invoke.exceptions import Exit

from amidsl.crate import server_spec
from amidsl.live.aws import Aws, AwsError, check_aws_side
from amidsl.live.build import build_on_host, make_ami, make_ami_from_group_node
from amidsl.live.settings import LiveSettings, load_live_table, resolve_live
from amidsl.live.ssh import NodeConnectionError
from amidsl.plan import Plan, Spec, build_plan
from amidsl.runner import ON_ERROR_POLICIES, BuildError, BuildInterrupted
from amidsl.settings import Problem, SettingsError, load_toml

BAD_INPUT = 2
BUILD_FAILED = 1
INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


@dataclass(frozen=True)
class LiveConfig:
    """A settings file's spec (from [ami]), its plan for the chosen phases, and its [live] settings."""

    spec: Spec
    plan: Plan
    live: LiveSettings


def load_live_config(config: str | None, phases: list[str] | None = None) -> LiveConfig:
    """Load and validate [ami] and [live] of a settings file; bad input is an Exit with status 2."""
    if not config:
        raise Exit(
            "--config: live builds and AWS checks need your settings file ([ami] and [live]); "
            "give --config FILE",
            code=BAD_INPUT,
        )
    try:
        spec = server_spec(load_toml(config))
        problems: list[Problem] = []
        try:
            plan = build_plan(spec, phases=phases or None)
        except SettingsError as err:
            problems += err.problems
        try:
            live = resolve_live(load_live_table(config), origin=f"{config} [live]")
        except SettingsError as err:
            problems += err.problems
        if problems:
            raise SettingsError(problems, origin=config)
    except SettingsError as err:
        raise Exit(str(err), code=BAD_INPUT) from None
    return LiveConfig(spec, plan, live)


def validate_live(config: str | None) -> list[str]:
    """Check the AWS side of a settings file before any node work; print-ready lines, or Exit(2)."""
    loaded = load_live_config(config)
    try:
        return check_aws_side(loaded.plan.settings, Aws(loaded.plan.settings, loaded.live))
    except (SettingsError, AwsError) as err:
        raise Exit(str(err), code=BAD_INPUT) from None


def _progress(line: str) -> None:
    print(line, flush=True)


@task(
    iterable=["phase"],
    help={
        "config": "TOML settings file with [ami] and [live] tables",
        "host": "build on this node (an address or ~/.ssh/config alias; default: [live] host)",
        "group": "build on a running node tagged amidsl:group=GROUP",
        "launch": "launch a node from the [live] launch settings, build, terminate it",
        "phase": "phase to run (repeatable; default: all, or all but cleanup with --launch)",
        "on-error": "cleanup (default: remove the credentials, terminate a launched node), cleanup-all "
        "(also remove what a failed upload or registration left in S3) or abort",
        "trust-new-host-key": "accept and remember an unknown host key (never a changed one)",
    },
)
def build(
    c: Context,
    config: str | None = None,
    host: str | None = None,
    group: str | None = None,
    launch: bool = False,
    phase: list[str] | None = None,
    on_error: str = "cleanup",
    trust_new_host_key: bool = False,
) -> None:
    """Build the AMI on a real node over SSH, calling AWS with boto3."""
    if on_error not in ON_ERROR_POLICIES:
        raise Exit(f"--on-error {on_error!r}: choose {', '.join(ON_ERROR_POLICIES)}", code=BAD_INPUT)
    modes = [name for name, given in (("--host", host), ("--group", group), ("--launch", launch)) if given]
    if len(modes) > 1:
        raise Exit(f"{' and '.join(modes)}: choose one of --host, --group and --launch", code=BAD_INPUT)
    loaded = load_live_config(config, phase)
    live = replace(loaded.live, trust_on_first_use=True) if trust_new_host_key else loaded.live
    host = host or (None if modes else live.host)
    if not modes and not host:
        raise Exit(
            "say where to build: --host NODE, --group GROUP or --launch (or set host in [live])",
            code=BAD_INPUT,
        )
    problems = live.required_for("launch") if launch else []
    if problems:
        raise Exit(str(SettingsError(problems, origin=config or "[live]")), code=BAD_INPUT)
    settings = loaded.plan.settings
    chosen = [p.name for p in loaded.plan.phases]
    try:
        aws = Aws(settings, live)
        for line in check_aws_side(settings, aws, image_name_must_be_free="ami-register" in chosen):
            _progress(f"ok: {line}")
        options = {"aws": aws, "on_error": on_error, "progress": _progress}
        if launch:
            image_id = make_ami(loaded.spec, settings, live=live, phases=phase or None, **options)
        elif group:
            image_id = make_ami_from_group_node(
                group, settings, spec=loaded.spec, live=live, phases=chosen, **options
            ).image_id
        else:
            image_id = build_on_host(
                host, settings, spec=loaded.spec, live=live, phases=chosen, **options
            ).image_id
    except SettingsError as err:
        raise Exit(str(err), code=BAD_INPUT) from None
    except BuildInterrupted as err:
        raise Exit(f"build interrupted: {err}", code=INTERRUPTED) from None
    except (BuildError, NodeConnectionError, AwsError) as err:
        raise Exit(f"build failed: {err}", code=BUILD_FAILED) from None
    except KeyboardInterrupt:
        # Before any phase ran (the AWS checks, a launch): no credentials reached a node.
        raise Exit("build interrupted before any phase ran on a node", code=INTERRUPTED) from None
    if image_id:
        print(f"image {image_id} ({settings.image_name}) is registered in {settings.region}")
    else:
        print(f"phases done: {', '.join(chosen)}")
