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
class ByPackageManager:
    """Run the branch of the first package manager the node has; fail with `otherwise` if none."""

    branches: tuple[tuple[str, tuple[Step, ...]], ...]
    otherwise: str


Step = Command | IfMissing | ByPackageManager


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
        return (_install(("-d",), action.mode, action.owner, action.group, "--", action.path),)
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
        if action.matching is not None:
            return (Command(("rm", "-f", "--", Glob(action.path, action.matching))),)
        return (Command(("rm", "-rf" if action.recursive else "-f", "--", action.path)),)
    raise TypeError(f"no node commands for the action type {type(action).__name__}")


def _install(flags: tuple[str, ...], mode: str, owner: str, group: str, *rest: Word) -> Command:
    return Command(("install", *flags, "-m", mode, "-o", owner, "-g", group, *rest))


def _remote_directory(action: RemoteDirectory) -> tuple[Step, ...]:
    steps: list[Step] = [_install(("-d",), "0755", action.owner, action.group, "--", action.path)]
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
    steps.append(Command(("chown", "-R", f"{action.owner}:{action.group}", "--", action.path)))
    return tuple(steps)
