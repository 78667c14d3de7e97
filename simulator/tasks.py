"""`amidsl simulate`: run a build on a fake node and a fake AWS region, offline, and report the image.

JSON schema "amidsl.simulate/1" (`--json`; fields are only ever added):

    {"schema": "amidsl.simulate/1", "amidsl_version": str, "config": path,
     "image_id": str or null, "error": str or null,
     "transcript": [{"phase": str, "index": int, "description": str, "command": str,
                     "status": int, "output": str}],
     "image": null or {"summary": {"entries": int, "files": int, "file_bytes": int, "parts": int},
                       "entries": [{"path", "type", "mode", "uid", "gid", "size", "inode", "target"}]
                                  (only with --inspect),
                       "left_out": [{"path": str, "reason": str, "rule": str}]}}
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from amidsl import __version__
from amidsl.bundle.ls import listing_line
from amidsl.cli_support import ConfigChoice, announce_config, find_config, load_spec
from amidsl.cli_table import FAILED, FAULT_HELP, INTERRUPTED, CommandError
from amidsl.plan import Plan, build_plan
from amidsl.progress import Progress
from amidsl.render.summary import plan_title
from amidsl.runner import BuildInterrupted
from amidsl.settings import SettingsError
from simulator.executor import ImageInspection, Simulation, prepare
from simulator.executor import simulate as run_simulation

SCHEMA = "amidsl.simulate/1"
FAULT_NAMES = ("fail-put", "s3-5xx", "disk-full", "reject-register", "interrupt")


@dataclass(frozen=True)
class Fault:
    """One checked --fault: its name and value (an int, a path, an error code or (phase, index))."""

    name: str
    value: object


def parse_fault(text: str, plan: Plan) -> Fault:
    """Check one NAME=VALUE fault against the plan; a CommandError says what is wrong and what fits."""
    name, _, value = text.partition("=")

    def refuse(why: str) -> CommandError:
        return CommandError(f"--fault {text!r}: {why}. {FAULT_HELP}")

    if name not in FAULT_NAMES:
        close = difflib.get_close_matches(name, FAULT_NAMES, n=1)
        raise refuse(f"not a fault I know{f' (did you mean {close[0]}?)' if close else ''}")
    if name != "reject-register" and plan.settings.bundler != "ami-tools":
        # These faults model ec2-bundle-vol and ec2-upload-bundle; a native build would never meet them.
        raise refuse(
            "it models the ami-tools path: add --bundler ami-tools (native builds take reject-register)"
        )
    if name in ("fail-put", "s3-5xx"):
        if not value.isdigit() or int(value) < 1:
            raise refuse("give a whole number of 1 or more")
        return Fault(name, int(value))
    if name == "disk-full":
        if not value.startswith("/"):
            raise refuse("give an absolute directory on the node")
        return Fault(name, value.rstrip("/") or "/")
    if name == "reject-register":
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9.]*", value):
            raise refuse("give an EC2 error code such as InvalidAMIName.Duplicate")
        return Fault(name, value)
    phase, _, index = value.partition(":")
    sizes = {p.name: len(p.actions) for p in plan.phases}
    if phase not in sizes:
        raise refuse(f"{phase!r} is not a phase of this run (phases: {', '.join(sizes)})")
    if not index.isdigit() or not 1 <= int(index) <= sizes[phase]:
        raise refuse(f"phase {phase} has actions 1 to {sizes[phase]}")
    return Fault(name, (phase, int(index)))


def apply_faults(simulation: Simulation, faults: list[Fault]) -> None:
    """Set checked faults on the simulation's node and region."""
    settings = simulation.settings
    for fault in faults:
        if fault.name == "fail-put":
            simulation.region.faults.fail_put_number = fault.value
        elif fault.name == "s3-5xx":
            simulation.region.faults.s3_5xx_burst = fault.value
        elif fault.name == "disk-full":
            # The directory must be somewhere the build writes: on the node already, or made by the build.
            made = (settings.destination_dir, settings.install_dir, settings.credential_dir)
            if not simulation.node.is_dir(fault.value) and fault.value not in made:
                raise CommandError(
                    f"--fault 'disk-full={fault.value}': no such directory on the simulated node; "
                    f"give one that exists or that the build makes ({', '.join(made)})"
                )
            simulation.node.faults.disk_full_under = fault.value
        elif fault.name == "reject-register":
            simulation.region.faults.reject_register = fault.value
        else:
            simulation.node.faults.interrupt_at = fault.value


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
    parts = len(inspection.manifest.parts)
    lines = [
        f"image: {len(inspection.entries)} entries, {len(files)} files, "
        f"{sum(e.size for e in files) / 1e6:.1f} MB of file data; bundle of {parts} "
        f"part{'' if parts == 1 else 's'} verified and unbundled",
        *inspection.layout,
    ]
    if list_all:
        lines += [f"  {listing_line(entry)}" for entry in inspection.entries]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for left in inspection.left_out:
        detail = f" ({left.rule})" if left.rule != left.path and str(left.reason) == "filter pattern" else ""
        by_reason[str(left.reason)].append(f"{left.path}{detail}")
    lines.append("left out of the image:")
    lines += [f"  {reason}: {', '.join(paths)}" for reason, paths in sorted(by_reason.items())]
    return lines


