"""The shared phase loop: order, controller-side results, failures and the on-error policy."""

from __future__ import annotations

import pytest

from amidsl import crate
from amidsl.model.actions import Remove
from amidsl.model.plan import build_plan, group_spec
from amidsl.run.runner import ActionFailed, ActionRecord, BuildError, run_plan
from amidsl.testing import describe_image_phase


class ScriptedBackend:
    """Runs node actions by recording them; fails the action named in `fail_at` with its output."""

    def __init__(self, fail_at=None, output="", secret="sk-secret-value-123"):
        self.fail_at = fail_at
        self.output = output
        self.secret = secret
        self.node_runs: list[tuple[str, list]] = []
        self.calls: list[tuple[str, dict]] = []

    def run_node_actions(self, phase, actions, values):
        self.node_runs.append((phase, [a for _, a in actions]))
        records = []
        for index, action in actions:
            if (phase, index) == self.fail_at:
                raise ActionFailed(index, 3, self.output, records)
            records.append(ActionRecord(phase, index, action.description, "cmd", 0, ""))
        return records

    def call_aws(self, action, params):
        self.calls.append((action.operation, params))
        if action.operation == "RegisterImage":
            return {"ImageId": "ami-0abc1234"}
        if action.operation == "CreateTags":
            return {}
        return {"Images": [{"ImageId": params["ImageIds"][0], "State": "available"}]}

    def secrets(self):
        return [self.secret]

    def pause(self, seconds):
        pass


def plan_with_test_phase(raw_settings):
    return build_plan(
        group_spec("ami", extends=[crate.server_spec(raw_settings)], phases={"test": describe_image_phase})
    )


def test_phases_run_in_order_and_the_image_id_reaches_later_phases(raw_settings):
    backend = ScriptedBackend()
    result = run_plan(plan_with_test_phase(raw_settings), backend)
    assert result.phases == [*crate.PHASE_FUNCTIONS, "test"]
    assert result.image_id == "ami-0abc1234"
    assert [operation for operation, _ in backend.calls] == [
        "RegisterImage",
        "CreateTags",
        "DescribeImages",  # ami-register waits until the image is available
        "DescribeImages",  # the test phase
    ]
    assert backend.calls[-1] == ("DescribeImages", {"ImageIds": ["ami-0abc1234"]})
    assert [phase for phase, _ in backend.node_runs] == [
        "install",
        "configure",
        "ami-bundle",
        "ami-upload",
        "cleanup",
    ]


def test_a_failure_names_phase_and_action_and_removes_the_credentials(raw_settings):
    backend = ScriptedBackend(fail_at=("ami-upload", 1), output="upload refused\nkey sk-secret-value-123")
    with pytest.raises(BuildError) as caught:
        run_plan(plan_with_test_phase(raw_settings), backend)
    error = caught.value
    assert (error.phase, error.index, error.status) == ("ami-upload", 1, 3)
    assert str(error).startswith(
        "phase ami-upload, action 1 (upload the bundle to S3 with ec2-upload-bundle)"
    )
    assert "failed with exit status 3" in str(error).splitlines()[0]
    assert "sk-secret-value-123" not in str(error) and "upload refused" in str(error)
    assert "credentials were removed" in str(error)
    assert "run configure (the credentials were removed) and the phases from ami-upload on" in str(error)
    phase, actions = backend.node_runs[-1]
    assert phase == "on-error" and actions == [
        Remove("/opt/ami-tools/credentials", contents=True, description="remove the credentials")
    ]


def test_abort_leaves_everything_in_place(raw_settings):
    backend = ScriptedBackend(fail_at=("ami-bundle", 2))
    with pytest.raises(BuildError, match="on_error=abort: everything is left in place"):
        run_plan(plan_with_test_phase(raw_settings), backend, on_error="abort")
    assert backend.node_runs[-1][0] == "ami-bundle"


def test_a_rejected_api_call_fails_its_action(raw_settings):
    class Rejecting(ScriptedBackend):
        def call_aws(self, action, params):
            raise RuntimeError("InvalidAMIName.Duplicate: name in use")

    with pytest.raises(BuildError) as caught:
        run_plan(plan_with_test_phase(raw_settings), Rejecting())
    assert caught.value.phase == "ami-register" and "InvalidAMIName.Duplicate" in str(caught.value)


def test_a_later_phase_alone_needs_the_image_id_from_the_settings(raw_settings):
    group = group_spec(
        "ami", extends=[crate.server_spec(raw_settings)], phases={"test": describe_image_phase}
    )
    with pytest.raises(BuildError, match="image_id is not known yet: run the ami-register phase first"):
        run_plan(build_plan(group, phases=["test"]), ScriptedBackend())
    result = run_plan(
        build_plan(group, raw_settings | {"image_id": "ami-0abc1234"}, phases=["test"]), ScriptedBackend()
    )
    assert result.phases == ["test"]
