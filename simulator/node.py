"""FakeNode: a Linux node whose filesystem is a real temporary directory.

Owners are tracked by the node (the simulator need not run as root); modes are real file modes. The
node has an OS family with its package manager, a package database, users, an environment and a
registry of command models (see `simulator.programs`). A command the node lacks fails as bash does,
with exit status 127.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amidsl.run.progress import Progress
from simulator.packages import program_for_file, provided_commands

# OS family -> the package holding its package manager.
OS_FAMILIES = {"debian": "apt", "rhel": "dnf", "amazon": "yum"}
# Every stock cloud image has python3 and e2fsprogs (a fault may take them away).
BASE_PACKAGES = frozenset(
    {"bash", "coreutils", "util-linux", "kmod", "ca-certificates", "python3", "e2fsprogs"}
)
# Commands that come with the packages every node has.
BASE_COMMANDS = frozenset(
    [
        "install",
        "mkdir",
        "rm",
        "rmdir",
        "find",
        "mv",
        "chown",
        "chmod",
        "ln",
        "printf",
        "cat",
        "true",
        "false",
        "runuser",
        "env",
        "bash",
        "sh",
        "ls",
    ]
)


@dataclass(frozen=True)
class CommandResult:
    """What a command did: exit status and combined output."""

    status: int
    output: str = ""


class NodeInterrupted(Exception):
    """The connection to the node dropped (an injected fault); the command's fate is unknown."""


@dataclass
class RunContext:
    """Everything a command model sees: the node, its argv, environment, cwd and user."""

    node: FakeNode
    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: str


Program = Callable[[RunContext], CommandResult]


@dataclass
class NodeFaults:
    """Faults injected into a node: a full disk under a directory, a dropped connection, Ctrl-C."""

    disk_full_under: str | None = None
    interrupt_at: tuple[str, int] | None = None  # (phase, action index)
    ctrl_c_at: tuple[str, int] | None = None  # (phase, action index) during which the user hits Ctrl-C
    ctrl_c_program: str | None = None  # the node program's command (bundle, upload) that Ctrl-C stops
    drop_program: str | None = None  # the streaming node program command (blocks) whose connection drops
    undeletable: str | None = None  # a path rm and find fail to remove (e.g. an immutable file)


