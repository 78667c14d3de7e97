"""The node commands each node action runs, as data.

The bash renderer prints these steps and the simulator executes them, so a simulated build runs the very
commands a reviewer reads in the script. Controller-side actions (API calls) have no node steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from amidsl.actions import (
    Action,
    Directory,
    Exec,
    InstallPackages,
    RemoteDirectory,
    RemoteFile,
    Remove,
    StagedFile,
    Value,
)
from amidsl.settings import NODE_STATE_DIR, created_record_name

# amidsl's record, on the node, of the directories it created: the only ones it will remove recursively.
# One marker directory per created directory, named by its path (settings.created_record_name).
CREATED_RECORD = f"{NODE_STATE_DIR}/created"

_GLOB_SAFE = re.compile(r"[A-Za-z0-9._*-]+")
_NAME_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Glob:
    """Files in `directory` matching a shell pattern (left as the pattern when nothing matches)."""

    directory: str
    pattern: str

    def __post_init__(self) -> None:
        if not _GLOB_SAFE.fullmatch(self.pattern):
            raise ValueError(f"unsafe pattern {self.pattern!r}: use letters, digits and . _ - *")


Word = Value | StagedFile | Glob


@dataclass(frozen=True)
class Command:
    """One program run: argv, extra environment, working directory, user, optional stdout file, and
    optional standard input text (a here-document)."""

    argv: tuple[Word, ...]
    env: tuple[tuple[str, Value], ...] = ()
    cwd: str | None = None
    user: str = "root"
    stdout: str | None = None
    stdin: str | None = None

    def __post_init__(self) -> None:
        for name, _ in self.env:
            if not _NAME_SAFE.fullmatch(name):
                raise ValueError(f"bad environment variable name {name!r}")


@dataclass(frozen=True)
class IfMissing:
    """Run `then` only when `path` does not exist (`kind` "d": is not a directory)."""

    path: str
    then: tuple[Step, ...]
    kind: str = "e"


@dataclass(frozen=True)
class IfPresent:
    """Run `then` only when `path` is a directory."""

    path: str
    then: tuple[Step, ...]


CHECK_KINDS = ("absent", "empty", "recorded")


@dataclass(frozen=True)
class Check:
    """Fail with `message` unless `path` is absent, is an empty (or missing) directory, or has a marker
    in amidsl's record of the directories it created (`kind`)."""

    kind: str
    path: str
    message: str

    def __post_init__(self) -> None:
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"unknown check {self.kind!r}")


@dataclass(frozen=True)
class ByPackageManager:
    """Run the branch of the first package manager the node has; fail with `otherwise` if none."""

    branches: tuple[tuple[str, tuple[Step, ...]], ...]
    otherwise: str


Step = Command | IfMissing | IfPresent | Check | ByPackageManager


def node_steps(action: Action) -> tuple[Step, ...]:
    """The steps a node action runs; an unknown (or controller-side) action type is an error."""
    if isinstance(action, InstallPackages):
        apt_env = (("DEBIAN_FRONTEND", "noninteractive"),)
        return (
            ByPackageManager(
                (
                    (
                        "apt-get",
                        (
                            Command(("apt-get", "update", "-q"), env=apt_env),
                            Command(("apt-get", "install", "-y", "-q", *action.apt), env=apt_env),
                        ),
                    ),
                    ("dnf", (Command(("dnf", "install", "-y", "-q", *action.rpm)),)),
                    ("yum", (Command(("yum", "install", "-y", "-q", *action.rpm)),)),
                ),
                otherwise="no apt-get, dnf or yum on this node: install the packages by hand",
            ),
        )
    if isinstance(action, Directory):
        return (
            record_if_created(action.path),
            _install(("-d",), action.mode, action.owner, action.group, "--", action.path),
        )
    if isinstance(action, RemoteFile):
        if action.staged is not None:
            return (_install((), action.mode, action.owner, action.group, "--", action.staged, action.path),)
        assert action.content is not None
        # Create the file with its mode first, so the content never sits in a readable file.
        write = (
            Command(("cat",), stdout=action.path, stdin=action.content)
            if action.verbatim
            else Command(("printf", "%s", action.content), stdout=action.path)
        )
        return (_install((), action.mode, action.owner, action.group, "/dev/null", action.path), write)
    if isinstance(action, RemoteDirectory):
        return _remote_directory(action)
    if isinstance(action, Exec):
        command = Command(action.argv, env=action.env, cwd=action.cwd, user=action.user)
        return (IfMissing(action.creates, (command,)),) if action.creates else (command,)
    if isinstance(action, Remove):
        return removal(action)
    raise TypeError(f"no node commands for the action type {type(action).__name__}")


