"""Ctrl-C during a native build on the real sshd node: the node program is stopped, not left running,
its temporary files go with it, and the message says what is left where."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amidsl.live import node as live_node
from amidsl.live import ssh
from amidsl.live.build import build_on_host
from amidsl.live.node import LiveBackend
from amidsl.live.settings import resolve_live
from amidsl.live.ssh import SshNode
from amidsl.run.runner import BuildError, BuildInterrupted
from tests.live.node_settings import aws_client, build_settings, ctrl_c_build

# The node's mke2fs: builds the image as the real one does, then stays busy as mke2fs on a big volume
# would (exec keeps the pid, which it records, so the test can check it was stopped too).
SLOW_MKE2FS = """#!/bin/bash
case " $* " in
  *" -d "*)
    echo $$ > {records}/mke2fs.pid
    {real} "$@" || exit
    touch {records}/mke2fs.done
    exec sleep 300 ;;
esac
exec {real} "$@"
"""


@pytest.fixture
def slow_mke2fs(node):
    """An mke2fs on the node's PATH that keeps the node program busy once the image exists."""
    real = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    if real is None:
        pytest.skip("needs e2fsprogs")
    wrapper = node.root / "bin" / "mke2fs"
    wrapper.write_text(SLOW_MKE2FS.format(records=node.records, real=real))
    wrapper.chmod(0o755)
    yield
    wrapper.unlink(missing_ok=True)


@pytest.fixture
def native_config(node, fake_tools, aws_endpoint, bucket, credentials, ec2_certificate_file, tmp_path):
    """The settings of a native build of the node's scratch volume, for a login user."""

    def make(login: str = "root") -> dict:
        config = build_settings(tmp_path, node, fake_tools, credentials, login, aws_endpoint)
        config["ami"] |= {
            "bundler": "native",
            "volume": str(node.volume),
            "virtualization_type": "paravirtual",
            "ec2_certificate_source": {"local_file": str(ec2_certificate_file)},
            "image_name": f"amidsl native interrupted {secrets.token_hex(4)}",
        }
        return config

    return make


def processes_running(program: str) -> list[str]:
    """The command lines of this machine's (the node's) processes that run `program`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # ended meanwhile
            if program in cmdline:
                found.append(cmdline)
    return found


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def ended(pid: int, seconds: float = 10) -> bool:
    """Whether the process ends (a killed one's parent may take a moment to reap it)."""
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def image_built(node) -> Callable[[str], bool]:
    """Accepts the line that says mke2fs starts, once (slow_mke2fs) the image is built."""

    def accept(line: str) -> bool:
        if "building a" in line:
            wait_for(node.records / "mke2fs.done")
            return True
        return False

    return accept


def interrupt(config: dict, when: Callable[[str], bool], phases: list[str]) -> str:
    """Run the phases, press Ctrl-C at the first progress line `when` accepts; return the message."""

    def progress(line: str) -> None:
        if when(line):
            raise KeyboardInterrupt

    with pytest.raises(BuildInterrupted) as caught:
        build_on_host(
            "127.0.0.1", config["ami"], live=resolve_live(config["live"]), phases=phases, progress=progress
        )
    return str(caught.value)


@pytest.mark.parametrize("login", ["root", "sudo-user"])
def test_ctrl_c_while_the_node_program_bundles_stops_it_and_removes_its_temporary_files(
    node, slow_mke2fs, login, sudo_user_or_root, native_config
):
    config = native_config(sudo_user_or_root(login))
    destination = Path(config["ami"]["destination_dir"])
    node.forget_records()

    def once_the_image_is_built(line: str) -> bool:
        if not image_built(node)(line):
            return False
        # The program's temporary files are all there, in its private work directory: image, chunks
        # deflated ahead, and the view's mount point (or staging tree).
        [work] = destination.iterdir()
        assert work.name.startswith(".image.work.") and work.stat().st_mode & 0o077 == 0
        names = sorted(p.name[:16] for p in work.iterdir())
        assert names == [".amidsl-staging-", "deflated-ahead", "image"]
        return True

    message = interrupt(config, once_the_image_is_built, ["install", "configure", "ami-bundle"])

    assert message.startswith(
        "phase ami-bundle, action 3 (image the volume and bundle it into parts on the node) was "
        "interrupted (Ctrl-C)"
    )
    program = f"{config['ami']['install_dir']}/amidsl_node.py"
    assert processes_running(program) == []
    assert ended(int((node.records / "mke2fs.pid").read_text()))
    assert list(destination.iterdir()) == []  # no image, no chunks deflated ahead, no staging tree, no part
    assert not Path(config["ami"]["install_dir"]).exists()
    assert "The node program was stopped on the node (pid " in message
    assert "it removed the partial image, staging tree and parts" in message
    assert f"amidsl's node program was removed ({config['ami']['install_dir']})" in message
    assert not list((node.root / "tmp").glob("amidsl.*"))


def test_ctrl_c_while_the_node_program_uploads_stops_it_and_names_the_parts_in_s3(
    node, native_config, aws_endpoint, bucket
):
    config = native_config()
    volume = node.root / f"volume-{secrets.token_hex(4)}"
    (volume / "etc").mkdir(parents=True)
    (volume / "etc" / "hostname").write_text("web-2\n")
    (volume / "random").write_bytes(os.urandom(25 * 1024 * 1024))  # three 10 MiB parts
    config["ami"]["volume"] = str(volume)

    message = interrupt(
        config,
        lambda line: line.strip().startswith("uploaded image.part."),
        ["install", "ami-bundle", "ami-upload"],
    )

    assert message.startswith(
        "phase ami-upload, action 2 (upload the parts to S3 in parallel from the node (presigned URLs)) was "
        "interrupted (Ctrl-C)"
    )
    assert processes_running(f"{config['ami']['install_dir']}/amidsl_node.py") == []
    s3 = aws_client("s3", aws_endpoint)
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=config["ami"]["s3_path"]).get("Contents", [])
    ]
    assert keys, "a part was uploaded before Ctrl-C"
    for key in keys:
        assert f"s3://{bucket}/{key}" in message
    assert "Remove them with: amidsl delete-bundle -b " in message and " --partial " in message
    # The parts stay on the node for a resumed upload, and the message says where.
    destination = config["ami"]["destination_dir"]
    assert f"in {destination}" in message
    assert sorted(os.listdir(destination))[0] == "image.part.0"


