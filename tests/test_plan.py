"""Plans and specs: building a plan, choosing phases, and composing specs with group_spec."""

from __future__ import annotations

import pytest

from amidsl import crate
from amidsl.model.actions import AwsCall, CheckResult
from amidsl.model.plan import build_plan, group_spec
from amidsl.settings import SettingsError
from amidsl.testing import describe_image_phase


def test_plan_runs_all_ami_phases_in_order(raw_settings):
    plan = build_plan(crate.server_spec(raw_settings))
    assert [p.name for p in plan.phases] == list(crate.PHASE_FUNCTIONS)
    assert plan.settings.image_name == "web-server-2026-11"


def test_chosen_phases_keep_run_order_and_accept_underscores(raw_settings):
    plan = build_plan(crate.server_spec(raw_settings), phases=["cleanup", "ami_bundle"])
    assert [p.name for p in plan.phases] == ["ami-bundle", "cleanup"]


def test_unknown_phase_is_bad_input(raw_settings):
    with pytest.raises(SettingsError, match=r"--phase: 'bundle' is not a phase of 'ami'"):
        build_plan(crate.server_spec(raw_settings), phases=["bundle"])


def test_group_spec_adds_a_test_phase_after_the_ami_phases(raw_settings):
    group = group_spec(
        "ami", extends=[crate.server_spec(raw_settings)], phases={"test": describe_image_phase}
    )
    plan = build_plan(group)
    assert [p.name for p in plan.phases][-1] == "test"
    test = plan.phase("test")
    assert isinstance(test.actions[0], AwsCall) and isinstance(test.actions[1], CheckResult)


def test_group_spec_runs_same_named_phases_in_order(raw_settings):
    def extra_cleanup(settings):
        return [crate.Remove("/var/log/build.log", description="remove the build log")]

    mine = group_spec("logs", phases={"cleanup": extra_cleanup})
    group = group_spec("web", extends=[crate.server_spec(raw_settings), mine])
    cleanup = build_plan(group, phases=["cleanup"]).phase("cleanup")
    assert cleanup.actions[:-1] == tuple(crate.cleanup(build_plan(group).settings))
    assert cleanup.actions[-1].path == "/var/log/build.log"


def test_group_spec_refuses_two_different_settings(raw_settings):
    with pytest.raises(ValueError, match="different settings"):
        group_spec(
            "x",
            extends=[crate.server_spec(raw_settings), crate.server_spec(raw_settings | {"arch": "i386"})],
        )


def test_bad_settings_stop_planning(raw_settings):
    with pytest.raises(SettingsError):
        build_plan(crate.server_spec(raw_settings | {"arch": "sparc"}))
