"""`amidsl build` and `validate --live`: bad input exits 2, a failed build exits 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.live.node_settings import build_settings, write_toml


def amidsl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amidsl", *args], capture_output=True, text=True, timeout=120
    )


def config_file(tmp_path, raw_settings, live: dict) -> str:
    return str(write_toml(tmp_path / "build.toml", {"ami": raw_settings, "live": live}))


def test_build_is_listed_with_its_options():
    run = amidsl("build", "--help")
    assert run.returncode == 0
    for option in (
        "--config",
        "--host",
        "--group",
        "--launch",
        "--phase",
        "--on-error",
        "--trust-new-host-key",
    ):
        assert option in run.stdout


def test_bad_input_exits_2_with_every_problem(tmp_path, raw_settings):
    path = config_file(tmp_path, raw_settings | {"s3_bucket": "Bad_Bucket"}, {"port": 0, "subnet_id": "x"})
    run = amidsl("build", "--config", path, "--host", "node")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "3 problem(s)" in run.stderr
    for setting in ("s3_bucket: 'Bad_Bucket'", "live.port: 0 is not", "live.subnet_id: 'x' is not valid"):
        assert setting in run.stderr


def test_where_to_build_must_be_said_once(tmp_path, raw_settings):
    path = config_file(tmp_path, raw_settings, {})
    nowhere = amidsl("build", "--config", path)
    assert (
        nowhere.returncode == 2
        and "say where to build: --host NODE, --group GROUP or --launch" in nowhere.stderr
    )
    twice = amidsl("build", "--config", path, "--host", "node", "--launch")
    assert twice.returncode == 2 and "--host and --launch: choose one" in twice.stderr
    launch = amidsl("build", "--config", path, "--launch")
    assert launch.returncode == 2 and "live.image_id: is needed to launch a node" in launch.stderr
    policy = amidsl("build", "--config", path, "--host", "node", "--on-error", "ignore")
    assert (
        policy.returncode == 2 and "--on-error 'ignore': choose cleanup, cleanup-all, abort" in policy.stderr
    )
    example = amidsl("validate", "--live")
    assert (
        example.returncode == 2
        and "--config: live builds and AWS checks need your settings" in example.stderr
    )
    phase = amidsl("build", "--config", path, "--host", "node", "--phase", "bundle")
    assert phase.returncode == 2 and "--phase: 'bundle' is not a phase of 'ami'" in phase.stderr


def test_an_unknown_host_key_fails_the_build_with_exit_1_and_the_fix(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["live"]["known_hosts"] = str(tmp_path / "empty_known_hosts")
    path = write_toml(tmp_path / "build.toml", config)
    run = amidsl("build", "--config", str(path), "--phase", "install")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "build failed: the host key of 127.0.0.1" in run.stderr and "--trust-new-host-key" in run.stderr
    trusted = amidsl("build", "--config", str(path), "--phase", "install", "--trust-new-host-key")
    assert trusted.returncode == 0, trusted.stderr
    assert (tmp_path / "empty_known_hosts").read_text().startswith(f"[127.0.0.1]:{node.port} ssh-ed25519 ")
    assert trusted.stdout.splitlines()[-1] == "phases done: install"


def test_validate_live_exits_2_on_a_bucket_that_refuses_acls_naming_the_fix(
    tmp_path, raw_settings, aws_endpoint
):
    from tests.live.node_settings import ACCOUNT, aws_client

    enforced = "amidsl-acls-disabled"
    s3 = aws_client("s3", aws_endpoint)
    s3.create_bucket(Bucket=enforced)
    s3.put_bucket_ownership_controls(
        Bucket=enforced, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    keys = {"access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    ami = raw_settings | keys | {"bundler": "native", "region": "us-east-1", "user_id": ACCOUNT}
    path = config_file(tmp_path, ami | {"s3_bucket": enforced}, {"endpoint_url": aws_endpoint})
    run = amidsl("validate", "--live", "--config", path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        f"s3_bucket: bucket '{enforced}' has ACLs disabled (Object Ownership BucketOwnerEnforced)"
        in run.stderr
    )
    assert f"put-bucket-ownership-controls --bucket {enforced}" in run.stderr
    assert keys["secret_key"] not in run.stdout + run.stderr
