"""The `amidsl` command: plan, script and validate, and how bad input is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from amidsl.example import example_config_path
from tests.live.node_settings import write_toml


def amidsl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amidsl", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command():
    run = amidsl("--help")
    assert run.returncode == 0
    for command in (
        "plan",
        "script",
        "validate",
        "simulate",
        "build",
        "bundle-image",
        "verify-bundle",
        "unbundle",
        "image-ls",
    ):
        assert f"\n  {command} " in run.stdout


def test_plan_on_the_built_in_example():
    run = amidsl("plan")
    assert run.returncode == 0, run.stderr
    assert "image 'amidsl-example-ami'" in run.stdout and "phase cleanup" in run.stdout


def test_plan_json_parses_and_honours_phases():
    run = amidsl("plan", "--format", "json", "--phase", "ami-upload", "--phase", "ami-bundle")
    data = json.loads(run.stdout)
    assert [p["name"] for p in data["phases"]] == ["ami-bundle", "ami-upload"]


def test_script_for_the_example_file_is_identical_across_runs(tmp_path):
    first = amidsl("script", "--config", str(example_config_path()))
    second = amidsl("script", "--config", str(example_config_path()))
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith("#!/usr/bin/env bash\n")


def test_script_to_a_file(tmp_path):
    target = tmp_path / "build.sh"
    run = amidsl("script", "-o", str(target), "--phase", "cleanup")
    assert run.returncode == 0 and run.stdout == f"wrote {target}\n"
    assert "phase_cleanup()" in target.read_text() and "phase_install()" not in target.read_text()
    assert target.stat().st_mode & 0o111


def test_validate_good_settings(tmp_path, raw_settings):
    run = amidsl("validate", "--config", str(write_toml(tmp_path / "ami.toml", {"ami": raw_settings})))
    assert run.returncode == 0
    assert run.stdout.startswith("settings OK: image 'web-server-2026-11' (x86_64) in eu-west-1")


def test_bad_config_lists_every_problem_and_exits_2_without_traceback(tmp_path, raw_settings):
    raw = raw_settings | {
        "s3_bucket": "Bad_Bucket",
        "user_id": "AKIAEXAMPLEEXAMPLE12",
        "secret_key": "hush-hush",
    }
    config = str(write_toml(tmp_path / "ami.toml", {"ami": raw}))
    for command in ("plan", "script", "validate"):
        run = amidsl(command, "--config", config)
        assert run.returncode == 2
        assert "Traceback" not in run.stderr
        assert "s3_bucket: 'Bad_Bucket' is not a valid S3 bucket name" in run.stderr
        assert "user_id: 'AKIAEXAMPLEEXAMPLE12' is an access key id, not an account id" in run.stderr
        assert "secret_key: is missing" not in run.stderr  # access_key is missing instead
        assert "hush-hush" not in run.stderr + run.stdout


def test_missing_config_file(tmp_path):
    run = amidsl("plan", "--config", str(tmp_path / "nope.toml"))
    assert run.returncode == 2 and "does not exist" in run.stderr and "Traceback" not in run.stderr


def test_unknown_phase_and_format(tmp_path):
    run = amidsl("plan", "--phase", "bundle")
    assert run.returncode == 2 and "--phase: 'bundle' is not a phase of 'ami'" in run.stderr
    run = amidsl("plan", "--format", "yaml")
    assert run.returncode == 2 and "choose text or json" in run.stderr


def test_invoke_tasks_file_exposes_the_same_commands():
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "invoke", "--list"], capture_output=True, text=True, cwd=repo)
    assert run.returncode == 0, run.stderr
    for command in ("plan", "script", "validate"):
        assert command in run.stdout


# -- amidsl simulate ------------------------------------------------------------------------------


def test_simulate_the_built_in_example_builds_natively_by_default():
    run = amidsl("simulate")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("amidsl simulate: spec 'ami': image 'amidsl-example-ami'")
    assert "  [ami-bundle 3] image the volume and bundle it into parts on the node: ok [node]" in lines
    assert "ec2-bundle-vol" not in run.stdout
    registered = next(line for line in lines if line.startswith("registered ami-"))
    assert "s3://amidsl-example-bundles/images/example/image.manifest.xml" in registered
    assert any(line.startswith("  filter pattern: /etc/ssl/private/node.pem") for line in lines)
    assert any(line.startswith("  caller exclusion: /opt/ami-tools") for line in lines)  # the node program


def test_simulate_the_built_in_example_with_the_ami_tools():
    run = amidsl("simulate", "--bundler", "ami-tools")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "  [ami-bundle 2] bundle the volume with ec2-bundle-vol: ok" in lines
    registered = next(line for line in lines if line.startswith("registered ami-"))
    assert "s3://amidsl-example-bundles/images/example/image.manifest.xml" in registered
    assert any(line.startswith("  filter pattern: /etc/ssl/private/node.pem (*.pem)") for line in lines)
    assert any(line.startswith("  caller exclusion: /opt/ami-tools") for line in lines)


def test_simulate_json_with_a_fault_fails_naming_phase_and_action():
    run = amidsl("simulate", "--bundler", "ami-tools", "--json", "--fault", "disk-full=/tmp")
    assert run.returncode == 1
    document = json.loads(run.stdout)
    assert document["image_id"] is None
    assert document["error"].startswith("phase ami-bundle, action 2 (bundle the volume with ec2-bundle-vol)")
    assert document["transcript"][-1]["phase"] == "on-error"
    assert "simulated build failed: phase ami-bundle, action 2" in run.stderr


def test_simulate_rejects_an_unknown_fault():
    run = amidsl("simulate", "--fault", "meteor=1")
    assert run.returncode == 2 and "--fault 'meteor=1': not a fault I know" in run.stderr
    assert "Traceback" not in run.stderr


def test_simulate_writes_nothing_outside_temporary_directories_and_removes_those(tmp_path):
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "amidsl", "simulate"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert run.returncode == 0, run.stderr
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []
