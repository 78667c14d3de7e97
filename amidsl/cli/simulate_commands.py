"""`amidsl simulate`: run a build on a fake node and a fake AWS region, offline, and report the image.

JSON schema "amidsl.simulate/2" (`--json`; within a version fields are only ever added; version 2 made
"config" the list of every settings file, where 1 named only the last): the fields of every build result
(amidsl/run/result.py: "schema", "amidsl_version", "config", "config_from", "error", "image_id",
"image_name", "images", "copies", "bundle", "snapshot_id", "parts", "timings", "settings_digest"; a
failed build's document holds what the run made before it failed), and

    {"schema": "amidsl.simulate/2", "amidsl_version": str, "config": [path] (first to last),
     "config_from": str, "image_id": str or null, "copies": {region: image id}, "error": str or null,
     "transcript": [{"phase": str, "index": int, "description": str, "command": str,
                     "status": int, "output": str}],
     "faults_not_fired": [{"fault": NAME=VALUE, "why": str}] (the run never met them; exit status 1),
     "image": null or {"summary": {"entries": int, "files": int, "file_bytes": int, "parts": int},
                       "layout": [str], "modelled": [str] (what of the boot was not made for real),
                       "entries": [{"path", "type", "mode", "uid", "gid", "size", "inode", "target"}]
                                  (only with --inspect),
                       "left_out": [{"path": str, "reason": str, "rule": str}],
                       "hygiene": null (ami-tools) or {"items": {name: {"treatment": str, "count": int,
                                  "paths": [str] (the first five)}}, "host_keys": str,
                                  "login_key": str ("" when nothing installs one), "added": [path]}}}
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amidsl.bundle.ls import listing_line
from amidsl.cli.support import ConfigChoice, announce_config, find_config, load_settings
from amidsl.cli.table import FAILED, FAULTS, INTERRUPTED, CommandError
from amidsl.model.actions import Action, NodeProgram, UploadSnapshot
from amidsl.model.plan import Plan, build_plan
from amidsl.render.summary import plan_title
from amidsl.run.progress import Progress
from amidsl.run.result import registered_lines, result_document
from amidsl.run.runner import DRIVEN_BY_CONTROLLER, ON_ERROR_POLICIES, BuildInterrupted
from amidsl.settings import AmiSettings, SettingsError
from amidsl.strategies import bucket_backings, strategy_of
from amidsl.strategies.native_controller import hygiene_lines
from amidsl.strategies.native_ebs import blocks_program
from simulator.botocore_data import one_botocore_loader

if TYPE_CHECKING:
    from simulator.executor import ImageInspection, Simulation

SCHEMA = "amidsl.simulate/2"
FAULT_NAMES = (
    "fail-put",
    "s3-5xx",
    "fail-part",
    "url-expires",
    "disk-full",
    "no-python3",
    "old-python3",
    "no-mke2fs",
    "old-mke2fs",
    "reject-register",
    "interrupt",
    "ctrl-c",
    "image-pending",
    "image-failed",
)
# Faults only a build that runs amidsl's node program can meet: ec2-upload-bundle presigns nothing, and
# the ami-tools path needs neither python3 nor e2fsprogs on the node (its ec2-bundle-vol model is the
# tools' own).
NODE_PROGRAM_FAULTS = ("url-expires", "no-python3", "old-python3", "no-mke2fs", "old-mke2fs")
# Faults on the S3 upload of a bundle: a build whose image is no S3 bundle (an EBS snapshot) never meets them.
S3_UPLOAD_FAULTS = ("fail-put", "s3-5xx", "fail-part", "url-expires")
WITHOUT_VALUE = ("no-python3", "no-mke2fs")
# The oldest version the native bundler runs with, and an older one for the example; an old-* fault
# gives an older one.
OLDEST = {"old-python3": ((3, 8), "3.6.9"), "old-mke2fs": ((1, 43), "1.42.9")}


@dataclass(frozen=True)
class Fault:
    """One checked --fault: its name and value (an int, a path, a version, an error code or an action)."""

    name: str
    value: object


def parse_fault(text: str, plan: Plan) -> Fault:
    """Check one NAME=VALUE fault against the plan; a CommandError says what is wrong and what fits."""
    name, equals, value = text.partition("=")

    def refuse(why: str) -> CommandError:
        return CommandError(f"--fault {text!r}: {why}.\nFaults: {FAULTS}")

    if name not in FAULT_NAMES:
        close = difflib.get_close_matches(name, FAULT_NAMES, n=1)
        raise refuse(f"not a fault I know{f' (did you mean {close[0]}?)' if close else ''}")
    strategy = strategy_of(plan.settings)
    if name in NODE_PROGRAM_FAULTS and not strategy.runs_node_program:
        raise refuse(f"it models the native bundler's node program: drop --bundler {plan.settings.bundler}")
    if name in S3_UPLOAD_FAULTS and not strategy.uses_bucket:
        backings = " or ".join(f"--set backing={backing}" for backing in bucket_backings(plan.settings))
        raise refuse(
            f"it acts on the S3 upload of a bundle, and a build with backing = "
            f"{json.dumps(plan.settings.backing)} puts no bundle in S3: drop the fault, or add {backings} "
            "to simulate an S3-backed build"
        )
    if name in WITHOUT_VALUE:
        if equals:
            raise refuse(f"{name} takes no value")
        return Fault(name, None)
    if name == "image-failed":
        regions = (plan.settings.region, *plan.settings.copy_to_regions)
        if value not in regions:
            raise refuse(f"give the build's region or a copy region ({', '.join(regions)})")
        return Fault(name, value)
    if name in ("fail-put", "s3-5xx", "image-pending", "url-expires"):
        if not value.isdigit() or int(value) < 1:
            raise refuse("give a whole number of 1 or more")
        return Fault(name, int(value))
    if name == "fail-part":
        if not value.isdigit():
            raise refuse("give a part's index (0 for the first part)")
        return Fault(name, int(value))
    if name in OLDEST:
        oldest, example = OLDEST[name]
        found = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", value)
        if not found or (int(found[1]), int(found[2])) >= oldest:
            raise refuse(f"give a version older than {oldest[0]}.{oldest[1]}, such as {example}")
        return Fault(name, value)
    if name == "disk-full":
        if not value.startswith("/"):
            raise refuse("give an absolute directory on the node")
        return Fault(name, value.rstrip("/") or "/")
    if name == "reject-register":
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9.]*", value):
            raise refuse("give an EC2 error code such as InvalidAMIName.Duplicate")
        return Fault(name, value)
    return Fault(name, _node_action(plan, value, refuse, program_too=name == "ctrl-c"))


def _streamed_program(action: Action) -> str | None:
    """The node program command whose output a controller action reads as it works (an EBS upload
    reads the disk's blocks from `blocks`), or None."""
    return blocks_program(action, "").command if isinstance(action, UploadSnapshot) else None


def _node_action(
    plan: Plan, value: str, refuse: Callable[[str], CommandError], program_too: bool
) -> tuple[str, int, str | None]:
    """(phase, index, node program command or None) of PHASE:N, an action that runs on the node (or
    reads a node program's output as it works; with `program_too`, also the node program's own run)."""
    phase, _, index = value.partition(":")
    actions = {p.name: p.actions for p in plan.phases}
    if phase not in actions:
        raise refuse(f"{phase!r} is not a phase of this run (phases: {', '.join(actions)})")
    size = len(actions[phase])
    if not index.isdigit() or not 1 <= int(index) <= size:
        raise refuse(f"phase {phase} has actions 1 to {size}")
    action = actions[phase][int(index) - 1]
    streamed = _streamed_program(action)
    if streamed:
        return phase, int(index), streamed
    if isinstance(action, NodeProgram) and program_too:
        return phase, int(index), action.command
    if isinstance(action, DRIVEN_BY_CONTROLLER):
        on_node = [
            str(i)
            for i, a in enumerate(actions[phase], start=1)
            if not isinstance(a, DRIVEN_BY_CONTROLLER)
            or (program_too and isinstance(a, NodeProgram))
            or _streamed_program(a)
        ]
        choose = f"choose one of {', '.join(on_node)}" if on_node else "this phase has none"
        where = (
            f"is the node program, which the controller drives (ctrl-c={phase}:{index} stops it)"
            if isinstance(action, NodeProgram)
            else "runs on the controller"
        )
        raise refuse(f"action {index} of {phase} ({action.description}) {where}; {choose}")
    return phase, int(index), None


def apply_faults(simulation: Simulation, faults: list[Fault]) -> None:
    """Set checked faults on the simulation's node and region."""
    settings = simulation.settings
    node, region = simulation.node, simulation.region
    for fault in faults:
        if fault.name == "fail-put":
            region.faults.fail_put_number = fault.value
        elif fault.name == "s3-5xx":
            region.faults.s3_5xx_burst = fault.value
        elif fault.name == "fail-part":
            region.faults.refuse_part = fault.value
        elif fault.name == "url-expires":
            region.faults.expire_urls_at = fault.value
        elif fault.name in ("no-python3", "no-mke2fs"):
            node.packages.discard("python3" if fault.name == "no-python3" else "e2fsprogs")
        elif fault.name in ("old-python3", "old-mke2fs"):
            node.versions["python3" if fault.name == "old-python3" else "e2fsprogs"] = fault.value
        elif fault.name == "disk-full":
            # The directory must be somewhere the build writes: on the node already, or made by the build.
            made = (settings.destination_dir, settings.install_dir, settings.credential_dir)
            if not node.is_dir(fault.value) and fault.value not in made:
                raise CommandError(
                    f"--fault 'disk-full={fault.value}': no such directory on the simulated node; "
                    f"give one that exists or that the build makes ({', '.join(made)})"
                )
            node.faults.disk_full_under = fault.value
        elif fault.name == "reject-register":
            region.faults.reject_register = fault.value
        elif fault.name == "image-pending":
            region.faults.pending_polls = fault.value
        elif fault.name == "image-failed":
            region.faults.fail_image_in[fault.value] = "the image failed (simulated fault)"
        elif fault.name == "ctrl-c":
            phase, index, program = fault.value
            if program:  # Ctrl-C reaches the node program while it runs
                node.faults.ctrl_c_program = program
            else:
                node.faults.ctrl_c_at = (phase, index)
        else:
            phase, index, program = fault.value
            if program:  # the connection drops while the controller reads the program's output
                node.faults.drop_program = program
            else:
                node.faults.interrupt_at = (phase, index)


def not_fired(fault: Fault, simulation: Simulation) -> str | None:
    """Why a fault that waits for a moment of the run (a PUT, a part, an action, an image) never met
    it; None when it fired, or when it acts from the start (a full disk, a missing or old tool)."""
    region, node = simulation.region, simulation.node
    count = region.put_requests
    puts = f"it counts the upload's S3 PUT requests, and there {'was 1' if count == 1 else f'were {count}'}"
    uploaded = ", ".join(str(index) for index in sorted(region.parts_put)) or "none"
    # fault -> (how the region marks it fired, why it did not)
    region_faults = {
        "fail-part": (
            "refuse_part",
            f"no part {fault.value} was uploaded (the parts uploaded, counted from 0: {uploaded})",
        ),
        "fail-put": ("fail_put_number", puts),
        "url-expires": ("expire_urls_at", puts),
        "s3-5xx": ("s3_5xx_burst", "the run made no S3 PUT request"),
        "reject-register": ("reject_register", "the run registered no image"),
        "image-pending": ("pending_polls", "the run made no image"),
        "image-failed": (f"fail_image_in:{fault.value}", f"the run made no image in {fault.value}"),
    }
    if fault.name in region_faults:
        mark, why = region_faults[fault.name]
        return None if mark in region.faults.fired else why
    # A node fault is cleared when it fires.
    waiting = {
        "interrupt": node.faults.interrupt_at or node.faults.drop_program,
        "ctrl-c": node.faults.ctrl_c_at or node.faults.ctrl_c_program,
    }
    if waiting.get(fault.name) is not None:
        phase, index, _ = fault.value
        return f"action {index} of {phase} never ran"
    return None


def refuse_missing_phases(plan: Plan, every_phase: list[str]) -> None:
    """A simulation starts from a fresh node: a chosen phase needs the phases before it.

    cleanup needs only the first phase: it removes what amidsl recorded creating, whatever ran since.
    """
    chosen = [p.name for p in plan.phases]
    for name in chosen:
        earlier = every_phase[: every_phase.index(name)]
        needed = earlier[:1] if name == "cleanup" else [p for p in earlier if p != "cleanup"]
        missing = [p for p in needed if p not in chosen]
        if missing:
            raise CommandError(
                f"--phase {name}: each simulation starts from a fresh node, so {name} needs "
                f"{', '.join(missing)} first; add --phase for each (or give no --phase to run them all)"
            )


def summarise(inspection: ImageInspection, list_all: bool) -> list[str]:
    """What the image holds and what was left out, and why."""
    files = [e for e in inspection.entries if e.type == "file"]
    lines = [
        f"image: {len(inspection.entries)} entries, {len(files)} files, "
        f"{sum(e.size for e in files) / 1e6:.1f} MB of file data; {inspection.source}",
        *inspection.layout,
        *inspection.modelled,
    ]
    if list_all:
        lines += [f"  {listing_line(entry)}" for entry in inspection.entries]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for left in inspection.left_out:
        detail = f" ({left.rule})" if left.rule != left.path and str(left.reason) == "filter pattern" else ""
        by_reason[str(left.reason)].append(f"{left.path}{detail}")
    lines.append("left out of the image:")
    lines += [f"  {reason}: {', '.join(paths)}" for reason, paths in sorted(by_reason.items())]
    return lines + hygiene_lines(inspection.hygiene)


def as_json(
    simulation: Simulation,
    inspection: ImageInspection | None,
    choice: ConfigChoice,
    list_all: bool,
    settings: AmiSettings,
    unfired: list[tuple[str, str]],
) -> str:
    """The simulation as JSON (schema SCHEMA): the fields a build's result has, and more."""
    image = None
    if inspection is not None:
        files = [e for e in inspection.entries if e.type == "file"]
        image = {
            "summary": {
                "entries": len(inspection.entries),
                "files": len(files),
                "file_bytes": sum(e.size for e in files),
                "parts": len(inspection.manifest.parts) if inspection.manifest else None,
                "snapshot": inspection.snapshot[0] if inspection.snapshot else None,
            },
            "layout": list(inspection.layout),
            "modelled": list(inspection.modelled),
            "left_out": [
                {"path": x.path, "reason": str(x.reason), "rule": x.rule} for x in inspection.left_out
            ],
            "hygiene": inspection.hygiene or None,
        }
        if list_all:
            image["entries"] = [entry.__dict__ for entry in inspection.entries]
    error = str(simulation.error) if simulation.error else None
    made = simulation.error.made if simulation.error is not None else simulation.result
    document = result_document(SCHEMA, settings, made, error, config=choice.files, config_from=choice.origin)
    document["transcript"] = [record.__dict__ for record in simulation.transcript]
    document["image"] = image
    document["faults_not_fired"] = [{"fault": text, "why": why} for text, why in unfired]
    return json.dumps(document, indent=2, sort_keys=True)


def simulate(
    *,
    config: list[str],
    set: list[str],
    phase: list[str],
    on_error: str,
    inspect: bool,
    fault: list[str],
    json: bool,
    payload_mb: int,
    quiet: bool,
    verbose: bool,
    bundler: str | None = None,
) -> None:
    """Run the build on a fake node and a fake AWS region (offline; nothing outside a temp dir)."""
    started = time.monotonic()
    if payload_mb < 0:
        raise CommandError(f"--payload-mb {payload_mb}: give a size of 0 MB or more")
    if on_error not in ON_ERROR_POLICIES:
        raise CommandError(f"--on-error {on_error!r}: choose {', '.join(ON_ERROR_POLICIES)}")
    choice = find_config(config, set)
    announce_config(choice, data_on_stdout=json)
    try:
        spec, settings = load_settings(choice, bundler)
        if settings.snapshot_id is not None:
            raise CommandError(
                f"snapshot_id {settings.snapshot_id}: a simulation starts from a fresh node and a fresh "
                "fake region, where no snapshot exists, so it cannot resume on one; remove snapshot_id to "
                "simulate the build that uploads the disk"
            )
        plan = build_plan(spec, settings, phases=phase or None)
        if phase:
            refuse_missing_phases(plan, list(spec.phase_names()))
    except SettingsError as err:
        raise CommandError(str(err)) from None
    faults = [parse_fault(text, plan) for text in fault]
    # With --json, standard output carries the document alone, and progress goes to standard error.
    progress = Progress.for_command(quiet=quiet, verbose=verbose, stream=sys.stderr if json else sys.stdout)
    say: Callable[[str], None] = (lambda line: None) if json else print
    progress(f"amidsl simulate: {plan_title(plan)}")
    progress(
        "(a fake node and a fake AWS region on this machine: no node, network or AWS account is touched)"
    )
    # The sessions moto makes as it loads (to list the regions), the region's and the presigning client's.
    with one_botocore_loader():
        from simulator.executor import prepare
        from simulator.executor import simulate as run_simulation
        from simulator.region import without_public_images

        with without_public_images():
            simulation = prepare(plan.settings, payload_mb=payload_mb)
            unfired: list[tuple[str, str]] = []  # (--fault as given, why it never fired)
            try:
                apply_faults(simulation, faults)
                simulation.node.progress = progress
                simulation = run_simulation(
                    plan,
                    node=simulation.node,
                    region=simulation.region,
                    on_error=on_error,
                    progress=progress,
                    raise_on_failure=False,
                )
                inspection = simulation.inspect_image() if simulation.image_id else None
                for text, checked in zip(fault, faults):
                    why = not_fired(checked, simulation)
                    if why:
                        unfired.append((text, why))
                if json:
                    print(as_json(simulation, inspection, choice, inspect, plan.settings, unfired))
                elif simulation.error is None:
                    if simulation.image_id:
                        for line in registered_lines(
                            simulation.result.settings, simulation.image_id, simulation.result.copies
                        ):
                            say(line)
                    if inspection is not None:
                        for line in summarise(inspection, inspect):
                            say(line)
                    say(f"finished in {time.monotonic() - started:.1f} s")
            finally:
                simulation.close()
    if progress.closed:
        raise BrokenPipeError  # the reader went away: the command line ends quietly
    # A fault that never fired leaves a run that tested nothing of it: that fails, so CI does not pass it.
    notes = "".join(f"\n--fault {text!r} did not fire: {why}" for text, why in unfired)
    if isinstance(simulation.error, BuildInterrupted):
        raise CommandError(f"simulated build interrupted: {simulation.error}{notes}", INTERRUPTED)
    if simulation.error is not None:
        raise CommandError(f"simulated build failed: {simulation.error}{notes}", FAILED)
    if unfired:
        raise CommandError(
            f"the simulated build went through without meeting {len(unfired)} of the faults asked for, "
            f"so it tested nothing of {'it' if len(unfired) == 1 else 'them'}:{notes}",
            FAILED,
        )