def created_marker(path: str) -> str:
    """The marker in amidsl's record saying amidsl created `path`."""
    return f"{CREATED_RECORD}/{created_record_name(path)}"


def record_if_created(path: str) -> IfMissing:
    """Note `path` in amidsl's record when it does not exist yet, i.e. when amidsl is about to create it."""
    return IfMissing(path, (_install(("-d",), "0700", "root", "root", "--", created_marker(path)),))


def removal(action: Remove) -> tuple[Step, ...]:
    """The steps of a Remove, each checked afterwards: a directory only if amidsl created it."""
    path = action.path
    if action.matching is not None:
        return (Command(("rm", "-f", "--", Glob(path, action.matching))),)
    if action.contents:
        # find reaches every entry, dotfiles included, which a shell glob would miss.
        return (
            IfPresent(path, (Command(("find", path, "-mindepth", "1", "-delete")),)),
            Check("empty", path, f"files remain in {path} after removing them"),
        )
    steps: list[Step] = []
    if action.recursive:
        steps.append(
            Check(
                "recorded",
                path,
                f"refusing to remove {path}: amidsl did not create {path} (no {created_marker(path)}); "
                "remove it by hand if it is really amidsl's",
            )
        )
    steps += [
        Command(("rm", "-rf" if action.recursive else "-f", "--", path)),
        Check("absent", path, f"{path} still exists after removing it"),
    ]
    if action.recursive:
        # Forget it: should someone create the directory again later, it is theirs, not amidsl's.
        steps.append(Command(("rm", "-rf", "--", created_marker(path))))
    return tuple(steps)


def _install(flags: tuple[str, ...], mode: str, owner: str, group: str, *rest: Word) -> Command:
    return Command(("install", *flags, "-m", mode, "-o", owner, "-g", group, *rest))


def _remote_directory(action: RemoteDirectory) -> tuple[Step, ...]:
    steps: list[Step] = [
        record_if_created(action.path),
        _install(("-d",), "0755", action.owner, action.group, "--", action.path),
    ]
    if action.rename_glob is not None and action.rename_to is not None:
        # A re-run installs the archive's tools afresh, not beside (or under) an earlier copy.
        target = f"{action.path}/{action.rename_to}"
        steps.append(Command(("rm", "-rf", "--", target, Glob(action.path, action.rename_glob))))
    if action.url is not None:
        archive = f"{action.path}/.download.zip"
        steps += [
            Command(("curl", "-fsSL", "--retry", "3", "-o", archive, action.url)),
            Command(("unzip", "-q", "-o", archive, "-d", action.path)),
            Command(("rm", "-f", "--", archive)),
        ]
    else:
        assert action.staged is not None
        steps.append(Command(("unzip", "-q", "-o", action.staged, "-d", action.path)))
    if action.rename_glob is not None and action.rename_to is not None:
        target = f"{action.path}/{action.rename_to}"
        rename = Command(("mv", "--", Glob(action.path, action.rename_glob), target))
        steps.append(IfMissing(target, (rename,), kind="d"))
    # Only what was unpacked changes owner: the directory itself may hold other things.
    unpacked = f"{action.path}/{action.rename_to}" if action.rename_to is not None else action.path
    steps.append(Command(("chown", "-R", f"{action.owner}:{action.group}", "--", unpacked)))
    return tuple(steps)