def test_a_node_program_that_does_not_stop_is_killed_and_the_next_bundle_removes_its_files(
    node, slow_mke2fs, native_config, monkeypatch
):
    config = native_config()
    destination = Path(config["ami"]["destination_dir"])
    node.forget_records()
    monkeypatch.setattr(ssh, "STOP_SECONDS", 2.0)
    monkeypatch.setattr(live_node, "STOP_SECONDS", 2.0)
    send = LiveBackend._signal_program

    def deaf_to_sigint(self, action, pid, signal):
        return True if signal == "INT" else send(self, action, pid, signal)

    monkeypatch.setattr(LiveBackend, "_signal_program", deaf_to_sigint)

    message = interrupt(config, image_built(node), ["install", "ami-bundle"])

    # The run's private work directory: .<prefix>.work.<pid>-<random>
    [work] = [n for n in os.listdir(destination) if n.startswith(".image.work.")]
    pid = int(work.split(".")[3].split("-")[0])
    assert f"The node program did not stop within 2 s and was killed (pid {pid})" in message
    assert f"its temporary files may remain in {destination}" in message
    assert processes_running(f"{config['ami']['install_dir']}/amidsl_node.py") == []
    assert ended(int((node.records / "mke2fs.pid").read_text()))  # its mke2fs too
    left = sorted(os.listdir(destination))
    assert len(left) == 1  # the work directory: image, chunks deflated ahead, staging tree

    monkeypatch.undo()
    (node.root / "bin" / "mke2fs").unlink()
    progress: list[str] = []
    build_on_host(
        "127.0.0.1",
        config["ami"],
        live=resolve_live(config["live"]),
        phases=["install", "ami-bundle"],
        progress=progress.append,
    )
    for name in left:
        assert f"amidsl-node: removed {destination / name}, left by a run (pid {pid})" in "\n".join(progress)
    assert [n for n in os.listdir(destination) if n.startswith(".")] == []


def test_a_dropped_connection_while_bundling_stops_the_node_program_after_the_reconnect(
    node, slow_mke2fs, native_config
):
    config = native_config()
    destination = Path(config["ami"]["destination_dir"])
    node.forget_records()
    opened: list[SshNode] = []

    def open_node(target):
        opened.append(SshNode(target))
        return opened[-1]

    def drop_once_the_image_is_built(line: str) -> None:
        if image_built(node)(line):
            opened[0]._connected().get_transport().close()  # the link goes away mid-bundle

    with pytest.raises(BuildError) as caught:
        build_on_host(
            "127.0.0.1",
            config["ami"],
            live=resolve_live(config["live"]),
            phases=["install", "ami-bundle"],
            progress=drop_once_the_image_is_built,
            node_factory=open_node,
        )
    assert caught.value.phase == "ami-bundle" and caught.value.status == 255
    assert processes_running(f"{config['ami']['install_dir']}/amidsl_node.py") == []
    assert list(destination.iterdir()) == []  # it removed its image, chunks and staging tree
    assert not Path(config["ami"]["install_dir"]).exists()


def test_ctrl_c_to_amidsl_build_stops_the_node_program_and_exits_130(
    node, slow_mke2fs, native_config, tmp_path
):
    config = native_config()
    node.forget_records()

    status, stderr = ctrl_c_build(config, tmp_path, image_built(node))
    assert status == 130, stderr
    assert stderr.startswith("build interrupted: phase ami-bundle, action 3")
    assert "The node program was stopped on the node (pid " in stderr and "Traceback" not in stderr
    assert processes_running(f"{config['ami']['install_dir']}/amidsl_node.py") == []
    assert list(Path(config["ami"]["destination_dir"]).iterdir()) == []
