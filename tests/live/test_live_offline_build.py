"""The live test body, offline: a real sshd on 127.0.0.1 is the node and moto's server is AWS.

Everything but the ami-tools themselves is real: SSH, sudo, SFTP, unzip, the scripts under bash, S3 over
HTTP, RegisterImage and DescribeImages. The tools are stand-ins over amidsl's bundle code (see conftest).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from amidsl.live.build import build_on_host
from amidsl.live.settings import resolve_live
from amidsl.model.plan import build_plan
from amidsl.render.shell import render_script
from amidsl.run.runner import BuildError
from live_tests.body import live_test_group
from tests.live.node_settings import (
    ACCOUNT,
    BUCKET,
    NODE_PHASES,
    assert_no_secret,
    aws_client,
    build_over_ssh,
    build_settings,
    download_and_verify,
    no_credentials_in,
    node_has_no_credentials,
    secret_values,
    write_toml,
)


@pytest.mark.parametrize("login", ["root", "sudo-user"])
def test_live_test_body_builds_registers_and_finds_the_image(
    login, node, sudo_user_or_root, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    user = sudo_user_or_root(login)
    config = build_settings(tmp_path, node, fake_tools, credentials, user, aws_endpoint)
    group = live_test_group(config["ami"])
    node.forget_records()
    planted = node.volume / "root/.ssh/id_ed25519"  # a builder's key, which image hygiene leaves out
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("a builder's private key\n")
    try:
        recorded = build_over_ssh(config, spec=group)
    finally:
        shutil.rmtree(node.volume / "root")
    result, progress = recorded.result, recorded.progress
    settings = result.settings

    # The build ran every phase and the test phase found exactly one image with the new id.
    assert result.phases == [*NODE_PHASES[:4], "ami-register", "cleanup", "test"]
    assert result.image_id and result.image_id.startswith("ami-")
    images = aws_client("ec2", aws_endpoint).describe_images(ImageIds=[result.image_id])["Images"]
    assert [(i["ImageId"], i["Name"]) for i in images] == [(result.image_id, settings.image_name)]

    # The bundle in the server's S3 verifies against the user's certificate.
    names, manifest = download_and_verify(aws_endpoint, settings, tmp_path)
    prefix = f"{settings.s3_path}/"
    assert names == sorted([f"{prefix}image.manifest.xml", *(prefix + p.filename for p in manifest.parts)])
    assert manifest.user == ACCOUNT

    # What the node ran, recorded on the node: exactly `amidsl script --phase P` for each node phase.
    expected = [render_script(build_plan(group, config["ami"], phases=[p])) for p in NODE_PHASES]
    assert node.scripts_run() == expected

    # The signing key reached ec2-bundle-vol root-only; no credentials are left on the node.
    bundle_vol = json.loads((node.records / "bundle-vol.json").read_text())
    assert (bundle_vol["key_mode"], bundle_vol["key_uid"]) == (0o600, 0)
    # The node found what image hygiene leaves out and handed it to ec2-bundle-vol's -e.
    excluded = bundle_vol["argv"][bundle_vol["argv"].index("-e") + 1].split(",")
    assert "/root/.ssh/id_ed25519" in excluded
    assert "amidsl: leaving out /root/.ssh/id_ed25519 (image hygiene, exclude_patterns)" in "\n".join(
        progress
    )
    assert (node.records / "apt-get.log").read_text().startswith("update -q\ninstall -y -q ca-certificates")
    node_has_no_credentials(node, settings, credentials.key_pem)

    # No secret on any command line (as sent, and as the node's bash saw them), in progress or records.
    commands = recorded.commands
    assert node.ssh_command_lines() == commands  # recorded on the node's side too
    assert commands and all(c.startswith(("mktemp", "rm -rf", "bash -c", "sudo -n")) for c in commands)
    assert any(c.startswith("sudo -n -- bash -c") for c in commands) == (login == "sudo-user")
    transcript = [f"{r.command}\n{r.output}" for r in result.transcript]
    assert_no_secret(
        [*node.ssh_command_lines(), *node.bash_command_lines(), *progress, *transcript, node.log.read_text()],
        secret_values(config, credentials),
    )
    assert "==> [ami-bundle 6] bundle the volume with ec2-bundle-vol" in progress
    assert any(line.startswith("    [ami-upload 1] Uploaded") for line in progress)


def amidsl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amidsl", *args], capture_output=True, text=True, timeout=120
    )


def test_amidsl_build_command_runs_exactly_what_amidsl_script_prints(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    path = write_toml(tmp_path / "build.toml", config)
    node.forget_records()

    checked = amidsl("validate", "--live", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert f"AWS OK: bucket {BUCKET} exists in us-east-1" in checked.stdout

    run = amidsl("build", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "==> phase install" in lines and "==> [install 1] install the packages the ami-tools need" in lines
    # (the sentence simulate says too)
    assert lines[-1].startswith("registered ami-") and lines[-1].endswith("/image.manifest.xml")

    scripts = [amidsl("script", "--config", str(path), "--phase", p).stdout for p in NODE_PHASES]
    assert node.scripts_run() == scripts
    assert node.ssh_command_lines()[0].startswith("mktemp -d")
    assert_no_secret(
        [run.stdout, run.stderr, *node.ssh_command_lines(), *node.bash_command_lines()],
        secret_values(config, credentials),
    )

    # The name is taken now: validate --live says so before any node work.
    again = amidsl("validate", "--live", "--config", str(path))
    assert (
        again.returncode == 2
        and "image_name: " in again.stderr
        and "is already the name of ami-" in again.stderr
    )


def test_a_failing_upload_names_the_action_and_removes_the_credentials(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"]["s3_bucket"] = "amidsl-no-such-bucket"
    node.forget_records()
    with pytest.raises(BuildError) as caught:
        build_on_host(
            "127.0.0.1",
            config["ami"],
            live=resolve_live(config["live"]),
            phases=["install", "configure", "ami-bundle", "ami-upload"],
        )
    error = caught.value
    assert (error.phase, error.index, error.status) == ("ami-upload", 1, 1)
    assert "NoSuchBucket" in str(error) and "credentials were removed" in str(error)
    assert no_credentials_in(config["ami"]["credential_dir"])
    assert_no_secret([str(error)], secret_values(config, credentials))
