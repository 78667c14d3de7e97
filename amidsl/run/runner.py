"""Running a plan: the phase loop every executing back-end (simulator, live) shares.

A back-end knows how to run the node actions of a phase (the simulator on a fake node, the live
back-end as the rendered script over SSH) and how to make an AWS call. This module does the rest the same
way for both: phases in order, controller-side actions (API calls, storing results into the settings,
checks), run-time values such as the image id, the transcript, and what happens on failure: the error
names the phase and the action, and with `on_error="cleanup"` what the build strategy put on the node
is removed (the credentials, or amidsl's node program; the strategy says which, and how to resume),
with "cleanup-all" also what a failed upload or registration left in S3 (see amidsl.run.leftovers). The
loop knows no strategy by name: it asks `strategy_of(settings)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from amidsl.model.actions import (
    CONTROLLER_ACTIONS,
    NATIVE_CONTROLLER_ACTIONS,
    PUBLISH_ACTIONS,
    Action,
    AwsCall,
    CheckResult,
    NodeProgram,
    PhasePlan,
    RuntimeValue,
    UpdateSettings,
    UploadSnapshot,
    WaitForImage,
)
from amidsl.model.plan import Plan
from amidsl.printable import printable
from amidsl.run.block_stream import BlockStreamFailed
from amidsl.run.ebs_upload import SnapshotUploadError
from amidsl.run.leftovers import UPLOADING_PHASES, leftovers_note
from amidsl.run.publish import PublishFailed, run_publish_step
from amidsl.run.snapshot_step import SnapshotStepFailed, run_upload_snapshot
from amidsl.secrets import redact
from amidsl.settings import AmiSettings
from amidsl.strategies import Strategy, strategy_of
from amidsl.strategies.native_controller import ControllerStepFailed, run_controller_step, secret_values
from amidsl.strategies.register import copies

# cleanup: remove the credentials from the node; cleanup-all: also what a failed upload or registration
# left in S3; abort: leave everything for debugging.
ON_ERROR_POLICIES = ("cleanup", "cleanup-all", "abort")
# Run by the runner one at a time: controller-side actions, and node-program runs, which the controller
# drives (it sends the request on stdin and reads the report back).
DRIVEN_BY_CONTROLLER = (*CONTROLLER_ACTIONS, NodeProgram)
OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class ActionRecord:
    """One action as it ran: what, where, its exit status and output (secrets redacted)."""

    phase: str
    index: int
    description: str
    command: str
    status: int
    output: str


class ActionFailed(Exception):
    """Raised by a back-end when a node action fails; the runner turns it into a BuildError."""

    def __init__(
        self,
        index: int,
        status: int,
        output: str,
        records: Sequence[ActionRecord] = (),
        resume: str = "",
    ) -> None:
        super().__init__(f"action {index} failed with exit status {status}")
        self.index = index
        self.status = status
        self.output = output
        self.records = list(records)
        self.resume = resume  # how to go on, when the action knows better than the strategy


class ActionInterrupted(KeyboardInterrupt):
    """Raised by a back-end for Ctrl-C, naming the action that was running (a KeyboardInterrupt still).

    index is None when the back-end does not know the plan's numbering (the runner fills it in); note
    says what the interruption did on the node (e.g. that the node program was stopped) or in AWS (an
    unfinished snapshot deleted, a completed one kept); resume, when given, how to go on from there.
    """

    def __init__(self, index: int | None, note: str = "", resume: str = "") -> None:
        super().__init__(f"interrupted during action {index}")
        self.index = index
        self.note = note
        self.resume = resume


class NodeBackend(Protocol):
    """What an executing back-end provides to the runner."""

    def run_node_actions(
        self, phase: str, actions: Sequence[tuple[int, Action]], values: dict[str, str]
    ) -> list[ActionRecord]:
        """Run a phase's node actions (numbered as in the plan); raise ActionFailed on the first failure."""
        ...

    def call_aws(self, action: AwsCall, params: dict[str, Any]) -> dict[str, Any]:
        """Make one AWS API call from the controller and return its result."""
        ...

    def secrets(self) -> Iterable[str]:
        """The secret values in play, so the runner can redact them from what it reports."""
        ...

    def pause(self, seconds: float) -> None:
        """Wait between two polls of an image's state."""
        ...

    def client(self, service: str, region: str) -> Any:
        """A boto3 client of the build's account in `region` (force_deregister, bundle_tags)."""
        ...


