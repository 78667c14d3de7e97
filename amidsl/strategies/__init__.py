"""Build strategies: one module per strategy, each producing the actions of the same phases.

`native` (the default) ships amidsl's node program and keeps every secret on the controller;
`ami-tools` installs Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does.
Each module defines its `STRATEGY` (see amidsl.strategies.strategy); the generic code reaches a
strategy only through `strategy_of(settings)`.
"""

from __future__ import annotations

from collections.abc import Mapping

from amidsl.settings import AmiSettings
from amidsl.strategies import ami_tools, native
from amidsl.strategies.strategy import FailureAdvice, PhaseFn, Strategy

__all__ = ["STRATEGIES", "FailureAdvice", "PhaseFn", "Strategy", "strategy_of"]

# The `bundler` setting's value -> the strategy it chooses.
STRATEGIES: Mapping[str, Strategy] = {s.name: s for s in (native.STRATEGY, ami_tools.STRATEGY)}


def strategy_of(settings: AmiSettings) -> Strategy:
    """The strategy the settings' `bundler` chooses."""
    return STRATEGIES[settings.bundler]
