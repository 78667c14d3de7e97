"""The ami phases: plan functions from settings to actions, as pallet's ami-crate defines them.

Each phase runs the plan function of the strategy the `bundler` setting chooses (`native`, the default,
or `ami-tools`); the strategies live in `amidsl.strategies`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amidsl.actions import (
    Action,
    PlanWarning,
    Remove,  # noqa: F401 - kept importable from here
)
from amidsl.plan import AMI_PHASES, Spec
from amidsl.settings import AmiSettings, resolve
from amidsl.strategies import strategy_of
from amidsl.strategies.ami_tools import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN  # noqa: F401 - the crate's names


def settings(raw: Mapping[str, Any]) -> AmiSettings:
    """The settings phase: merge defaults, finalise and validate (raises SettingsError)."""
    return resolve(raw)


def _by_strategy(phase: str) -> Callable[[AmiSettings], Sequence[Action | PlanWarning]]:
    """A plan function that runs `phase` of the strategy the settings' `bundler` names."""

    def plan(s: AmiSettings) -> Sequence[Action | PlanWarning]:
        return strategy_of(s).phases[phase](s)

    plan.__name__ = plan.__qualname__ = phase.replace("-", "_")
    plan.__doc__ = f"The {phase} phase of the chosen build strategy (setting bundler)."
    return plan


PHASE_FUNCTIONS = {phase: _by_strategy(phase) for phase in AMI_PHASES}
install = PHASE_FUNCTIONS["install"]
configure = PHASE_FUNCTIONS["configure"]
ami_bundle = PHASE_FUNCTIONS["ami-bundle"]
ami_upload = PHASE_FUNCTIONS["ami-upload"]
ami_register = PHASE_FUNCTIONS["ami-register"]
cleanup = PHASE_FUNCTIONS["cleanup"]


def server_spec(settings: Mapping[str, Any]) -> Spec:
    """The ami phases as a spec, carrying the settings they are built from."""
    return Spec("ami", {name: (fn,) for name, fn in PHASE_FUNCTIONS.items()}, settings=settings)


# The crate's orchestration entry points. They run live (SSH and boto3), so they live in amidsl.live.build;
# these names keep the crate's API in one place. simulator.orchestrate has the simulated counterparts.


def make_ami(group: Spec, settings: Mapping[str, Any] | None = None, **options: Any) -> str:
    """Launch a node for the group, build the image on it, terminate it; return the AMI id."""
    from amidsl.live.build import make_ami as make_ami_live

    return make_ami_live(group, settings, **options)


def make_ami_from_group_node(group_name: str, settings: Mapping[str, Any], **options: Any) -> Any:
    """Build the image on a running node of the group (all phases, cleanup included)."""
    from amidsl.live.build import make_ami_from_group_node as from_group_node_live

    return from_group_node_live(group_name, settings, **options)
