"""Build strategies: one module per strategy, each producing the actions of the same phases.

`native` (the default) ships amidsl's node program and keeps every secret on the controller;
`ami-tools` installs Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from amidsl.actions import Action, PlanWarning
from amidsl.settings import AmiSettings
from amidsl.strategies import ami_tools, native

PhaseFn = Callable[[AmiSettings], Sequence[Action | PlanWarning]]

# Each strategy module has PHASE_FUNCTIONS (phase name -> plan function) and summary(settings).
STRATEGIES: Mapping[str, ModuleType] = {"native": native, "ami-tools": ami_tools}


def phase_function(bundler: str, phase: str) -> PhaseFn:
    """The plan function of `phase` in the strategy the `bundler` setting names."""
    return STRATEGIES[bundler].PHASE_FUNCTIONS[phase]


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """(topic, text) pairs saying what the chosen strategy puts on the node and leaves in the image."""
    return STRATEGIES[s.bundler].summary(s)
