"""Ctrl-C on a real sshd node: pressed while ec2-bundle-vol runs, the build still takes the credentials
(a dotfile key included) off the node and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from amidsl.live.build import build_on_host
from amidsl.live.settings import resolve_live
from amidsl.run.runner import BuildInterrupted
from tests.live.node_settings import assert_no_secret, build_settings, ctrl_c_build, secret_values


def test_ctrl_c_while_the_volume_is_bundled_removes_the_credentials(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"]["private_key_path"] = f"{config['ami']['credential_dir']}/.pk"
    node.forget_records()

    def press_ctrl_c_in_the_bundle(line: str) -> None:
        if line.startswith("==> [ami-bundle 6]"):
            raise KeyboardInterrupt

    with pytest.raises(BuildInterrupted) as caught:
        build_on_host(
            "127.0.0.1",
            config["ami"],
            live=resolve_live(config["live"]),
            phases=["install", "configure", "ami-bundle", "ami-upload"],
            progress=press_ctrl_c_in_the_bundle,
        )
    message = str(caught.value)
    assert message.startswith(
        "phase ami-bundle, action 6 (bundle the volume with ec2-bundle-vol) was interrupted (Ctrl-C)"
    )
    assert "The credentials were removed from the node" in message
    credential_dir = Path(config["ami"]["credential_dir"])
    assert credential_dir.is_dir() and list(credential_dir.iterdir()) == []
    assert not list((node.root / "tmp").glob("amidsl.*"))  # no staged copy of the key either
    assert_no_secret([message], secret_values(config, credentials))


def test_ctrl_c_to_amidsl_build_exits_130_with_a_message_and_no_traceback(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    status, stderr = ctrl_c_build(config, tmp_path, lambda line: line.startswith("==> [ami-bundle 6]"))
    assert status == 130, stderr
    assert stderr.startswith("build interrupted: phase ami-")
    assert "was interrupted (Ctrl-C)" in stderr and "The credentials were removed" in stderr
    assert "Traceback" not in stderr
    assert list(Path(config["ami"]["credential_dir"]).iterdir()) == []
