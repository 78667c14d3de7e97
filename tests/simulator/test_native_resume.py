"""Resuming a native build: after a failure in each phase, the message says from which phase to run the
build again, and doing just that (once the cause is fixed) finishes it."""

from __future__ import annotations

import os
import re

import pytest

from amidsl.strategies.native import PHASE_FUNCTIONS
from simulator.executor import SimulatorBackend

PHASES = list(PHASE_FUNCTIONS)
RESUME = re.compile(r"To resume, fix the cause and run (?:the build )?again from phase (\S+?)[ .]")


def break_phase(phase: str, node, region, monkeypatch) -> None:
    """A fault that fails the phase once (the connection drops, S3 refuses the parts) or until it is
    fixed (EC2 refuses the registration)."""
    if phase == "ami-upload":
        real = SimulatorBackend.run_node_program

        def upload_fails_once(self, action, request):
            if action.command == "upload":
                monkeypatch.setattr(SimulatorBackend, "run_node_program", real)
                return 1, "", "amidsl-node: error: part image.part.0 could not be uploaded (HTTP 403)\n"
            return real(self, action, request)

        monkeypatch.setattr(SimulatorBackend, "run_node_program", upload_fails_once)
    elif phase == "ami-register":
        region.faults.reject_register = "InvalidAMIName.Duplicate"
    else:
        node.faults.interrupt_at = (phase, 1)  # the first node action of the phase loses the connection


def hidden_names(node, directory: str) -> list[str]:
    """The dotfiles in a node directory (where the node program keeps its temporary files)."""
    return sorted(name for name in os.listdir(node.host_path(directory)) if name.startswith("."))


@pytest.mark.parametrize("phase", ["install", "ami-bundle", "ami-upload", "ami-register", "cleanup"])
def test_following_the_resume_hint_after_a_failure_finishes_the_build(
    phase, run, native_settings, node, region, monkeypatch
):
    break_phase(phase, node, region, monkeypatch)
    failed = run(native_settings)
    assert failed.error is not None and failed.error.phase == phase, failed.error
    resume_from = RESUME.search(str(failed.error))
    assert resume_from, str(failed.error)

    region.faults.reject_register = None  # the cause, fixed (the other faults happen once)
    resumed = run(native_settings, PHASES[PHASES.index(resume_from[1]) :])

    assert resumed.error is None, resumed.error
    [image] = region.ec2.describe_images(Owners=["self"])["Images"]
    assert resumed.inspect_image(image["ImageId"]).manifest.user == "123456789012"  # it verifies
    assert not node.exists("/opt/ami-tools")
    assert node.glob("/tmp", "image.part.*") == [] and hidden_names(node, "/tmp") == []


def test_a_failed_native_bundle_is_resumed_from_install(run, native_settings, node, region):
    node.faults.interrupt_at = ("ami-bundle", 1)
    failed = run(native_settings)
    # The bundle's key and report lived in the controller's memory; the node program was removed.
    assert "run the build again from phase install." in str(failed.error)


def test_a_failed_registration_is_resumed_from_ami_register_with_the_bundle_in_s3(
    run, native_settings, node, region
):
    region.faults.reject_register = "InvalidAMIName.Duplicate"
    failed = run(native_settings)
    message = str(failed.error)
    assert "run the build again from phase ami-register (the bundle is in S3)" in message
    assert "The bundle's files were left in S3" in message


def test_cleanup_on_its_own_removes_what_a_node_program_that_died_left(run, native_settings, node):
    dead = 2**22 + 1  # above Linux's largest pid: that run is not going any more
    node.write_bytes(f"/tmp/.image.image.{dead}", b"half an image")
    node.write_bytes(f"/tmp/.image.ahead.{dead}", b"chunks deflated ahead")
    node.write_bytes(f"/tmp/.image.part.{dead}.tmp3", b"half a part")
    node.make_dirs(f"/tmp/.amidsl-staging-{dead}-abcd/etc")
    node.write_bytes("/tmp/.image.keep", b"not a run's file")

    cleaned = run(native_settings, ["cleanup"])

    assert cleaned.error is None, cleaned.error
    assert hidden_names(node, "/tmp") == [".image.keep"]
    said = "\n".join(record.output for record in cleaned.transcript)
    assert f"removed /tmp/.image.image.{dead}, left by a run (pid {dead})" in said
    assert not node.exists("/opt/ami-tools")


def test_a_failure_before_install_dir_exists_does_not_report_its_removal_as_failed(
    run, native_settings, node
):
    node.faults.interrupt_at = ("install", 1)  # before the node program's directory is made
    failed = run(native_settings)
    message = str(failed.error)
    assert "amidsl's node program was removed (/opt/ami-tools)" in message
    assert "failed (amidsl: refusing" not in message