class BuildError(Exception):
    """A build failed: which phase and action, the exit status, the output's tail, and the node's state."""

    def __init__(
        self,
        phase: str,
        index: int,
        description: str,
        status: int | None,
        output: str,
        cleanup_note: str,
        transcript: Sequence[ActionRecord] = (),
        resume: str = "",
        cause: str = "",
        made: BuildResult | None = None,
    ) -> None:
        self.phase = phase
        self.index = index
        self.description = description
        self.status = status
        self.output = output
        self.cleanup_note = cleanup_note
        self.transcript = list(transcript)
        self.resume = resume
        self.cause = cause or (f"failed with exit status {status}" if status is not None else "failed")
        # What the run made before it failed (image and snapshot ids, copies, the finished phases'
        # timings, the bundle's parts): a result document reports it. None where it is not known.
        self.made = made
        # The node's output may hold escape sequences: shown, they must not drive the user's terminal.
        tail = printable("\n".join(output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:]))
        message = f"phase {phase}, action {index} ({description}) {self.cause}"
        if tail:
            message += "\n" + "\n".join(f"  | {line}" for line in tail.splitlines())
        message += f"\n{cleanup_note}\n{resume or resume_hint(phase, credentials_removed=False)}"
        super().__init__(message)


class BuildInterrupted(BuildError):
    """The build was interrupted (Ctrl-C): which phase and action ran, and the node's state."""


@dataclass
class BuildResult:
    """What a finished build left: the final settings (with the image id) and the transcript."""

    settings: AmiSettings
    transcript: list[ActionRecord] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    copies: dict[str, str] = field(default_factory=dict)  # region -> id of the image's copy there
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds it took
    # The bundle's parts as the node program reported them (filename, size, sha1, md5); None when the
    # build strategy's tools do not report them.
    parts: list[dict[str, Any]] | None = None
    node: str = ""  # where it ran (user@host:port, or the instance), set by the live back-end

    @property
    def image_id(self) -> str | None:
        """The registered image's id, if the build registered one."""
        return self.settings.image_id


def resume_hint(
    phase: str,
    credentials_removed: bool,
    strategy: Strategy | None = None,
    settings: AmiSettings | None = None,
) -> str:
    """How to carry on after a failure in `phase`: the strategy's own advice (given the settings with the
    run's values so far), else the generic one."""
    special = strategy.resume_hint(settings, phase) if strategy and settings else None
    if special:
        return special
    if credentials_removed and phase not in ("install", "configure", "cleanup"):
        return (
            "To resume, fix the cause, then run configure (the credentials were removed) and the "
            f"phases from {phase} on."
        )
    return f"To resume, fix the cause and run again from phase {phase}."


def split_by_side(phase: PhasePlan) -> list[tuple[bool, list[tuple[int, Action]]]]:
    """The phase's numbered actions in consecutive runs: (on_controller, actions)."""
    runs: list[tuple[bool, list[tuple[int, Action]]]] = []
    for index, action in phase.numbered():
        side = isinstance(action, DRIVEN_BY_CONTROLLER)
        if not runs or runs[-1][0] != side:
            runs.append((side, []))
        runs[-1][1].append((index, action))
    return runs


