"""Plans and specs: composing phase plan functions (server_spec / group_spec) and building a Plan.

A plan function is a plain function from finalised settings to a sequence of actions (and optional
`PlanWarning`s for the reviewer). A spec maps phase names to the plan functions that make them up; a
group spec merges several specs, same-named phases running their functions in order, the way a pallet
group-spec `:extends` server specs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from amidsl.model.actions import Action, PhasePlan, PlanWarning
from amidsl.settings import AmiSettings, Problem, SettingsError, resolve

PlanFn = Callable[[AmiSettings], Sequence[Union[Action, PlanWarning]]]

# The ami phases in the order a full build runs them ("settings" is resolution, not a node phase).
AMI_PHASES = ("install", "configure", "ami-bundle", "ami-upload", "ami-register", "cleanup")


@dataclass(frozen=True)
class Spec:
    """A named map of phases to plan functions, with the settings they are built from (if any)."""

    name: str
    phases: Mapping[str, tuple[PlanFn, ...]]
    settings: Mapping[str, Any] | None = field(default=None, compare=False)

    def phase_names(self) -> tuple[str, ...]:
        """The spec's phases in run order: the ami phases first, then the others as defined."""
        known = [p for p in AMI_PHASES if p in self.phases]
        return tuple(known + [p for p in self.phases if p not in AMI_PHASES])


@dataclass(frozen=True)
class Plan:
    """The actions each chosen phase will run, with the settings they were made from."""

    spec_name: str
    settings: AmiSettings
    phases: tuple[PhasePlan, ...]

    def phase(self, name: str) -> PhasePlan:
        """The plan of one phase by name."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)


def group_spec(
    name: str,
    extends: Iterable[Spec] = (),
    phases: Mapping[str, PlanFn | Sequence[PlanFn]] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Spec:
    """Merge specs into one: same-named phases run each spec's functions in order, then `phases`."""
    merged: dict[str, tuple[PlanFn, ...]] = {}
    merged_settings = settings
    for spec in extends:
        for phase, fns in spec.phases.items():
            merged[phase] = merged.get(phase, ()) + tuple(fns)
        if spec.settings is not None:
            if merged_settings is not None and merged_settings != spec.settings:
                raise ValueError(f"group {name!r}: two extended specs carry different settings")
            merged_settings = spec.settings
    for phase, fns in (phases or {}).items():
        fns = (fns,) if callable(fns) else tuple(fns)
        merged[phase] = merged.get(phase, ()) + fns
    return Spec(name=name, phases=merged, settings=merged_settings)


def normalise_phase(name: str) -> str:
    """Accept `ami_bundle` as well as `ami-bundle`."""
    return name.strip().replace("_", "-")


def choose_phases(spec: Spec, requested: Iterable[str] | None) -> tuple[str, ...]:
    """The phases to run, in the spec's run order; unknown names are a settings problem."""
    available = spec.phase_names()
    if not requested:
        return available
    wanted = [normalise_phase(p) for p in requested]
    unknown = [p for p in wanted if p not in available]
    if unknown:
        problems = [
            Problem(
                "--phase", f"{p!r} is not a phase of {spec.name!r}", f"choose from {', '.join(available)}"
            )
            for p in unknown
        ]
        raise SettingsError(problems, origin=spec.name)
    return tuple(p for p in available if p in wanted)


def build_plan(
    spec: Spec,
    settings: AmiSettings | Mapping[str, Any] | None = None,
    phases: Iterable[str] | None = None,
) -> Plan:
    """Resolve the settings and run each chosen phase's plan functions into a Plan."""
    raw = settings if settings is not None else spec.settings
    if raw is None:
        raise ValueError(f"spec {spec.name!r} has no settings")
    resolved = raw if isinstance(raw, AmiSettings) else resolve(raw, origin=spec.name)
    phase_plans = []
    for phase in choose_phases(spec, phases):
        actions: list[Action] = []
        warnings: list[str] = []
        notes: list[str] = []
        for fn in spec.phases[phase]:
            for item in fn(resolved):
                if isinstance(item, PlanWarning):
                    (notes if item.note else warnings).append(item.text)
                else:
                    actions.append(item)
        phase_plans.append(PhasePlan(phase, tuple(actions), tuple(warnings), notes=tuple(notes)))
    return Plan(spec.name, resolved, tuple(phase_plans))
