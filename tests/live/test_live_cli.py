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


def test_what_launching_still_needs_is_said_of_every_layered_file(tmp_path, raw_settings):
    base = config_file(tmp_path, raw_settings, {})
    top = str(write_toml(tmp_path / "ci.toml", {"live": {"instance_type": "c3.large"}}))
    run = amidsl("build", "--config", base, "--config", top, "--launch")
    assert run.returncode == 2 and "live.image_id: is needed to launch a node" in run.stderr
    assert f"{base} + {top}" in run.stderr


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


def test_build_json_is_the_only_output_on_stdout_and_the_log_has_every_line_with_its_time(
    node, fake_tools, aws_endpoint, bucket, credentials, ec2_certificate_file, tmp_path
):
    import hashlib
    import json
    import re
    import secrets

    from amidsl.node import program_source
    from tests.live.node_settings import secret_values

    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"] |= {
        "bundler": "native",
        "volume": str(node.volume),
        "virtualization_type": "paravirtual",  # the scratch volume has no kernel or GRUB
        "ec2_certificate_source": {"local_file": str(ec2_certificate_file)},
        "image_name": f"amidsl json {secrets.token_hex(4)}",
    }
    path = write_toml(tmp_path / "build.toml", config)
    log, result = tmp_path / "build.log", tmp_path / "result.json"
    run = amidsl("build", "-c", str(path), "--json", "--result", str(result), "--log", str(log), "-v")
    assert run.returncode == 0, run.stderr

    document = json.loads(run.stdout)  # standard output is the document alone
    assert json.loads(result.read_text()) == document
    ami = config["ami"]
    assert document["schema"] == "amidsl.build/2" and document["error"] is None
    assert document["config"] == [str(path)] and document["config_from"] == "--config"
    assert document["image_id"].startswith("ami-") and document["images"] == {
        "us-east-1": document["image_id"]
    }
    assert document["image_name"] == ami["image_name"]
    assert document["bundle"] == f"s3://{ami['s3_bucket']}/{ami['s3_path']}/image.manifest.xml"
    assert [p["filename"] for p in document["parts"]] == ["image.part.0"]
    timings = document["timings"]  # every phase that ran, in seconds
    assert {"install", "ami-bundle", "ami-upload", "ami-register", "cleanup"} <= set(timings)
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in timings.values())
    assert document["node"] == f"root@127.0.0.1:{node.port}"
    assert document["settings_digest"].startswith("sha256:") and document["amidsl_version"]
    # The same facts in the same fields as `simulate --json`.
    simulated = json.loads(amidsl("simulate", "--json").stdout)
    assert set(document) - {"node"} <= set(simulated)

    # Progress went to standard error: each action, the node program as its digest, results in words.
    source = program_source()
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert "==> [ami-bundle 3] image the volume and bundle it into parts on the node: ok" in run.stderr
    assert f"bytes, SHA-256 {digest}; `amidsl script` shows the text)" in run.stderr
    assert "def command_bundle" not in run.stderr
    assert not [line for line in run.stderr.splitlines() if line.strip().startswith("{")]
    assert "    bundled a 16.8 MB image into 1 part" in run.stderr and "    uploaded 1 part(s)" in run.stderr
    assert f"registered {document['image_id']} ({ami['image_name']}) from {document['bundle']}" in run.stderr
    assert len(run.stderr.splitlines()) < 150

    # The log: every line the terminal got, and the commands, each after its time; no secret anywhere.
    logged = log.read_text().splitlines()
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ")
    assert logged and all(stamp.match(line) for line in logged)
    assert "==> [install 2] write the amidsl node program (its full source)" in log.read_text()
    assert f"SHA-256 {digest}" in log.read_text() and "def command_bundle" not in log.read_text()
    for text in (run.stdout, run.stderr, log.read_text(), result.read_text()):
        for secret in secret_values(config, credentials):
            assert secret not in text
        assert "Signature" not in text


def test_build_json_says_the_error_when_the_build_fails(
    tmp_path, node, fake_tools, aws_endpoint, credentials
):
    import json

    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"]["s3_bucket"] = "amidsl-no-such-bucket"
    path = write_toml(tmp_path / "build.toml", config)
    result = tmp_path / "result.json"
    run = amidsl("build", "-c", str(path), "--json", "--result", str(result))
    assert run.returncode == 2 and "Traceback" not in run.stderr  # found by the AWS checks
    document = json.loads(run.stdout)
    assert document == json.loads(result.read_text())
    assert "the bucket 'amidsl-no-such-bucket' does not exist" in document["error"]
    assert document["image_id"] is None and document["node"] is None
    assert document["error"] in run.stderr


def test_build_json_names_every_settings_file_in_layering_order_and_where_they_came_from(
    tmp_path, raw_settings, aws_endpoint
):
    import json
    import os
    import secrets

    keys = {"access_key": "AKIAAMIDSLTESTKEY123", "secret_key": "sk/" + secrets.token_urlsafe(30)}
    base = write_toml(
        tmp_path / "base.toml",
        {"ami": raw_settings | keys, "live": {"host": "127.0.0.1", "endpoint_url": aws_endpoint}},
    )
    bucket = f"amidsl-no-bucket-{secrets.token_hex(4)}"  # the AWS checks stop the build: no node needed
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"s3_bucket": bucket}})
    result = tmp_path / "result.json"
    run = amidsl("build", "-c", str(base), "-c", str(ci), "--json", "--result", str(result))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    document = json.loads(run.stdout)
    assert document == json.loads(result.read_text())
    assert (
        document["schema"] == "amidsl.build/2"
        and f"the bucket '{bucket}' does not exist" in document["error"]
    )
    assert document["config"] == [str(base), str(ci)] and document["config_from"] == "--config"
    from_environment = subprocess.run(
        [sys.executable, "-m", "amidsl", "build", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"AMIDSL_CONFIG": str(base)},
    )
    document = json.loads(from_environment.stdout)
    assert document["config"] == [str(base)] and document["config_from"] == "$AMIDSL_CONFIG"


def test_build_refuses_a_log_or_result_file_it_cannot_write_before_any_network_call(tmp_path, raw_settings):
    path = config_file(tmp_path, raw_settings, {"host": "node.invalid"})
    for flag in ("--log", "--result"):
        run = amidsl("build", "--config", path, flag, str(tmp_path / "no" / "such" / "dir" / "f"))
        assert run.returncode == 2 and f"{flag} {tmp_path}/no/such/dir/f: cannot write" in run.stderr
