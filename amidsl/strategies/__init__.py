"""Build strategies: one module per strategy, each producing the actions of the same phases.

`native` (the default) ships amidsl's node program and keeps every secret on the controller;
`ami-tools` installs Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from amidsl.actions import Action, PlanWarning
from amidsl.settings import AmiSettings
from amidsl.strategies import ami_tools, native

PhaseFn = Callable[[AmiSettings], Sequence[Action | PlanWarning]]

STRATEGIES: Mapping[str, Mapping[str, PhaseFn]] = {
    "native": native.PHASE_FUNCTIONS,
    "ami-tools": ami_tools.PHASE_FUNCTIONS,
}


def phase_function(bundler: str, phase: str) -> PhaseFn:
    """The plan function of `phase` in the strategy the `bundler` setting names."""
    return STRATEGIES[bundler][phase]


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """(topic, text) pairs saying what the chosen strategy puts on the node and leaves in the image."""
    return {"native": native.summary, "ami-tools": ami_tools.summary}[s.bundler](s)
