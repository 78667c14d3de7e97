"""Run the node program as the controller does: a python3 subprocess, a JSON request on stdin."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amidsl.node import PROGRAM_PATH

KEY = "00112233445566778899aabbccddeeff"
IV = "f0e1d2c3b4a5968778695a4b3c2d1e0f"


@dataclass(frozen=True)
class NodeRun:
    """How one run of the node program ended."""

    returncode: int
    result: dict | None
    stdout: str
    stderr: str = field(repr=False)


def run_node(
    command: str,
    request: dict,
    *,
    python: str = "python3",
    timeout: float = 300,
    wrapper: tuple[str, ...] = (),
    path: str | None = None,
) -> NodeRun:
    """Run `python amidsl_node.py command` with request on stdin; parse the last stdout line.

    wrapper: a command that runs it (e.g. setpriv ... to take a capability away); path: a PATH.
    """
    done = subprocess.run(
        [*wrapper, python, str(PROGRAM_PATH), command],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ if path is None else {**os.environ, "PATH": path},
    )
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else None
    return NodeRun(done.returncode, result, done.stdout, done.stderr)


def bundle_request(volume: Path, destination: Path, **overrides: object) -> dict:
    """A bundle request as the controller sends it."""
    request = {
        "volume": str(volume),
        "exclude": [],
        "includes": [],
        "filter": True,
        "destination_dir": str(destination),
        "prefix": "image",
        "image_size_mb": None,
        "key": KEY,
        "iv": IV,
        "part_size": 256 * 1024,
        "workers": 0,
    }
    request.update(overrides)
    return request


def make_volume(root: Path) -> Path:
    """A small system-like tree: owners, modes, hard and symbolic links, a sparse file, secrets."""
    for directory in ("etc", "home/alice/.ssh", "proc/1", "mnt/usb", "var/cache/big", "srv"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("node\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n" * 50)
    os.link(root / "etc/passwd", root / "etc/passwd.hardlink")
    (root / "etc/localtime").symlink_to("../srv/zone")
    (root / "srv/zone").write_bytes(os.urandom(50_000))
    with open(root / "srv/sparse", "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(4 * 1024 * 1024)
        f.write(b"middle of a hole")
    (root / "home/alice/notes.txt").write_text("hello\n" * 1000)
    (root / "home/alice/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA test\n")
    (root / "home/alice/.bash_history").write_text("ls\n")
    (root / "home/alice/server.pem").write_text("not really a key\n")
    (root / "proc/1/status").write_text("running\n")
    (root / "mnt/usb/photo.jpg").write_bytes(b"\xff\xd8" * 100)
    (root / "var/cache/big/blob").write_bytes(os.urandom(100_000))
    run = root / "srv/run.sh"
    run.write_text("#!/bin/sh\n")
    if os.geteuid() == 0:
        os.chown(root / "home/alice", 1000, 1000)
        os.chown(root / "home/alice/notes.txt", 1000, 1001)
        os.chown(run, 0, 50)
    run.chmod(0o4750)
    return root


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A scratch volume to image."""
    return make_volume(tmp_path / "volume")


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    """The destination_dir for image and parts."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def work_dir_contents(destination: Path) -> list[str]:
    """What is in the private work directories of the runs bundling into destination_dir."""
    found = []
    for work_dir in destination.glob(".*.work.*"):
        with contextlib.suppress(FileNotFoundError):
            found += os.listdir(work_dir)
    return found


def start_node(command: str, request: dict) -> subprocess.Popen[bytes]:
    """Start the node program in the background with its request already sent."""
    process = subprocess.Popen(
        ["python3", str(PROGRAM_PATH), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(request).encode())
    process.stdin.close()
    process.stdin = None  # sent; communicate() must not touch it again
    return process
