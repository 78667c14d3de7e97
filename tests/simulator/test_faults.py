"""Injected faults and phases out of order: each failure names its phase and action, and the node is
left without credentials."""

from __future__ import annotations

import pytest

from simulator.packages import model_script

CREDENTIALS = "/opt/ami-tools/credentials/pk"


def failed(simulation) -> tuple[str, int, int | None]:
    assert simulation.error is not None, "the build should have failed"
    return simulation.error.phase, simulation.error.index, simulation.error.status


def test_a_failing_s3_put_fails_once_and_its_retry_succeeds(run, example_settings, region):
    region.faults.fail_put_number = 1
    simulation = run(example_settings)
    assert simulation.error is None
    upload = next(r for r in simulation.transcript if r.phase == "ami-upload")
    assert upload.output.count("InternalError (500)") == 1


def test_a_short_burst_of_5xx_is_ridden_out_by_retry(run, example_settings, region):
    region.faults.s3_5xx_burst = 3
    simulation = run(example_settings)
    assert simulation.error is None
    upload = next(r for r in simulation.transcript if r.phase == "ami-upload")
    assert upload.output.count("SlowDown (503)") == 3


def test_a_long_burst_of_5xx_fails_the_upload(run, example_settings, node, region):
    region.faults.s3_5xx_burst = 10
    simulation = run(example_settings)
    assert failed(simulation) == ("ami-upload", 1, 1)
    assert not node.exists(CREDENTIALS)


def test_disk_full_in_the_destination_fails_the_bundle(run, example_settings, node):
    node.faults.disk_full_under = "/tmp"
    simulation = run(example_settings)
    assert failed(simulation) == ("ami-bundle", 6, 1)
    assert "No space left on device" in str(simulation.error)
    assert not node.exists(CREDENTIALS)


def test_a_rejected_registration(run, example_settings, node, region):
    region.faults.reject_register = "InvalidManifest"
    simulation = run(example_settings)
    assert failed(simulation) == ("ami-register", 1, 1)
    assert "InvalidManifest" in str(simulation.error)
    assert not node.exists(CREDENTIALS)


def test_an_interrupted_phase_removes_the_credentials_on_reconnect(run, example_settings, node):
    node.faults.interrupt_at = ("ami-bundle", 2)
    simulation = run(example_settings)
    assert failed(simulation) == ("ami-bundle", 2, 255)
    assert "connection to the node was lost" in str(simulation.error)
    assert "credentials were removed" in str(simulation.error)
    assert not node.exists(CREDENTIALS)


def test_abort_leaves_the_credentials_for_debugging(run, example_settings, node):
    node.faults.disk_full_under = "/tmp"
    simulation = run(example_settings, on_error="abort")
    assert failed(simulation)[0] == "ami-bundle"
    assert node.exists(CREDENTIALS)
    assert "on_error=abort" in str(simulation.error)


def test_a_failed_build_resumes_from_the_failed_phase(run, example_settings, node, region):
    region.faults.s3_5xx_burst = 10
    assert failed(run(example_settings))[0] == "ami-upload"
    region.faults.s3_5xx_burst = 0
    # The credentials were removed: resuming means configure again, then upload on.
    resumed = run(example_settings, ["configure", "ami-upload", "ami-register", "cleanup"])
    assert resumed.error is None and resumed.image_id


# -- out of order, as a real node would fail ----------------------------------------------------


def test_bundle_before_install(run, example_settings):
    simulation = run(example_settings, ["ami-bundle"])
    phase, index, status = failed(simulation)
    assert (phase, index, status) == ("ami-bundle", 3, 127)  # the Ruby check finds no Ruby
    assert "ruby: command not found" in str(simulation.error)


def test_configure_without_the_credential_dir(run, example_settings):
    simulation = run(example_settings, ["configure"])
    assert failed(simulation) == ("configure", 1, 1)
    assert "install: cannot create regular file '/opt/ami-tools/credentials/cert'" in str(simulation.error)


def test_upload_before_bundle(run, example_settings):
    simulation = run(example_settings, ["install", "configure", "ami-upload"])
    assert failed(simulation) == ("ami-upload", 1, 1)
    assert "manifest /tmp/image.manifest.xml does not exist" in str(simulation.error)


def test_register_before_upload(run, example_settings):
    simulation = run(example_settings, ["ami-register"])
    assert failed(simulation) == ("ami-register", 1, 1)
    assert "InvalidManifest" in str(simulation.error)


def test_bundle_without_ruby(run, example_settings):
    simulation = run(example_settings | {"install-strategy": "none"}, ["install", "configure", "ami-bundle"])
    assert failed(simulation) == ("ami-bundle", 3, 127)
    assert "ruby: command not found" in str(simulation.error)


def test_a_ruby_the_tools_cannot_run_on_stops_the_bundle_before_the_tools_run(run, example_settings, node):
    node.write_bytes("/usr/bin/ruby", model_script("ruby", "# ruby 3.3.4\n"), mode=0o755)
    simulation = run(example_settings | {"install-strategy": "none"}, ["install", "configure", "ami-bundle"])
    assert failed(simulation) == ("ami-bundle", 3, 1)
    assert "Ruby 3.3 cannot run ec2-ami-tools 1.5" in str(simulation.error)
    assert not any("ec2-bundle-vol" in argv[0] for argv in node.history)


@pytest.mark.parametrize("fault", ["s3_5xx_burst", "reject_register"])
def test_fault_messages_name_phase_and_action(run, example_settings, region, fault):
    setattr(region.faults, fault, 10 if fault == "s3_5xx_burst" else "InvalidAMIName.Duplicate")
    message = str(run(example_settings).error)
    assert message.startswith("phase ami-")
    assert ", action 1 (" in message.splitlines()[0]


def test_keys_the_account_does_not_know_fail_the_upload(run, example_settings, node):
    raw = example_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": "not-the-accounts-secret"}
    simulation = run(raw)
    assert failed(simulation) == ("ami-upload", 1, 1)
    assert "InvalidAccessKeyId" in str(simulation.error)
    assert "not-the-accounts-secret" not in str(simulation.error)
    assert not node.exists(CREDENTIALS)