def resolve_value(value: Any, values: dict[str, str]) -> Any:
    """Replace run-time placeholders (deeply) with their values; an unknown one is an error."""
    if isinstance(value, RuntimeValue):
        if value.setting not in values:
            raise KeyError(f"{value.setting} is not known yet: run the {value.produced_by} phase first")
        return values[value.setting]
    if isinstance(value, (tuple, list)):
        return [resolve_value(v, values) for v in value]
    if isinstance(value, dict):
        return {k: resolve_value(v, values) for k, v in value.items()}
    return value


def run_plan(
    plan: Plan,
    backend: NodeBackend,
    on_error: str = "cleanup",
    progress: Callable[[str], None] = lambda line: None,
) -> BuildResult:
    """Run the plan's phases in order on the back-end; raise BuildError naming the failed action."""
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, not {on_error!r}")
    settings = plan.settings
    # What an earlier run made, given to resume it (the image to test, the snapshot to register).
    values = {
        name: value
        for name, value in (("image_id", settings.image_id), ("snapshot_id", settings.snapshot_id))
        if value
    }
    results: dict[str, Any] = {}
    result = BuildResult(settings)
    secrets = list(backend.secrets())
    for phase in plan.phases:
        started = time.monotonic()
        for on_controller, actions in split_by_side(phase):
            on_node = resume_said = ""
            # Every way out of a run of actions (a failure, Ctrl-C, an unexpected error) applies the
            # on-error policy before the build ends, and ends as a BuildError.
            try:
                if actions[0][0] == 1:
                    progress(f"phase {phase.name}")
                if on_controller:
                    for index, action in actions:
                        try:
                            record = _run_controller_action(
                                phase.name, index, action, backend, values, results, settings, progress
                            )
                        except KeyboardInterrupt as interrupt:
                            if isinstance(interrupt, ActionInterrupted) and interrupt.index is not None:
                                raise
                            said = getattr(interrupt, "note", ""), getattr(interrupt, "resume", "")
                            raise ActionInterrupted(index, *said) from None
                        progress(f"  [{phase.name} {index}] {action.description}: ok [{record.command}]")
                        result.transcript.append(record)
                else:
                    result.transcript += backend.run_node_actions(phase.name, actions, dict(values))
            except ActionFailed as failure:
                result.transcript += failure.records
                resume_said = failure.resume
                failed_action = dict(actions).get(failure.index, phase.actions[failure.index - 1])
                description = failed_action.description
                if on_controller:  # a node back-end reports its own failed action's line
                    where = ran_at(failed_action)
                    progress(f"  [{phase.name} {failure.index}] {description}: failed [{where}]")
                failed = (BuildError, failure.index, description, failure.status, failure.output, "")
            except KeyboardInterrupt as interrupt:
                on_node = getattr(interrupt, "note", "")
                resume_said = getattr(interrupt, "resume", "")
                running = dict(actions)
                if isinstance(interrupt, ActionInterrupted) and interrupt.index in running:
                    index, cause = interrupt.index, "was interrupted (Ctrl-C)"
                else:
                    index, cause = actions[0][0], _interrupted(actions)
                failed = (BuildInterrupted, index, running[index].description, None, "", cause)
            except Exception as err:
                index, action = actions[0]
                cause = f"failed with an unexpected error ({type(err).__name__})"
                failed = (BuildError, index, action.description, None, f"{type(err).__name__}: {err}", cause)
            else:
                continue
            kind, index, description, status, output, cause = failed
            removed, note = _after_failure(plan, backend, on_error, result, phase.name, values)
            if kind is BuildInterrupted and on_node:
                note = f"{on_node}\n{note}"
            resume_from = phase.name
            hidden = [*secrets, *secret_values(results)]
            registered = values.get("image_id") not in (None, settings.image_id)
            if phase.name in UPLOADING_PHASES and registered:
                # What failed came after RegisterImage: the bundle is the image's now, never a leftover.
                note = f"{note}\n{_registered_note(settings, values)}"
            elif phase.name in UPLOADING_PHASES and strategy_of(settings).uses_bucket:
                gone, s3_note = leftovers_note(settings, backend.call_aws, remove=on_error == "cleanup-all")
                note = f"{note}\n{s3_note}" if s3_note else note
                resume_from = "ami-upload" if gone else resume_from  # the bundle must go up again
            made = _with_what_was_made(result, plan, values, results)
            raise kind(
                phase.name,
                index,
                description,
                status,
                redact(output, hidden),
                redact(note, hidden),
                result.transcript,
                resume_said or resume_hint(resume_from, removed, strategy_of(settings), made.settings),
                cause,
                made,
            ) from None
        result.phases.append(phase.name)
        result.timings[phase.name] = round(time.monotonic() - started, 3)
    return _with_what_was_made(result, plan, values, results)


