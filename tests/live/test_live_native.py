"""A native build, offline and live: the real sshd node on 127.0.0.1 and moto's server as AWS.

The node runs amidsl's real node program with the node's own python3 over a scratch volume; the
controller signs, presigns and registers. A recorder on the node (sshd's command log, bash's argv log
and a python3 wrapper that logs its argv and environment) shows what reached the node.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from amidsl.bundle import list_image, unbundle
from amidsl.model.plan import build_plan
from amidsl.strategies import server_spec
from tests.live.node_settings import ACCOUNT, aws_client, build_over_ssh, build_settings, download_and_verify
from tests.serial import host_mounts

PYTHON_RECORDER = """#!/bin/bash
# The test node's python3: records its argv and environment, then runs the node's own python3.
printf '%s\\n' "$*" >> {records}/python3-argv.log
env >> {records}/python3-env.log
exec /usr/bin/python3 "$@"
"""


@pytest.fixture
def python_recorder(node):
    """A python3 on the node's PATH that records argv and environment (removed after the test)."""
    wrapper = node.root / "bin" / "python3"
    wrapper.write_text(PYTHON_RECORDER.format(records=node.records))
    wrapper.chmod(0o755)
    yield
    wrapper.unlink()


@host_mounts
@pytest.mark.parametrize("login", ["root", "sudo-user"])
def test_a_native_build_over_ssh_registers_a_bundle_that_verifies_and_unbundles(
    node,
    python_recorder,
    login,
    sudo_user_or_root,
    fake_tools,
    aws_endpoint,
    bucket,
    credentials,
    ec2_certificate_file,
    tmp_path,
):
    login_user = sudo_user_or_root(login)
    config = build_settings(tmp_path, node, fake_tools, credentials, login_user, aws_endpoint)
    config["ami"] |= {
        "bundler": "native",
        "session_token": "tok/" + secrets.token_urlsafe(40),  # stays on the controller
        "volume": str(node.volume),
        "virtualization_type": "paravirtual",  # the scratch volume has no kernel or GRUB
        "ec2_certificate_source": {"local_file": str(ec2_certificate_file)},
        "image_name": f"amidsl native offline {secrets.token_hex(4)}",
    }
    node.forget_records()
    mounts = Path("/proc/self/mountinfo").read_text()
    recorded = build_over_ssh(config)
    result, progress, commands = recorded.result, recorded.progress, recorded.commands
    # Each action is shown under its number in the plan, also where a phase reaches the node as several
    # scripts (cleanup's node steps come after controller steps), so that what is shown is what runs.
    plan = build_plan(server_spec(config["ami"]))
    planned = [f"[{p.name} {n}] {a.description}" for p in plan.phases for n, a in enumerate(p.actions, 1)]
    shown = [line.split("==> ", 1)[1] for line in progress if line.startswith("==> [")]
    # (controller steps and the node program end their line with how they went)
    assert [line for line in shown if line not in planned and line.rsplit(": ", 1)[0] not in planned] == []
    assert len(shown) == len(planned)
    # The program read the volume through its own bind mounts, which the node never saw.
    assert any("through a private view" in line for line in progress), progress
    assert Path("/proc/self/mountinfo").read_text() == mounts
    settings = result.settings
    assert result.image_id and result.image_id.startswith("ami-")
    images = aws_client("ec2", aws_endpoint).describe_images(ImageIds=[result.image_id])["Images"]
    assert [i["Name"] for i in images] == [settings.image_name]

    # The bundle in S3 verifies against the user's certificate and unbundles to the scratch volume.
    names, manifest = download_and_verify(aws_endpoint, settings, tmp_path)
    assert manifest.user == ACCOUNT and f"{settings.s3_path}/image.manifest.xml" in names
    restored = unbundle(
        tmp_path / "image.manifest.xml",
        credentials.key_pem,
        tmp_path / "restored",
        user_cert_pem=credentials.cert_pem,
    )
    paths = {entry.path for entry in list_image(restored)}
    assert {"/etc/hostname", "/srv/www/index.html"} <= paths

    # The node program ran with its request on stdin: its command lines carry nothing else.
    program = f"{settings.install_dir}/amidsl_node.py"
    sudo = "" if login_user == "root" else "sudo -n -- "
    assert [c for c in commands if "python3" in c] == [
        f"{sudo}python3 -I {program} check",
        f"{sudo}python3 -I {program} bundle",
        f"{sudo}python3 -I {program} upload",
        f"{sudo}python3 -I {program} cleanup",
    ]
    assert node.ssh_command_lines() == commands

    # Nothing secret reached the node: not on disk, not on any argv, not in any environment.
    key_body = [line for line in credentials.key_pem.splitlines() if "PRIVATE KEY" not in line]
    secrets_list = [config["ami"]["secret_key"], config["ami"]["session_token"], *key_body]
    recorded = [
        *node.ssh_command_lines(),
        *node.bash_command_lines(),
        (node.records / "python3-argv.log").read_text(),
        (node.records / "python3-env.log").read_text(),
    ]
    for text in recorded:
        for secret in secrets_list:
            assert secret not in text
        assert "X-Amz-Signature" not in text and "Signature=" not in text  # no presigned URL either
    for path in node.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_text(errors="replace")
            for secret in secrets_list:
                assert secret not in data, path
    for line in progress:
        assert "Signature" not in line and config["ami"]["secret_key"] not in line

    # Cleanup removed the node program and the parts; the volume is as it was.
    assert not Path(settings.install_dir).exists()
    assert not list(Path(settings.destination_dir).glob("image.part.*"))
    assert not list((node.root / "tmp").glob("amidsl.*"))
