"""Build strategies: one module per strategy, each producing the actions of the same phases.

`native` (the default) ships amidsl's node program and keeps every secret on the controller;
`ami-tools` installs Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does;
`native-ebs` (bundler native, backing ebs) makes the native disk into an EBS snapshot.
Each module defines its `STRATEGY` (see amidsl.strategies.strategy); the generic code reaches a
strategy only through `strategy_of(settings)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from amidsl.model.actions import Action, PlanWarning
from amidsl.model.plan import AMI_PHASES, Spec
from amidsl.settings import AmiSettings
from amidsl.strategies import ami_tools, native, native_ebs
from amidsl.strategies.strategy import FailureAdvice, PhaseFn, Strategy

__all__ = [
    "PHASE_FUNCTIONS",
    "STRATEGIES",
    "FailureAdvice",
    "PhaseFn",
    "Strategy",
    "bucket_backings",
    "server_spec",
    "strategy_of",
]

# Every strategy by its name.
STRATEGIES: Mapping[str, Strategy] = {
    s.name: s for s in (native.STRATEGY, ami_tools.STRATEGY, native_ebs.STRATEGY)
}
# The settings' (bundler, backing) -> the strategy they choose (the settings refuse other pairs).
_BY_CHOICE: Mapping[tuple[str, str], Strategy] = {(s.bundler, s.backing): s for s in STRATEGIES.values()}


def strategy_of(settings: AmiSettings) -> Strategy:
    """The strategy the settings' `bundler` and `backing` choose."""
    return _BY_CHOICE[(settings.bundler, settings.backing)]


def bucket_backings(settings: AmiSettings) -> list[str]:
    """The backings with which the settings' bundler makes the image an S3 bundle (in s3_bucket)."""
    return [s.backing for s in STRATEGIES.values() if s.bundler == settings.bundler and s.uses_bucket]


def _by_strategy(phase: str) -> PhaseFn:
    """A plan function that runs `phase` of the strategy the settings' `bundler` names."""

    def plan(s: AmiSettings) -> Sequence[Action | PlanWarning]:
        return strategy_of(s).phases[phase](s)

    plan.__name__ = plan.__qualname__ = phase.replace("-", "_")
    plan.__doc__ = f"The {phase} phase of the chosen build strategy (setting bundler)."
    return plan


# The ami phases, each running the chosen strategy's plan function (the crate's phase functions).
PHASE_FUNCTIONS = {phase: _by_strategy(phase) for phase in AMI_PHASES}


def server_spec(settings: Mapping[str, Any]) -> Spec:
    """The ami phases as a spec, carrying the settings they are built from."""
    return Spec("ami", {name: (fn,) for name, fn in PHASE_FUNCTIONS.items()}, settings=settings)
