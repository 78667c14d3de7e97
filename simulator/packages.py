"""What a node's packages put on its PATH, and executable files that run a command model.

The lowest part of the simulator: FakeNode looks commands up here; the models live in
simulator.programs and simulator.fake_ami_tools, the registry of them in simulator.template.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.node import FakeNode, Program

# Packages each package manager knows, and the commands they provide.
PACKAGE_COMMANDS: dict[str, tuple[str, ...]] = {
    "apt": ("apt-get", "apt-cache"),
    "util-linux": ("losetup", "mount"),
    "kmod": ("modprobe",),
    "dnf": ("dnf",),
    "yum": ("yum",),
    "ca-certificates": (),
    "curl": ("curl",),
    "unzip": ("unzip",),
    "rsync": ("rsync",),
    "git": ("git",),
    "gcc": ("gcc", "cc"),
    "make": ("make",),
    "ruby": ("ruby",),
    "python3": ("python3",),
    "e2fsprogs": ("mke2fs",),
}
MODEL_MARKER = b"amidsl-simulator-model: "


def provided_commands(packages: Iterable[str]) -> set[str]:
    """The commands a set of installed packages puts on PATH."""
    return {command for package in packages for command in PACKAGE_COMMANDS.get(package, ())}


def model_script(model: str, body: str = "") -> bytes:
    """An executable file whose behaviour on a FakeNode is the named model."""
    return f"#!/bin/bash\n# {MODEL_MARKER.decode()}{model}\n{body}".encode()


def program_for_file(node: FakeNode, path: str) -> Program | None:
    """The model an executable node file runs, or None (missing, not executable, no model)."""
    if not node.exists(path) or node.is_dir(path) or not node.mode(path) & 0o111:
        return None
    head = node.read_bytes(path)[:300]
    marker = head.find(MODEL_MARKER)
    if marker < 0:
        return None
    name = head[marker + len(MODEL_MARKER) :].split(b"\n", 1)[0].decode().strip()
    return node.programs.get(name)