@dataclass
class FakeNode:
    """A simulated Linux node rooted in a real temporary directory."""

    root: Path
    os_family: str = "debian"
    admin_user: str = "admin"
    on_ec2: bool = True
    hostname: str = "node-1"
    packages: set[str] = field(default_factory=set)
    users: dict[str, int] = field(default_factory=dict)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    programs: dict[str, Program] = field(default_factory=dict)
    network: dict[str, bytes] = field(default_factory=dict)
    faults: NodeFaults = field(default_factory=NodeFaults)
    history: list[list[str]] = field(default_factory=list)
    running: bool = True
    region: Any = None  # the FakeRegion the node's AWS calls reach (ec2-upload-bundle)
    last_bundle_report: Any = None  # what the last ec2-bundle-vol left out of the image, and why
    # What the node program's image hygiene did: per item, and how instances get host and login keys.
    last_hygiene: dict = field(default_factory=dict)
    progress: Progress = field(
        default_factory=Progress
    )  # commands (verbose) and byte transfers, as the user asked
    # What the ec2-ami-tools models look at (simulator.fake_ami_tools). The defaults are today's usual node:
    # a Nitro instance (NVMe root) whose instance metadata requires IMDSv2 tokens.
    root_device: str = "/dev/nvme0n1p1"
    root_filesystem: tuple[str, str, str] = (
        "ext4",
        "cloudimg-rootfs",
        "5b3c1b9e-0d6f-4c1e-9a51-3f1e0c2d7a40",
    )
    mounts: dict[str, str] = field(default_factory=lambda: {"/run": "tmpfs"})  # mount point -> type
    imdsv2_required: bool = True
    instance_profile: tuple[str, str, str] | None = None  # (key id, secret, token) from instance metadata
    loop_devices: bool = True
    distribution_ruby: str | None = None  # the Ruby version the OS packages; None: the family's usual one
    rsync_partial_transfer: bool = False  # ec2-bundle-vol's rsync cannot copy some file (exit 23)
    # GRUB 2 for BIOS (simulator.grub): "this machine's" (a copy of its files), "stand-in", or None.
    grub: str | None = None
    # package -> the version its programs report, where it is not that of the simulator's machine
    # (python3: the interpreter; e2fsprogs: mke2fs).
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.os_family not in OS_FAMILIES:
            raise ValueError(f"os_family must be one of {', '.join(OS_FAMILIES)}")
        self.packages |= BASE_PACKAGES | {OS_FAMILIES[self.os_family]}
        self.users = self.users or {"root": 0, self.admin_user: 1000}
        self.env = self.env or {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
        }

    # -- the filesystem ------------------------------------------------------------------------

    def host_path(self, path: str) -> Path:
        """Where a node path lives on the machine running the simulator."""
        if not path.startswith("/"):
            raise ValueError(f"node paths are absolute, got {path!r}")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"node path {path!r} climbs with '..'")
        return self.root.joinpath(*parts) if parts else self.root

    def node_path(self, host: Path) -> str:
        """The node path of a file under the node's root."""
        relative = host.relative_to(self.root).as_posix()
        return "/" if relative == "." else f"/{relative}"

    def filesystem_type(self, path: str) -> str:
        """The type of the filesystem a path is on: its nearest mount point's, else the root's."""
        points = [p for p in self.mounts if path == p or path.startswith(p.rstrip("/") + "/")]
        return self.mounts[max(points, key=len)] if points else self.root_filesystem[0]

    def find_matching(self, root: str, patterns: tuple[str, ...], fs_types: tuple[str, ...]) -> list[str]:
        """What `find ROOT \\( ! -fstype T... \\) -prune -o \\( -path P... \\) -print -prune` prints."""
        found: list[str] = []
        pending = [root]
        while pending:
            path = pending.pop()
            if self.filesystem_type(path) not in fs_types:
                continue
            if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
                found.append(path)
                continue
            host = self.host_path(path)
            if host.is_dir() and not host.is_symlink():
                pending += [f"{path.rstrip('/')}/{name}" for name in os.listdir(host)]
        return found

    def exists(self, path: str) -> bool:
        """Whether the path exists (a dangling link counts, as for `[ -e ]` it would not)."""
        return self.host_path(path).exists()

    def is_dir(self, path: str) -> bool:
        """Whether the path is a directory."""
        return self.host_path(path).is_dir()

    def read_bytes(self, path: str) -> bytes:
        """A file's content."""
        return self.host_path(path).read_bytes()

    def write_bytes(
        self, path: str, data: bytes, mode: int = 0o644, owner: tuple[str, str] = ("root", "root")
    ) -> None:
        """Create or replace a file with an owner and mode, checking the disk-full fault."""
        self.check_space(path, len(data))
        target = self.host_path(path)
        target.write_bytes(data)
        target.chmod(mode)
        self.set_owner(path, owner)

    def make_dirs(self, path: str, mode: int = 0o755, owner: tuple[str, str] = ("root", "root")) -> None:
        """Create a directory and its missing parents."""
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += f"/{part}"
            target = self.host_path(current)
            if not target.exists():
                target.mkdir()
                target.chmod(mode)
                self.set_owner(current, owner)

    def remove(self, path: str) -> None:
        """Remove a file, link or directory tree and forget its owners."""
        target = self.host_path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        prefix = path.rstrip("/") + "/"
        for known in [p for p in self.owners if p == path or p.startswith(prefix)]:
            del self.owners[known]

    def set_owner(self, path: str, owner: tuple[str, str]) -> None:
        """Record a path's owner; when the simulator runs as root the file really gets it, so images
        built from the node carry the node's owners."""
        self.owners[path] = owner
        if os.geteuid() == 0:
            os.lchown(self.host_path(path), self.users.get(owner[0], 0), self.users.get(owner[1], 0))

    def owner(self, path: str) -> tuple[str, str]:
        """(user, group) owning a path; files the simulator did not create belong to root."""
        return self.owners.get(path, ("root", "root"))

    def mode(self, path: str) -> int:
        """A path's permission bits."""
        return stat.S_IMODE(self.host_path(path).lstat().st_mode)

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Node paths in `directory` matching a shell pattern, sorted as bash sorts them."""
        folder = self.host_path(directory)
        if not folder.is_dir():
            return []
        names = sorted(
            n for n in os.listdir(folder) if fnmatch.fnmatchcase(n, pattern) and not n.startswith(".")
        )
        return [f"{directory.rstrip('/')}/{name}" for name in names]

    def check_space(self, path: str, size: int) -> None:
        """Raise OSError(ENOSPC) for writes under a directory whose disk is full."""
        full = self.faults.disk_full_under
        if full and size > 0 and (path == full or path.startswith(full.rstrip("/") + "/")):
            raise OSError(28, "No space left on device", path)

    # -- commands ------------------------------------------------------------------------------

    def has_command(self, name: str, path_env: str | None = None) -> bool:
        """Whether `command -v name` would find it on this node."""
        return self.resolve_command(name, path_env) is not None

    def resolve_command(self, name: str, path_env: str | None = None) -> Program | None:
        """The command model `name` runs: a file with a model marker, or an installed program."""
        if "/" in name:
            return program_for_file(self, name)
        for folder in (path_env or self.env["PATH"]).split(":"):
            candidate = f"{folder.rstrip('/')}/{name}"
            if folder and self.host_path(folder).is_dir() and self.exists(candidate):
                model = program_for_file(self, candidate)
                if model is not None:
                    return model
        if name in BASE_COMMANDS or name in provided_commands(self.packages):
            return self.programs.get(name)
        return None

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, cwd: str = "/", user: str = "root"
    ) -> CommandResult:
        """Run a command as bash would: unknown commands exit 127, missing files 127 or 126."""
        if not self.running:
            raise NodeInterrupted(f"node {self.hostname} is not running")
        full_env = {**self.env, **(env or {})}
        self.history.append(list(argv))
        name = argv[0]
        program = self.resolve_command(name, full_env.get("PATH"))
        if program is None:
            if "/" in name and not self.exists(name):
                return CommandResult(127, f"bash: {name}: No such file or directory\n")
            if "/" in name:
                return CommandResult(126, f"bash: {name}: Permission denied\n")
            return CommandResult(127, f"bash: {name}: command not found\n")
        if not self.is_dir(cwd):
            return CommandResult(1, f"bash: cd: {cwd}: No such file or directory\n")
        try:
            return program(RunContext(self, list(argv), full_env, cwd, user))
        except OSError as err:
            return CommandResult(1, f"{name}: {err.strerror or err}\n")

    def close(self) -> None:
        """Stop the node and delete its filesystem."""
        self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


def new_node_root(parent: Path | None = None) -> Path:
    """A fresh temporary directory to be a node's /."""
    return Path(tempfile.mkdtemp(prefix="amidsl-node-", dir=parent))