def _with_what_was_made(
    result: BuildResult, plan: Plan, values: dict[str, str], results: dict[str, Any]
) -> BuildResult:
    """The result with what the run made so far: the image's and snapshot's ids, copies, the parts."""
    result.settings = _with_run_values(plan.settings, values)
    result.copies = copies(plan.settings, values)
    result.parts = _bundle_parts(plan, results)
    return result


def _with_run_values(settings: AmiSettings, values: dict[str, str]) -> AmiSettings:
    """The settings with what the run made so far: the image's and the snapshot's ids."""
    return settings.with_values(
        image_id=values.get("image_id", settings.image_id),
        snapshot_id=values.get("snapshot_id", settings.snapshot_id),
    )


def _bundle_parts(plan: Plan, results: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The parts the node program's bundle report lists (never a secret: names, sizes, digests)."""
    for phase in plan.phases:
        for action in phase.actions:
            if isinstance(action, NodeProgram) and action.command == "bundle":
                report = results.get(action.result_name) or {}
                keys = ("filename", "size", "sha1", "md5")
                return [{key: part.get(key) for key in keys} for part in report.get("parts", [])] or None
    return None


def _registered_note(settings: AmiSettings, values: dict[str, str]) -> str:
    """What a failure after RegisterImage leaves: the image (and any copies), which stay."""
    made = [f"{values['image_id']} in {settings.region}"]
    made += [f"{image_id} in {region}" for region, image_id in copies(settings, values).items()]
    source = "with its bundle in S3" if strategy_of(settings).uses_bucket else "on its EBS snapshot"
    return (
        f"The image was registered before this failure and stays, {source}: {', '.join(made)}. "
        "Finish by hand what failed, or deregister it and run ami-register again (force_deregister = true "
        "does that)."
    )


def ran_at(action: Action) -> str:
    """Where a controller-driven action runs, as its progress line and record say: the AWS operation,
    the node (the node program), or a step of the controller's own."""
    if isinstance(action, AwsCall):
        return f"{action.service}:{action.operation}"
    if isinstance(action, UpdateSettings):
        return "update-settings"
    if isinstance(action, CheckResult):
        return "check"
    return "node" if isinstance(action, NodeProgram) else "controller"


def _run_controller_action(
    phase: str,
    index: int,
    action: Action,
    backend: NodeBackend,
    values: dict[str, str],
    results: dict[str, Any],
    settings: AmiSettings,
    progress: Callable[[str], None],
) -> ActionRecord:
    if isinstance(action, AwsCall):
        try:
            params = {key: resolve_value(value, values) for key, value in action.params}
            results[action.result_name] = backend.call_aws(action, params)
        except Exception as err:
            raise ActionFailed(index, 1, f"{action.operation}: {err}") from err
        return ActionRecord(phase, index, action.description, ran_at(action), 0, "")
    if isinstance(action, UpdateSettings):
        stored = []
        for setting, field_name in action.fields:
            values[setting] = str(results[action.from_result][field_name])
            stored.append(f"{setting}={values[setting]}")
        return ActionRecord(phase, index, action.description, ran_at(action), 0, "\n".join(stored))
    if isinstance(action, CheckResult):
        found = len(results[action.from_result].get(action.field, []))
        if found != action.length:
            raise ActionFailed(index, 1, f"expected {action.length} item(s) in {action.field}, found {found}")
        return ActionRecord(phase, index, action.description, ran_at(action), 0, f"{action.field}: {found}")
    if isinstance(action, PUBLISH_ACTIONS):
        try:
            image_id = resolve_value(action.image_id, values) if isinstance(action, WaitForImage) else None
            output = run_publish_step(action, image_id, backend, progress)
        except PublishFailed as err:
            raise ActionFailed(index, 1, str(err)) from None
        except Exception as err:
            raise ActionFailed(index, 1, f"{action.description}: {type(err).__name__}: {err}") from err
        return ActionRecord(phase, index, action.description, ran_at(action), 0, output)
    if isinstance(action, UploadSnapshot):
        try:
            output = run_upload_snapshot(action, backend, results, progress)  # type: ignore[arg-type]
        except (SnapshotStepFailed, SnapshotUploadError, BlockStreamFailed) as err:
            _keep_snapshot_left(action, results, values)
            status, resume = getattr(err, "status", 1), getattr(err, "resume", "")
            raise ActionFailed(index, status, str(err), resume=resume) from None
        except KeyboardInterrupt:
            _keep_snapshot_left(action, results, values)
            raise
        return ActionRecord(phase, index, action.description, ran_at(action), 0, output)
    if isinstance(action, (*NATIVE_CONTROLLER_ACTIONS, NodeProgram)):
        try:
            output = run_controller_step(action, settings, backend, results)  # type: ignore[arg-type]
        except ControllerStepFailed as err:
            raise ActionFailed(index, err.status, str(err)) from None
        except Exception as err:
            # No secret reaches a message: key, IV and URLs are never part of an error text we make.
            raise ActionFailed(index, 1, f"{action.description}: {type(err).__name__}: {err}") from err
        return ActionRecord(
            phase, index, action.description, ran_at(action), 0, redact(output, secret_values(results))
        )
    raise TypeError(f"the runner does not know the controller action {type(action).__name__}")


def _keep_snapshot_left(action: UploadSnapshot, results: dict[str, Any], values: dict[str, str]) -> None:
    """A snapshot a failed or interrupted upload left (kept, or not deleted) is what the run made so far:
    its id goes where the result document and the notes find it."""
    left = results.get(action.result_name) or {}
    if left.get("SnapshotId") and not left.get("Deleted"):
        values["snapshot_id"] = left["SnapshotId"]


def _after_failure(
    plan: Plan,
    backend: NodeBackend,
    on_error: str,
    result: BuildResult,
    phase: str,
    values: dict[str, str],
) -> tuple[bool, str]:
    """Apply the on-error policy: (did the strategy's removal run?, a note saying what stays on the node
    and, from the run's values, in AWS)."""
    where = plan.settings.credential_dir
    if on_error == "abort":
        return (
            False,
            f"on_error=abort: everything is left in place for debugging, credentials included ({where}).",
        )
    advice = strategy_of(plan.settings).after_failure(_with_run_values(plan.settings, values), phase)
    try:
        removals = [advice.removal, *advice.also]
        result.transcript += backend.run_node_actions("on-error", list(enumerate(removals, start=1)), {})
    except KeyboardInterrupt:
        return False, advice.interrupted
    except Exception as err:
        said = err.output.strip().splitlines()[-3:] if isinstance(err, ActionFailed) else []
        return False, f"{advice.failed} ({' '.join(said) or err})."
    return True, advice.removed


def _interrupted(actions: Sequence[tuple[int, Action]]) -> str:
    numbers = [index for index, _ in actions]
    running = f"action {numbers[0]}" if len(numbers) == 1 else f"actions {numbers[0]}-{numbers[-1]}"
    return f"was interrupted (Ctrl-C) while {running} ran"
