"""`amidsl simulate` from the command line: output, JSON, faults, phases, interrupts, temp files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from amidsl.cli.main import run as run_command_line
from amidsl.example import example_config_path
from tests.live.node_settings import write_toml

LISTING_LINE = re.compile(r"[-dlpscb][0-7]{4} +\d+:\d+ +\d+ /\S*")


def amidsl(*args: str, temp: Path | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AMIDSL_CONFIG"}
    if temp is not None:
        env["TMPDIR"] = str(temp)
    return subprocess.run(
        [sys.executable, "-m", "amidsl", "simulate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_the_command_module_leaves_moto_to_load_inside_the_simulation():
    """moto makes botocore sessions of its own as it loads (to list EC2's regions); loaded within the
    simulation's one botocore loader, they and the region read AWS's service models only once."""
    code = "import sys, amidsl.cli.simulate_commands; print('moto' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


@pytest.fixture
def here(capsys, monkeypatch):
    """`amidsl simulate ARGS` run in this process, as amidsl() runs it in a new one: a CompletedProcess.

    For commands that need no process of their own (no signal, no pipe): a new Python spends seconds
    starting and loading AWS's service models, which proves nothing more.
    """
    monkeypatch.delenv("AMIDSL_CONFIG", raising=False)

    def simulate(*args: str, temp: Path | None = None) -> subprocess.CompletedProcess:
        if temp is not None:
            monkeypatch.setenv("TMPDIR", str(temp))
            monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
        status = run_command_line(["simulate", *args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["amidsl", "simulate", *args], status, captured.out, captured.err)

    return simulate


@pytest.fixture
def temp(tmp_path) -> Path:
    """A private temporary directory for the command, to check it leaves nothing behind."""
    path = tmp_path / "temp"
    path.mkdir()
    return path


def test_simulate_the_built_in_example_builds_natively_by_default(temp):
    run = amidsl(temp=temp)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1].startswith("amidsl simulate: spec 'ami': image 'amidsl-example-ami'")
    assert "  [ami-bundle 3] image the volume and bundle it into parts on the node: ok [node]" in lines
    assert "ec2-bundle-vol" not in run.stdout
    registered = next(line for line in lines if line.startswith("registered ami-"))
    assert "s3://amidsl-example-bundles/images/example/image.manifest.xml" in registered
    # Image hygiene takes the private key before the filter would; the summary says it per item.
    assert any(line.startswith("  image hygiene: /etc/ssl/private/node.pem") for line in lines)
    assert "  private_keys (left out): 2: /etc/ssl/private/node.pem, /root/.ssh/id_rsa" in lines
    assert any(line.startswith("  caller exclusion: /opt/ami-tools") for line in lines)  # the node program
    assert list(temp.iterdir()) == []


def test_simulate_the_built_in_example_with_the_ami_tools(here, temp):
    run = here("--bundler", "ami-tools", temp=temp)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("using the built-in example settings")
    assert lines[1].startswith("amidsl simulate: spec 'ami': image 'amidsl-example-ami'")
    # off a terminal, an action that says nothing else is one line: its end line
    assert "  [ami-bundle 6] bundle the volume with ec2-bundle-vol ..." not in lines
    assert "  [ami-bundle 6] bundle the volume with ec2-bundle-vol: ok" in lines
    registered = next(line for line in lines if line.startswith("registered ami-"))
    assert "s3://amidsl-example-bundles/images/example/image.manifest.xml" in registered
    assert any(line.startswith("  filter pattern: /home/admin/#draft.txt# (*/#*#)") for line in lines)
    # What image hygiene found on the node reaches ec2-bundle-vol as exclusions (-e).
    exclusions = next(line for line in lines if line.startswith("  caller exclusion: "))
    assert "/opt/ami-tools" in exclusions and "/etc/ssl/private/node.pem" in exclusions
    assert "bundle of 1 part verified" in run.stdout
    assert list(temp.iterdir()) == []


def test_quiet_prints_only_the_result(here):
    run = here("--quiet")
    assert run.returncode == 0, run.stderr
    assert "[ami-bundle" not in run.stdout and "phase " not in run.stdout
    assert "registered ami-" in run.stdout


def test_inspect_lists_the_image_in_the_image_ls_format(here):
    run = here("--inspect")
    listed = [line.strip() for line in run.stdout.splitlines() if LISTING_LINE.fullmatch(line.strip())]
    assert "d0755         0:0            0 /" in listed
    assert any(line.endswith(" /home/admin") and "1000:1000" in line for line in listed)
    # The example is hvm, as a config of one's own is by default: the layout says so before the files.
    assert "layout: a disk with an MBR partition table (1 partition(s))" in run.stdout


def test_json_has_a_schema_and_honours_inspect(here):
    plain = json.loads(here("--json").stdout)
    assert plain["schema"] == "amidsl.simulate/2" and plain["image_id"].startswith("ami-")
    assert plain["config"] == [str(example_config_path())] and plain["config_from"] == "built-in example"
    assert "entries" not in plain["image"] and plain["image"]["summary"]["parts"] == 1
    assert plain["image"]["layout"][0] == "layout: a disk with an MBR partition table (1 partition(s))"
    assert plain["image"]["modelled"][0].startswith("modelled: the kernel and initramfs (stand-ins")
    inspected = json.loads(here("--json", "--inspect").stdout)
    assert {"path": "/etc/fstab"}.items() <= next(
        e for e in inspected["image"]["entries"] if e["path"] == "/etc/fstab"
    ).items()


def test_json_names_every_settings_file_in_the_order_they_were_layered(here, tmp_path):
    base = tmp_path / "base.toml"
    base.write_bytes(example_config_path().read_bytes())
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"image_name": "web-ci"}})
    layered = json.loads(here("-c", str(base), "-c", str(ci), "--json", "--quiet").stdout)
    assert layered["config"] == [str(base), str(ci)] and layered["config_from"] == "--config"
    assert layered["image_name"] == "web-ci" and layered["image_id"].startswith("ami-")
    alone = json.loads(here("-c", str(base), "--json", "--quiet").stdout)
    assert alone["config"] == [str(base)] and alone["image_name"] == "amidsl-example-ami"


def test_json_names_the_settings_file_amidsl_config_gave(here, monkeypatch, tmp_path):
    base = tmp_path / "base.toml"
    base.write_bytes(example_config_path().read_bytes())
    monkeypatch.setenv("AMIDSL_CONFIG", str(base))
    document = json.loads(here("--json", "--quiet").stdout)
    assert document["config"] == [str(base)] and document["config_from"] == "$AMIDSL_CONFIG"


def test_json_with_a_fault_fails_naming_phase_and_action(here):
    run = here("--bundler", "ami-tools", "--json", "--fault", "disk-full=/tmp")
    assert run.returncode == 1
    document = json.loads(run.stdout)
    assert document["image_id"] is None
    assert document["error"].startswith("phase ami-bundle, action 6 (bundle the volume with ec2-bundle-vol)")
    assert document["transcript"][-1]["phase"] == "on-error"
    assert "simulated build failed: phase ami-bundle, action 6" in run.stderr


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("meteor=1", "not a fault I know"),
        ("bogus", "not a fault I know"),
        ("fail-pt=2", "not a fault I know (did you mean fail-put?)"),
        ("fail-put=0", "give a whole number of 1 or more"),
        ("s3-5xx=-1", "give a whole number of 1 or more"),
        ("disk-full=/nonexistent", "no such directory on the simulated node"),
        ("interrupt=ami-bundle:9", "phase ami-bundle has actions 1 to 7"),
        ("interrupt=bundle:1", "'bundle' is not a phase of this run"),
        ("reject-register=", "give an EC2 error code"),
        ("image-pending=x", "give a whole number of 1 or more"),
        ("image-failed=eu-west-3", "give the build's region or a copy region (us-east-1)"),
    ],
)
def test_faults_that_make_no_sense_are_refused_and_leave_no_temp_files(here, temp, fault, message):
    run = here("--bundler", "ami-tools", "--fault", fault, temp=temp)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"--fault '{fault}': {message}" in run.stderr
    assert list(temp.iterdir()) == []


def test_a_refused_fault_lists_the_faults_on_a_line_of_their_own(here):
    run = here("--fault", "meteor=1")
    assert run.returncode == 2
    said = "--fault 'meteor=1': not a fault I know.\nFaults: fail-put=N (the N-th S3 PUT fails once)"
    assert said in run.stderr
    assert "inject a fault" not in run.stderr


def test_fail_put_fails_exactly_that_put_and_the_retry_succeeds(here):
    run = here("--bundler", "ami-tools", "--json", "--fault", "fail-put=1")
    document = json.loads(run.stdout)
    assert run.returncode == 0 and document["image_id"]
    upload = next(r for r in document["transcript"] if r["phase"] == "ami-upload")
    assert upload["output"].count("InternalError (500)") == 1
    assert document["faults_not_fired"] == []


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--fault", "fail-part=9"], r"no part 9 was uploaded \(the parts uploaded, counted from 0: 0\)"),
        (["--fault", "fail-put=99"], r"it counts the upload's S3 PUT requests, and there (was 1|were \d+)"),
    ],
)
def test_a_fault_the_run_never_meets_fails_the_simulation_saying_it_did_not_fire(here, args, why):
    run = here(*args)
    fault = args[-1]
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "registered ami-" in run.stdout  # the build itself went through, untouched by the fault
    assert "the simulated build went through without meeting 1 of the faults asked for" in run.stderr
    assert re.search(rf"--fault '{fault}' did not fire: {why}", run.stderr), run.stderr
    document = json.loads(here(*args, "--json").stdout)
    assert document["image_id"] and [f["fault"] for f in document["faults_not_fired"]] == [fault]


def test_a_fault_that_never_fires_after_an_earlier_failure_is_named_with_that_failure(here):
    run = here("--fault", "disk-full=/tmp", "--fault", "reject-register=InvalidAMIName.Duplicate")
    assert run.returncode == 1
    assert "simulated build failed: phase install, action 5" in run.stderr  # no free space in /tmp
    assert "--fault 'reject-register=InvalidAMIName.Duplicate' did not fire: the run registered no image" in (
        run.stderr
    )


NOT_FOR_AMI_TOOLS = "it models the native bundler's node program: drop --bundler ami-tools"


@pytest.mark.parametrize(
    ("bundler", "fault", "message"),
    [
        ("ami-tools", "url-expires=1", NOT_FOR_AMI_TOOLS),
        ("ami-tools", "no-python3", NOT_FOR_AMI_TOOLS),
        ("ami-tools", "old-mke2fs=1.42.9", NOT_FOR_AMI_TOOLS),
        (
            "native",
            "interrupt=ami-bundle:3",
            "action 3 of ami-bundle (image the volume and bundle it into parts on the node) is the "
            "node program, which the controller drives (ctrl-c=ami-bundle:3 stops it); choose one of 1",
        ),
        (
            "native",
            "ctrl-c=ami-bundle:4",
            "action 4 of ami-bundle (build and sign the manifest on the controller) runs on the "
            "controller; choose one of 1, 3",
        ),
        ("native", "no-python3=yes", "no-python3 takes no value"),
        ("native", "old-python3=3.8", "give a version older than 3.8, such as 3.6.9"),
        ("native", "old-mke2fs=new", "give a version older than 1.43, such as 1.42.9"),
        ("native", "fail-part=first", "give a part's index (0 for the first part)"),
    ],
)
def test_node_program_faults_that_make_no_sense_are_refused(here, temp, bundler, fault, message):
    run = here("--bundler", bundler, "--fault", fault, temp=temp)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"--fault '{fault}': {message}" in run.stderr
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("fault", ["fail-put=1", "s3-5xx=3", "fail-part=1", "url-expires=1"])
def test_s3_upload_faults_are_refused_before_any_work_for_an_ebs_backed_build(here, temp, fault):
    run = here("--set", "backing=ebs", "--fault", fault, temp=temp)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        f"--fault '{fault}': it acts on the S3 upload of a bundle, and a build with backing = \"ebs\" puts "
        "no bundle in S3: drop the fault, or add --set backing=instance-store to simulate an S3-backed build"
        in run.stderr
    )
    assert "phase install" not in run.stdout
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    ("fault", "status", "said"),
    [
        ("fail-part=0", 1, "part image.part.0 could not be uploaded (HTTP 403: AccessDenied: Access Denied)"),
        ("no-mke2fs", 1, "mke2fs is not installed; install e2fsprogs"),
        ("ctrl-c=ami-bundle:3", 130, "simulated build interrupted: phase ami-bundle, action 3"),
    ],
)
def test_a_native_build_meeting_a_fault_exits_non_zero_saying_why_and_leaves_no_temp_files(
    here, temp, fault, status, said
):
    run = here("--fault", fault, temp=temp)
    assert run.returncode == status and "Traceback" not in run.stderr
    assert said in run.stderr
    assert list(temp.iterdir()) == []


def test_a_failed_registration_prints_its_action_line(here):
    run = here("--fault", "reject-register=InvalidAMIName.Duplicate")
    assert run.returncode == 1
    line = "  [ami-register 1] register the image with EC2: failed [ec2:RegisterImage]"
    assert line in run.stdout.splitlines()


def test_a_failed_node_program_action_prints_where_it_ran_as_a_success_does(here):
    run = here("--fault", "disk-full=/tmp")
    assert run.returncode == 1
    [line] = [line for line in run.stdout.splitlines() if line.startswith("  [install 5] ")]
    assert line.endswith(": failed [node]")


def test_a_pending_image_is_waited_for_and_a_failed_one_fails_the_build_with_its_reason(here):
    waited = here("--fault", "image-pending=2")
    assert waited.returncode == 0, waited.stderr
    assert "pending (0 s of at most 1800 s)" in waited.stdout
    failed = here("--fault", "image-failed=us-east-1")
    assert failed.returncode == 1
    assert "is failed: the image failed (simulated fault) (Client.SimulatedFault)" in failed.stderr
    assert "The image was registered before this failure and stays" in failed.stderr


@pytest.mark.parametrize(
    ("fault", "status", "said"),
    [
        ("ctrl-c=ami-upload:1", 130, "into an EBS snapshot from the controller) was interrupted (Ctrl-C)"),
        ("interrupt=ami-upload:1", 1, "ssh: connection to the node was lost"),
    ],
)
def test_an_ebs_upload_can_be_interrupted_and_leaves_no_unfinished_snapshot(here, temp, fault, status, said):
    run = here("--set", "backing=ebs", "--fault", fault, temp=temp)
    assert run.returncode == status and "Traceback" not in run.stderr
    assert "phase ami-upload, action 1 (upload the disk's blocks into an EBS snapshot" in run.stderr
    assert said in run.stderr and "did not fire" not in run.stderr
    assert re.search(
        r"The unfinished snapshot snap-\w+ was deleted; nothing is left in us-east-1", run.stderr
    )
    assert list(temp.iterdir()) == []


def test_an_ebs_upload_s_own_controller_step_is_refused_for_interruptions(here):
    run = here("--set", "backing=ebs", "--fault", "interrupt=ami-upload:2")
    assert run.returncode == 2
    assert (
        "action 2 of ami-upload (keep the snapshot id) runs on the controller; choose one of 1" in run.stderr
    )


def test_json_of_a_failed_ebs_registration_has_the_snapshot_and_the_phases_that_finished(here):
    run = here("--set", "backing=ebs", "--json", "--fault", "reject-register=InvalidParameterValue")
    assert run.returncode == 1
    document = json.loads(run.stdout)
    snapshot_id = document["snapshot_id"]
    assert snapshot_id.startswith("snap-")
    assert f"The snapshot {snapshot_id} (completed) stays in us-east-1" in document["error"]
    assert set(document["timings"]) == {"install", "configure", "ami-bundle", "ami-upload"}
    assert document["image_id"] is None and document["images"] == {} and document["bundle"] is None


def test_json_of_an_image_that_failed_after_registering_has_the_image_and_its_snapshot(here):
    run = here("--set", "backing=ebs", "--json", "--fault", "image-failed=us-east-1")
    assert run.returncode == 1
    document = json.loads(run.stdout)
    image_id = document["image_id"]
    assert image_id.startswith("ami-") and document["images"] == {"us-east-1": image_id}
    assert f"stays, on its EBS snapshot: {image_id} in us-east-1" in document["error"]
    assert document["snapshot_id"].startswith("snap-")
    assert set(document["timings"]) == {"install", "configure", "ami-bundle", "ami-upload"}


def test_json_of_a_failed_upload_has_the_bundle_and_its_parts(here):
    run = here("--json", "--fault", "fail-part=0")
    assert run.returncode == 1
    document = json.loads(run.stdout)
    assert document["image_id"] is None and document["snapshot_id"] is None
    assert document["bundle"] == "s3://amidsl-example-bundles/images/example/image.manifest.xml"
    assert [part["filename"] for part in document["parts"]] == ["image.part.0"]
    assert set(document["timings"]) == {"install", "configure", "ami-bundle"}


def test_a_later_phase_alone_is_refused_with_the_phases_it_needs(temp):
    run = amidsl("--phase", "ami-upload", temp=temp)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--phase ami-upload: each simulation starts from a fresh node" in run.stderr
    assert "needs install, configure, ami-bundle first" in run.stderr
    assert list(temp.iterdir()) == []


def test_your_own_account_is_the_simulated_account(here, tmp_path, raw_settings):
    config = write_toml(tmp_path / "mine.toml", {"ami": raw_settings | {"user_id": "4444-5555-6666"}})
    run = here("--config", str(config), "--quiet")
    assert run.returncode == 0, run.stderr + run.stdout
    assert "registered ami-" in run.stdout


OWN_KEYS = {"access_key": "AKIAEXAMPLEOWNKEY123", "secret_key": "own-secret-example-not-a-real-key"}


@pytest.mark.parametrize("bundler", ["ami-tools", "native"])
def test_your_own_access_keys_are_the_simulated_accounts_and_never_shown(
    here, tmp_path, raw_settings, bundler
):
    config = write_toml(tmp_path / "mine.toml", {"ami": raw_settings | OWN_KEYS | {"bundler": bundler}})
    run = here("--config", str(config), "--verbose")
    assert run.returncode == 0, run.stderr + run.stdout
    assert "registered ami-" in run.stdout
    as_json = here("--config", str(config), "--json", "--inspect")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["image_id"]
    for value in OWN_KEYS.values():
        assert value not in run.stdout + run.stderr + as_json.stdout + as_json.stderr


def test_a_config_of_ones_own_without_virtualization_type_simulates_an_hvm_disk(here, tmp_path, raw_settings):
    own = {key: value for key, value in raw_settings.items() if key != "bundler"}  # native, hvm by default
    run = here("--config", str(write_toml(tmp_path / "mine.toml", {"ami": own})), "--quiet")
    assert run.returncode == 0, run.stderr + run.stdout
    lines = run.stdout.splitlines()
    assert "layout: a disk with an MBR partition table (1 partition(s))" in lines
    assert any(line.startswith("partition 1: Linux (0x83), bootable, from sector 2048") for line in lines)


def test_without_grub_on_this_machine_the_simulation_says_the_boot_code_was_modelled(
    here, monkeypatch, tmp_path
):
    from simulator import grub

    monkeypatch.setattr(grub, "HOST_MODULES", tmp_path / "no-grub-here" / "i386-pc")
    run = here("--quiet")
    assert run.returncode == 0, run.stderr + run.stdout
    lines = run.stdout.splitlines()
    assert "boot loader: boot code in the MBR is not GRUB 2's" in lines
    assert any(
        line.startswith("modelled: GRUB 2 for BIOS, as this machine has none (grub-pc-bin): stand-in files")
        for line in lines
    )


def test_a_closed_pipe_stops_the_simulation_and_cleans_up(temp):
    command = f"{sys.executable} -m amidsl simulate | head -3; echo status=${{PIPESTATUS[0]}}"
    run = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env={**os.environ, "TMPDIR": str(temp)}
    )
    assert "Traceback" not in run.stderr
    assert run.stdout.splitlines()[-1] == "status=141"
    assert list(temp.iterdir()) == []


def parts_written(temp: Path) -> int:
    """How many part files the bundler has begun (files come and go: os.walk skips the gone).

    The node program writes each part as part.<i> in its private work directory, .image.work.<pid>-*.
    """
    return sum(
        name.startswith("part.") and "/.image.work." in directory
        for directory, _, names in os.walk(temp)
        for name in names
    )


@pytest.mark.parametrize("started_with", ["SIGINT handled", "SIGINT ignored"])
def test_ctrl_c_while_bundling_stops_promptly_and_cleans_up(temp, started_with):
    # Started with SIGINT ignored (a background job of a script) Python would not raise
    # KeyboardInterrupt: amidsl handles Ctrl-C all the same.
    ignored = started_with == "SIGINT ignored"
    process = subprocess.Popen(
        [sys.executable, "-m", "amidsl", "simulate", "--payload-mb", "300"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None,
    )
    # Interrupt with compression in full flow (a few parts written): there the old bundler hung.
    deadline = time.monotonic() + 120
    while parts_written(temp) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("simulate did not stop within 20 s of Ctrl-C")
    assert time.monotonic() - interrupted < 10
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert list(temp.iterdir()) == []


def test_cleanup_alone_is_refused_but_runs_after_install(here):
    alone = here("--phase", "cleanup")
    assert alone.returncode == 2 and "cleanup needs install first" in alone.stderr
    after_install = here("--phase", "install", "--phase", "cleanup", "--quiet")
    assert after_install.returncode == 0, after_install.stderr


@pytest.mark.parametrize(("args", "collector"), [(["simulate", "-q"], False), (["plan"], True)])
def test_a_simulation_process_runs_without_the_cyclic_collector_and_other_commands_with_it(args, collector):
    # A simulation's millions of long-lived objects, which the collector would walk over and over, are
    # never freed one by one: its process ends without that (exit_without_teardown).
    code = (
        "import atexit, gc, sys; "
        "atexit.register(lambda: print('collector enabled:', gc.isenabled(), file=sys.stderr)); "
        "from amidsl.cli.main import main; main(sys.argv[1:])"
    )
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"collector enabled: {collector}" in run.stderr


def test_a_failed_upload_simulated_with_on_error_cleanup_all_removes_the_partial_bundle(tmp_path):
    run = amidsl("--payload-mb", "40", "--fault", "fail-part=2", "--on-error", "cleanup-all", temp=tmp_path)
    assert run.returncode == 1
    assert "The bundle was removed from S3" in run.stderr
    assert "--on-error cleanup-all" not in run.stderr  # no advice to use what was used


def test_an_unknown_on_error_policy_is_a_usage_error():
    run = amidsl("--on-error", "keep")
    assert run.returncode == 2 and "--on-error 'keep': choose cleanup, cleanup-all, abort" in run.stderr


def test_with_json_the_document_is_alone_on_standard_output_and_progress_on_standard_error(tmp_path):
    run = amidsl("--json", temp=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["schema"] == "amidsl.simulate/2"
    assert "phase ami-register" in run.stderr
    quiet = amidsl("--json", "--quiet", temp=tmp_path)
    assert "phase ami-register" not in quiet.stderr
