"""The ami phases: plan functions from settings to actions, as pallet's ami-crate defines them.

Each phase runs the plan function of the strategy the `bundler` setting chooses (`native`, the default,
or `ami-tools`); the strategies live in `amidsl.strategies`. This module is the crate's API for users
(pallet-compatible names); nothing inside amidsl imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amidsl.model.actions import Remove  # noqa: F401 - kept importable from here
from amidsl.model.plan import Spec
from amidsl.settings import AmiSettings, resolve
from amidsl.strategies import PHASE_FUNCTIONS, server_spec  # noqa: F401 - the crate's names
from amidsl.strategies.ami_tools import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN  # noqa: F401 - the crate's names


def settings(raw: Mapping[str, Any]) -> AmiSettings:
    """The settings phase: merge defaults, finalise and validate (raises SettingsError)."""
    return resolve(raw)


install = PHASE_FUNCTIONS["install"]
configure = PHASE_FUNCTIONS["configure"]
ami_bundle = PHASE_FUNCTIONS["ami-bundle"]
ami_upload = PHASE_FUNCTIONS["ami-upload"]
ami_register = PHASE_FUNCTIONS["ami-register"]
cleanup = PHASE_FUNCTIONS["cleanup"]


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