def as_json(
    simulation: Simulation, inspection: ImageInspection | None, choice: ConfigChoice, list_all: bool
) -> str:
    """The simulation as JSON (schema amidsl.simulate/1)."""
    image = None
    if inspection is not None:
        files = [e for e in inspection.entries if e.type == "file"]
        image = {
            "summary": {
                "entries": len(inspection.entries),
                "files": len(files),
                "file_bytes": sum(e.size for e in files),
                "parts": len(inspection.manifest.parts),
            },
            "layout": list(inspection.layout),
            "left_out": [
                {"path": x.path, "reason": str(x.reason), "rule": x.rule} for x in inspection.left_out
            ],
        }
        if list_all:
            image["entries"] = [entry.__dict__ for entry in inspection.entries]
    document = {
        "schema": SCHEMA,
        "amidsl_version": __version__,
        "config": str(choice.path),
        "image_id": simulation.image_id,
        "error": str(simulation.error) if simulation.error else None,
        "transcript": [record.__dict__ for record in simulation.transcript],
        "image": image,
    }
    return json.dumps(document, indent=2, sort_keys=True)


def simulate(
    *,
    config: str | None,
    phase: list[str],
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
    choice = find_config(config)
    announce_config(choice, data_on_stdout=json)
    try:
        spec = load_spec(choice, bundler)
        plan = build_plan(spec, phases=phase or None)
        if phase:
            refuse_missing_phases(plan, [p.name for p in build_plan(spec).phases])
    except SettingsError as err:
        raise CommandError(str(err)) from None
    faults = [parse_fault(text, plan) for text in fault]
    progress = Progress.for_command(quiet=quiet or json, verbose=verbose)
    say: Callable[[str], None] = (lambda line: None) if json else print
    progress(f"amidsl simulate: {plan_title(plan)}")
    progress(
        "(a fake node and a fake AWS region on this machine: no node, network or AWS account is touched)"
    )
    simulation = prepare(plan.settings, payload_mb=payload_mb)
    try:
        apply_faults(simulation, faults)
        simulation.node.progress = progress
        simulation = run_simulation(
            plan, node=simulation.node, region=simulation.region, progress=progress, raise_on_failure=False
        )
        inspection = simulation.inspect_image() if simulation.image_id else None
        if json:
            print(as_json(simulation, inspection, choice, inspect))
        elif simulation.error is None:
            if simulation.image_id:
                say(
                    f"registered {simulation.image_id} ({plan.settings.image_name}) from "
                    f"s3://{plan.settings.s3_manifest_path}"
                )
            if inspection is not None:
                for line in summarise(inspection, inspect):
                    say(line)
            say(f"finished in {time.monotonic() - started:.1f} s")
    finally:
        simulation.close()
    if progress.closed:
        raise BrokenPipeError  # the reader went away: the command line ends quietly
    if isinstance(simulation.error, BuildInterrupted):
        raise CommandError(f"simulated build interrupted: {simulation.error}", INTERRUPTED)
    if simulation.error is not None:
        raise CommandError(f"simulated build failed: {simulation.error}", FAILED)
