"""`amidsl simulate`: run a build on a fake node and a fake AWS region, offline, and report the image."""

from __future__ import annotations

import json
import time
from collections import defaultdict

from invoke import Context, task
from invoke.exceptions import Exit

from amidsl.cli_support import BAD_INPUT, CONFIG_HELP, PHASE_HELP, load_spec
from amidsl.plan import build_plan
from amidsl.render.summary import plan_title
from amidsl.settings import SettingsError
from simulator.executor import ImageInspection, Simulation, prepare
from simulator.executor import simulate as run_simulation

FAULT_HELP = (
    "inject a fault (repeatable): fail-put=N (the N-th S3 PUT fails), s3-5xx=K (K PUTs answer 503), "
    "disk-full=DIR, reject-register=CODE, interrupt=PHASE:N (the connection drops at that action)"
)


def apply_faults(simulation: Simulation, faults: list[str]) -> None:
    """Set the faults given as NAME=VALUE on the simulation's node and region."""
    for fault in faults:
        name, _, value = fault.partition("=")
        try:
            if name == "fail-put":
                simulation.region.faults.fail_put_number = int(value)
            elif name == "s3-5xx":
                simulation.region.faults.s3_5xx_burst = int(value)
            elif name == "disk-full" and value.startswith("/"):
                simulation.node.faults.disk_full_under = value
            elif name == "reject-register" and value:
                simulation.region.faults.reject_register = value
            elif name == "interrupt" and ":" in value:
                phase, _, index = value.partition(":")
                simulation.node.faults.interrupt_at = (phase, int(index))
            else:
                raise ValueError
        except ValueError:
            raise Exit(f"--fault {fault!r}: not a fault I know. {FAULT_HELP}", code=BAD_INPUT) from None


def summarise(inspection: ImageInspection, list_all: bool) -> list[str]:
    """What the image holds and what was left out, and why."""
    files = [e for e in inspection.entries if e.type == "file"]
    lines = [
        f"image: {len(inspection.entries)} entries, {len(files)} files, "
        f"{sum(e.size for e in files) / 1e6:.1f} MB of file data; bundle of {len(inspection.manifest.parts)} "
        f"part(s) verified and unbundled",
    ]
    if list_all:
        lines += [
            f"  {e.type:<9} {e.mode:04o} {e.uid}:{e.gid} {e.size:>10} {e.path}" for e in inspection.entries
        ]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for left in inspection.left_out:
        detail = f" ({left.rule})" if left.rule != left.path and str(left.reason) == "filter pattern" else ""
        by_reason[str(left.reason)].append(f"{left.path}{detail}")
    lines.append("left out of the image:")
    lines += [f"  {reason}: {', '.join(paths)}" for reason, paths in sorted(by_reason.items())]
    return lines


def as_json(simulation: Simulation, inspection: ImageInspection | None) -> str:
    """The simulation as JSON: image id, error, transcript, image entries and exclusions."""
    document = {
        "image_id": simulation.image_id,
        "error": str(simulation.error) if simulation.error else None,
        "transcript": [record.__dict__ for record in simulation.transcript],
        "image": None
        if inspection is None
        else {
            "entries": [entry.__dict__ for entry in inspection.entries],
            "left_out": [
                {"path": x.path, "reason": str(x.reason), "rule": x.rule} for x in inspection.left_out
            ],
        },
    }
    return json.dumps(document, indent=2, sort_keys=True)


@task(
    iterable=["phase", "fault"],
    help={
        "config": CONFIG_HELP,
        "phase": PHASE_HELP,
        "inspect": "list every file in the registered image",
        "fault": FAULT_HELP,
        "json": "print the result as JSON instead of progress lines",
        "payload-mb": "MB of program binaries on the fake node (default 4; larger for benchmarks)",
        "bundler": "build strategy: native or ami-tools (default: the settings' bundler, else native)",
    },
)
def simulate(
    c: Context,
    config: str | None = None,
    phase: list[str] | None = None,
    inspect: bool = False,
    fault: list[str] | None = None,
    json: bool = False,
    payload_mb: int = 4,
    bundler: str | None = None,
) -> None:
    """Run the build on a fake node and a fake AWS region (offline; nothing outside a temp dir)."""
    started = time.monotonic()
    if int(payload_mb) < 0:
        raise Exit(f"--payload-mb {payload_mb}: give a size of 0 MB or more", code=BAD_INPUT)
    try:
        plan = build_plan(load_spec(config, bundler), phases=phase or None)
    except SettingsError as err:
        raise Exit(str(err), code=BAD_INPUT) from None
    say = (lambda line: None) if json else print
    say(f"amidsl simulate: {plan_title(plan)}")
    say("(a fake node and a fake AWS region on this machine: no node, network or AWS account is touched)")
    simulation = prepare(plan.settings, payload_mb=int(payload_mb))
    apply_faults(simulation, fault or [])
    try:
        simulation = run_simulation(
            plan, node=simulation.node, region=simulation.region, progress=say, raise_on_failure=False
        )
        inspection = simulation.inspect_image() if simulation.image_id else None
        if json:
            print(as_json(simulation, inspection))
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
    if simulation.error is not None:
        raise Exit(f"simulated build failed: {simulation.error}", code=1)
