"""Every way a build can end early (Ctrl-C, an unexpected error, a second Ctrl-C during cleanup) takes
the credentials off the node, or says exactly where they may remain; none ends in a traceback."""

from __future__ import annotations

import pytest

from amidsl import crate
from amidsl.model.plan import build_plan
from amidsl.run.runner import ActionFailed, ActionRecord, BuildError, BuildInterrupted, run_plan

SECRET = "sk-secret-value-123456"


class StoppingBackend:
    """Runs node actions by recording them; raises `error` while the phase `stop_in` runs, and
    `removal_error` while the credentials are being removed."""

    def __init__(self, stop_in: str, error: BaseException, removal_error: BaseException | None = None):
        self.stop_in, self.error, self.removal_error = stop_in, error, removal_error
        self.phases: list[str] = []

    def run_node_actions(self, phase, actions, values):
        self.phases.append(phase)
        if phase == self.stop_in:
            raise self.error
        if phase == "on-error" and self.removal_error is not None:
            raise self.removal_error
        return [ActionRecord(phase, index, action.description, "cmd", 0, "") for index, action in actions]

    def call_aws(self, action, params):
        return {"ImageId": "ami-0abc1234"}

    def secrets(self):
        return [SECRET]


def test_ctrl_c_during_the_bundle_removes_the_credentials_and_says_so(raw_settings):
    backend = StoppingBackend("ami-bundle", KeyboardInterrupt())
    with pytest.raises(BuildInterrupted) as caught:
        run_plan(build_plan(crate.server_spec(raw_settings)), backend)
    assert backend.phases[-2:] == ["ami-bundle", "on-error"]
    message = str(caught.value)
    assert message.startswith("phase ami-bundle, action 1")
    assert "was interrupted (Ctrl-C)" in message
    assert "The credentials were removed from the node (/opt/ami-tools/credentials)" in message


def test_an_unexpected_error_removes_the_credentials_and_becomes_a_build_error(raw_settings):
    error = ValueError(f"cannot pass 'AMIDSL_SESSION_TOKEN' to the node ({SECRET})")
    backend = StoppingBackend("ami-upload", error)
    with pytest.raises(BuildError) as caught:
        run_plan(build_plan(crate.server_spec(raw_settings)), backend)
    assert backend.phases[-1] == "on-error"
    message = str(caught.value)
    assert "ValueError: cannot pass 'AMIDSL_SESSION_TOKEN' to the node" in message
    assert "The credentials were removed" in message
    assert SECRET not in message


def test_a_second_ctrl_c_during_removal_says_where_the_credentials_may_remain(raw_settings):
    backend = StoppingBackend("ami-upload", KeyboardInterrupt(), removal_error=KeyboardInterrupt())
    with pytest.raises(BuildInterrupted) as caught:
        run_plan(build_plan(crate.server_spec(raw_settings)), backend)
    message = str(caught.value)
    assert "The credentials may remain on the node in /opt/ami-tools/credentials" in message
    assert "interrupted" in message.split("may remain", 1)[1]
    assert "were removed" not in message


def test_a_failure_shows_the_nodes_escape_sequences_escaped(raw_settings):
    backend = StoppingBackend(
        "ami-bundle", ActionFailed(2, 1, "ec2-bundle-vol: \x1b]0;owned\x07 \x1b[2J failed")
    )
    with pytest.raises(BuildError) as caught:
        run_plan(build_plan(crate.server_spec(raw_settings)), backend)
    message = str(caught.value)
    assert "\x1b" not in message and "\x07" not in message
    assert "ec2-bundle-vol: \\x1b]0;owned\\x07 \\x1b[2J failed" in message
