"""What every build strategy gives the generic code: the runner, the preview and the simulator.

A strategy is data: its name (the `bundler` setting's value), its phases' plan functions, and the
functions and texts that say what it does on the node. The generic code asks the strategy; it never
compares strategy names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from amidsl.model.actions import Action, PlanWarning
from amidsl.settings import AmiSettings

PhaseFn = Callable[[AmiSettings], Sequence[Union[Action, PlanWarning]]]


@dataclass(frozen=True)
class FailureAdvice:
    """What stays on the node after a failed phase, and the action that takes it off (on_error=cleanup)."""

    removal: Action  # run on the node after the failure
    removed: str  # the note when the removal succeeded
    failed: str  # the note when the removal failed too (the runner adds what the removal said)
    interrupted: str  # the note when Ctrl-C stopped the removal
    also: tuple[Action, ...] = ()  # run after it (e.g. an EBS-backed build's disk, which no rerun can use)


@dataclass(frozen=True)
class Strategy:
    """One build strategy, as the generic code sees it."""

    name: str  # unique among the strategies
    bundler: str  # the `bundler` setting's value that chooses it ...
    backing: str  # ... with this `backing`
    phases: Mapping[str, PhaseFn]  # phase name -> plan function, for every ami phase
    # (topic, text) pairs for the preview: what the strategy puts on the node, leaves in the image, needs.
    summary: Callable[[AmiSettings], tuple[tuple[str, str], ...]]
    # What to remove and say after a failure in a phase: (settings, phase) -> advice.
    after_failure: Callable[[AmiSettings, str], FailureAdvice]
    # The strategy's own advice for resuming after a failure in a phase, or None for the generic advice:
    # (settings with the run's values so far, e.g. the snapshot it uploaded; phase) -> advice.
    resume_hint: Callable[[AmiSettings, str], str | None]
    # How the build uses the AWS credentials, after where they come from; `{env}` is the key's
    # run-time environment variable.
    credential_use: str
    runs_node_program: bool  # amidsl's node program does the bundling on the node
    uses_bucket: bool  # the image is an S3 bundle in s3_bucket (else the bucket is not used)
