"""The live commands: `amidsl build` and the AWS checks behind `amidsl validate --live`.

Thin: parse options, load and validate the settings, call amidsl.live.build. Bad input exits with
status 2 and every problem; a failed build exits with status 1 and names the phase and action.

JSON schema "amidsl.build/2" (`--json`, `--result FILE`; within a version fields are only ever added;
version 2 made "config" the list of every settings file, where 1 named only the last): the fields of
every build result (amidsl/run/result.py) and "node": where the build ran (user@host:port; for
--launch, the instance and its address), or null when it did not get there.
"""

from __future__ import annotations

import json as json_text
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TextIO

from amidsl.cli.support import (
    LiveConfig,
    announce_config,
    find_config,
    load_live_config,
    refuse_example_credentials,
)
from amidsl.cli.table import FAILED, INTERRUPTED, CommandError
from amidsl.live.aws import Aws, AwsError, check_aws_side
from amidsl.live.build import build_on_host, build_on_launched_node, make_ami_from_group_node
from amidsl.live.settings import LiveSettings
from amidsl.live.ssh import NodeConnectionError
from amidsl.run.progress import Progress
from amidsl.run.result import registered_lines, result_document
from amidsl.run.runner import ON_ERROR_POLICIES, BuildError, BuildInterrupted, BuildResult
from amidsl.settings import AmiSettings, SettingsError

SCHEMA = "amidsl.build/2"


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
    json: bool,
    result: str | None,
    log: str | None,
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
    announce_config(choice, data_on_stdout=json)
    loaded = load_live_config(choice, phase)
    refuse_example_credentials(choice, loaded)
    live = replace(loaded.live, trust_on_first_use=True) if trust_new_host_key else loaded.live
    host = host or (None if modes else live.host)
    if not modes and not host:
        raise CommandError(
            "say where to build: --host NODE, --group GROUP or --launch (or set host in [live])"
        )
    problems = live.required_for("launch") if launch else []
    if problems:
        raise CommandError(str(SettingsError(problems, origin=loaded.origin)))
    settings = loaded.plan.settings
    chosen = [p.name for p in loaded.plan.phases]
    with _opened("--log", log, "a") as log_file, _opened("--result", result, "w") as result_file:
        # With --json, standard output carries the result document alone.
        progress = Progress.for_command(
            quiet=quiet, verbose=verbose, stream=sys.stderr if json else sys.stdout, log=log_file
        )
        progress.log_line(choice.describe())
        outcome: BuildResult | None = None
        made: BuildResult | None = None  # the result, or what a failed build made
        failure: CommandError | None = None
        try:
            outcome = made = _run_build(
                settings, live, loaded, host, group, launch, phase, chosen, on_error, progress
            )
        except BuildError as err:
            made, failure = err.made, _build_failure(err)
        except CommandError as err:
            failure = err
        finally:
            progress.finish()
        error = str(failure) if failure else None
        document = result_document(
            SCHEMA, settings, made, error, config=choice.files, config_from=choice.origin
        )
        document["node"] = (made.node or None) if made else None
        text = json_text.dumps(document, indent=2, sort_keys=True)
        if result_file is not None:
            result_file.write(text + "\n")
        if json:
            print(text)
        if failure is not None:
            raise failure
        assert outcome is not None
        for line in result_lines(settings, outcome, chosen):
            progress.log_line(line)
            print(line, file=sys.stderr if json else sys.stdout)


def result_lines(settings: AmiSettings, outcome: BuildResult, chosen: list[str]) -> list[str]:
    """What a finished build made, as `simulate` says it."""
    if not outcome.image_id:
        return [f"phases done: {', '.join(chosen)}"]
    return registered_lines(outcome.settings, outcome.image_id, outcome.copies)


def _build_failure(err: BuildError) -> CommandError:
    """A failed or interrupted build as the command's error: exit status 1, or 130 for Ctrl-C."""
    if isinstance(err, BuildInterrupted):
        return CommandError(f"build interrupted: {err}", INTERRUPTED)
    return CommandError(f"build failed: {err}", FAILED)


@contextmanager
def _opened(flag: str, path: str | None, mode: str) -> Iterator[TextIO | None]:
    """The file an option names, opened before any network call (a bad path is a usage error)."""
    if not path:
        yield None
        return
    try:
        handle = open(path, mode, encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise CommandError(f"{flag} {path}: cannot write ({err.strerror}); choose a writable path") from None
    with handle:
        yield handle


def _run_build(
    settings: AmiSettings,
    live: LiveSettings,
    loaded: LiveConfig,
    host: str | None,
    group: str | None,
    launch: bool,
    phase: list[str],
    chosen: list[str],
    on_error: str,
    progress: Progress,
) -> BuildResult:
    """Check the AWS side, then run the build where the options say; a failed phase as BuildError (with
    what the build made), other failures as CommandError."""
    try:
        aws = Aws(settings, live)
        for line in check_aws_side(settings, aws, image_name_must_be_free="ami-register" in chosen):
            progress(f"ok: {line}")
        options = {"aws": aws, "on_error": on_error, "progress": progress}
        if launch:
            return build_on_launched_node(loaded.spec, settings, live=live, phases=phase or None, **options)
        if group:
            return make_ami_from_group_node(
                group, settings, spec=loaded.spec, live=live, phases=chosen, **options
            )
        assert host is not None
        return build_on_host(host, settings, spec=loaded.spec, live=live, phases=chosen, **options)
    except SettingsError as err:
        raise CommandError(str(err)) from None
    except BuildError:
        raise  # with what it made, for the result document
    except (NodeConnectionError, AwsError) as err:
        raise CommandError(f"build failed: {err}", FAILED) from None
    except KeyboardInterrupt:
        # Before any phase ran (the AWS checks, a launch): no credentials reached a node.
        raise CommandError("build interrupted before any phase ran on a node", INTERRUPTED) from None
