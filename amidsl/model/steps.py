"""The node commands each node action runs, as data, and what an action needs at run time.

The bash renderer prints these steps and the simulator executes them, so a simulated build runs the very
commands a reviewer reads in the script. Controller-side actions (API calls) have no node steps. Both
walk steps with `walk_steps`, one handler per step type (`StepVisitor`): a new step type is added here,
to `Step`, `StepVisitor` and `visit_step`, and every back-end must then handle it before it can run.
`references(action)` is the one answer to "which secrets, staged files and run-time values does this
action need from its runner", for the script's input checks, the live back-end and the simulator.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, Union

from amidsl.model.actions import (
    Action,
    AwsCall,
    Directory,
    EnvSecret,
    Exec,
    ExistingPaths,
    InstallPackages,
    InstallRuby,
    OptionalArg,
    PathsMatching,
    RemoteDirectory,
    RemoteFile,
    Remove,
    RunnerValue,
    RuntimeValue,
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


@dataclass(frozen=True)
class ShellVariable:
    """A variable an earlier step of the same action set (e.g. by CollectExisting)."""

    name: str

    def __post_init__(self) -> None:
        if not _NAME_SAFE.fullmatch(self.name):
            raise ValueError(f"bad variable name {self.name!r}")


Word = Union[Value, StagedFile, Glob, ShellVariable]


@dataclass(frozen=True)
class Command:
    """One program run: argv, extra environment, working directory, user, optional stdout file,
    optional standard input text (a here-document) and optional umask."""

    argv: tuple[Word, ...]
    env: tuple[tuple[str, Value], ...] = ()
    cwd: str | None = None
    user: str = "root"
    stdout: str | None = None
    stdin: str | None = None
    umask: str | None = None  # set for this command only (in a subshell), e.g. "077"

    def __post_init__(self) -> None:
        for name, _ in self.env:
            if not _NAME_SAFE.fullmatch(name):
                raise ValueError(f"bad environment variable name {name!r}")
        if self.umask is not None and not re.fullmatch(r"[0-7]{3}", self.umask):
            raise ValueError(f"bad umask {self.umask!r}: three octal digits, e.g. 077")


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


@dataclass(frozen=True)
class IfSucceeds:
    """Run `then` when every test command succeeds (their output hidden), else `otherwise`."""

    tests: tuple[Command, ...]
    then: tuple[Step, ...]
    otherwise: tuple[Step, ...] = ()


@dataclass(frozen=True)
class CollectExisting:
    """Set `variable` to the paths that exist now, joined by `separator`; say which do not."""

    variable: str
    paths: tuple[str, ...]
    separator: str = ","

    def __post_init__(self) -> None:
        if not _NAME_SAFE.fullmatch(self.variable):
            raise ValueError(f"bad variable name {self.variable!r}")


@dataclass(frozen=True)
class CollectMatching:
    """Add to `variable` (joined by `separator`) the paths `matching` finds now, saying each; stop on a
    path that holds the separator or a new line (the program reading the value would split it)."""

    variable: str
    matching: PathsMatching
    separator: str = ","

    def __post_init__(self) -> None:
        if not _NAME_SAFE.fullmatch(self.variable):
            raise ValueError(f"bad variable name {self.variable!r}")
        if not self.matching.patterns or not self.matching.fs_types:
            raise ValueError("CollectMatching needs patterns and filesystem types")


@dataclass(frozen=True)
class Fail:
    """Stop the action with `message`."""

    message: str


CHECK_KINDS = ("absent", "empty", "recorded")


@dataclass(frozen=True)
class Check:
    """Fail with `message` unless `path` is absent, is an empty (or missing) directory, or has a marker
    in amidsl's record of the directories it created or is absent (`kind`)."""

    kind: str
    path: str
    message: str

    def __post_init__(self) -> None:
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"unknown check {self.kind!r}")


@dataclass(frozen=True)
class ByPackageManager:
    """Run the branch of the first program the node has (`command -v`): a package manager's, or a
    program's that must be there; fail with `otherwise` if none."""

    branches: tuple[tuple[str, tuple[Step, ...]], ...]
    otherwise: str


Step = Union[
    Command, IfMissing, IfPresent, Check, ByPackageManager, IfSucceeds, CollectExisting, CollectMatching, Fail
]

T = TypeVar("T")


class StepVisitor(ABC, Generic[T]):
    """One handler per step type. Every back-end that shows or runs steps implements all of them, so a
    new step type that one of them does not handle stops it from being made at all (TypeError)."""

    @abstractmethod
    def command(self, step: Command) -> T:
        """Run or show one program run."""

    @abstractmethod
    def if_missing(self, step: IfMissing) -> T:
        """Run or show `step.then` when the path does not exist."""

    @abstractmethod
    def if_present(self, step: IfPresent) -> T:
        """Run or show `step.then` when the path is a directory."""

    @abstractmethod
    def check(self, step: Check) -> T:
        """Run or show a check that fails with its message."""

    @abstractmethod
    def by_package_manager(self, step: ByPackageManager) -> T:
        """Run or show the branch of the first program the node has."""

    @abstractmethod
    def if_succeeds(self, step: IfSucceeds) -> T:
        """Run or show `then` when the tests succeed, else `otherwise`."""

    @abstractmethod
    def collect_existing(self, step: CollectExisting) -> T:
        """Run or show the collection of the paths that exist into a variable."""

    @abstractmethod
    def collect_matching(self, step: CollectMatching) -> T:
        """Run or show the search for matching paths, added to a variable."""

    @abstractmethod
    def fail(self, step: Fail) -> T:
        """Run or show a stop with a message."""


def visit_step(step: Step, visitor: StepVisitor[T]) -> T:
    """The visitor's handler for the step's type; a step type it has no handler for is an error."""
    if isinstance(step, Command):
        return visitor.command(step)
    if isinstance(step, IfMissing):
        return visitor.if_missing(step)
    if isinstance(step, IfPresent):
        return visitor.if_present(step)
    if isinstance(step, Check):
        return visitor.check(step)
    if isinstance(step, ByPackageManager):
        return visitor.by_package_manager(step)
    if isinstance(step, IfSucceeds):
        return visitor.if_succeeds(step)
    if isinstance(step, CollectExisting):
        return visitor.collect_existing(step)
    if isinstance(step, CollectMatching):
        return visitor.collect_matching(step)
    if isinstance(step, Fail):
        return visitor.fail(step)
    raise TypeError(f"no step handler for the step type {type(step).__name__}")


def walk_steps(steps: Iterable[Step], visitor: StepVisitor[T]) -> Iterator[T]:
    """Each step's handler result, in order; lazy, so a back-end that runs steps stops at a failure."""
    for step in steps:
        yield visit_step(step, visitor)


Reference = Union[EnvSecret, StagedFile, RuntimeValue]


@dataclass(frozen=True)
class References:
    """What actions need from their runner at run time, each once, in the order they use it.

    `required`: the secrets, staged files and run-time values without which they cannot run;
    `optional`: the secrets passed only when the runner has them (OptionalArg, a session token);
    `overrides`: plain values the runner may set, else their defaults (RunnerValue).
    """

    required: tuple[Reference, ...] = ()
    optional: tuple[EnvSecret, ...] = ()
    overrides: tuple[RunnerValue, ...] = ()

    @property
    def secrets(self) -> tuple[EnvSecret, ...]:
        """The secrets the runner must supply through the environment."""
        return tuple(ref for ref in self.required if isinstance(ref, EnvSecret))

    @property
    def files(self) -> tuple[StagedFile, ...]:
        """The controller files the runner must copy to the node."""
        return tuple(ref for ref in self.required if isinstance(ref, StagedFile))

    @property
    def values(self) -> tuple[RuntimeValue, ...]:
        """The run-time values (made by earlier actions, e.g. the image id) the runner must supply."""
        return tuple(ref for ref in self.required if isinstance(ref, RuntimeValue))


def references(action: Action) -> References:
    """The secrets, staged files and run-time values one action refers to."""
    return references_of((action,))


def references_of(actions: Iterable[Action]) -> References:
    """The secrets, staged files and run-time values a sequence of actions refers to, each once."""
    required: list[Reference] = []
    optional: list[EnvSecret] = []
    overrides: list[RunnerValue] = []
    for action in actions:
        for value in _referring_values(action):
            if isinstance(value, OptionalArg) and value.value not in optional:
                optional.append(value.value)
            elif isinstance(value, RunnerValue) and value not in overrides:
                overrides.append(value)
            elif isinstance(value, (EnvSecret, StagedFile, RuntimeValue)) and value not in required:
                required.append(value)
    return References(tuple(required), tuple(optional), tuple(overrides))


def _referring_values(action: Action) -> list[object]:
    """The words of an action that may refer to a run-time input."""
    if isinstance(action, Exec):
        return [*action.argv, *(value for _, value in action.env)]
    if isinstance(action, (RemoteFile, RemoteDirectory)) and action.staged is not None:
        return [action.staged]
    if isinstance(action, AwsCall):
        # Run-time values inside a parameter count too (an EBS mapping's SnapshotId).
        return [found for _, value in action.params for found in _nested(value)]
    return []


def _nested(value: object) -> list[object]:
    """The value, or the values inside a list or mapping parameter, deeply."""
    if isinstance(value, (tuple, list)):
        return [found for item in value for found in _nested(item)]
    if isinstance(value, dict):
        return [found for item in value.values() for found in _nested(item)]
    return [value]


# The variable holding a command's first ExistingPaths word's value (the next ones: ..._2, ...).
EXISTING_PATHS_VARIABLE = "AMIDSL_EXISTING_PATHS"


def node_steps(action: Action) -> tuple[Step, ...]:
    """The steps a node action runs; an unknown (or controller-side) action type is an error."""
    if isinstance(action, InstallPackages):
        return (install_packages(action.apt, action.rpm),)
    if isinstance(action, InstallRuby):
        return install_ruby(action)
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
        return _exec(action)
    if isinstance(action, Remove):
        return removal(action)
    raise TypeError(f"no node commands for the action type {type(action).__name__}")


APT_ENV = (("DEBIAN_FRONTEND", "noninteractive"),)


def install_packages(apt: tuple[str, ...], rpm: tuple[str, ...]) -> ByPackageManager:
    """Install packages with whichever package manager the node has."""
    return ByPackageManager(
        (
            (
                "apt-get",
                (
                    Command(("apt-get", "update", "-q"), env=APT_ENV),
                    Command(("apt-get", "install", "-y", "-q", *apt), env=APT_ENV),
                ),
            ),
            ("dnf", (Command(("dnf", "install", "-y", "-q", *rpm)),)),
            ("yum", (Command(("yum", "install", "-y", "-q", *rpm)),)),
        ),
        otherwise="no apt-get, dnf or yum on this node: install the packages by hand",
    )


def _exec(action: Exec) -> tuple[Step, ...]:
    """An Exec's command; each ExistingPaths word becomes a variable set by the steps before it."""
    variables: dict[ExistingPaths, str] = {}
    steps: list[Step] = []
    for word in action.argv:
        if isinstance(word, ExistingPaths):
            name = EXISTING_PATHS_VARIABLE + (f"_{len(variables) + 1}" if variables else "")
            variables[word] = name
            steps.append(CollectExisting(name, word.paths, word.separator))
            steps += [CollectMatching(name, m, word.separator) for m in word.matching]
    argv = tuple(ShellVariable(variables[w]) if isinstance(w, ExistingPaths) else w for w in action.argv)
    steps.append(Command(argv, env=action.env, cwd=action.cwd, user=action.user, umask=action.umask))
    if action.missing is not None and isinstance(argv[0], str):
        # bash alone would say only "command not found": say what is missing and the fix.
        steps = [ByPackageManager(((argv[0], tuple(steps)),), otherwise=action.missing)]
    return (IfMissing(action.creates, tuple(steps)),) if action.creates else tuple(steps)


def install_ruby(action: InstallRuby) -> tuple[Step, ...]:
    """The distribution's Ruby where the node's packages have a wanted version, else rbenv's build."""
    bin_dir = action.link.rsplit("/", 1)[0]
    fallback: tuple[Step, ...]
    if action.build_version is None:
        wanted = " or ".join(f"ruby{v}" for v in action.distribution_versions)
        fallback = (
            Fail(
                f"this node's packages have no {wanted}, which the ec2-ami-tools need: "
                'set install_strategy = "rbenv" (or "auto") to build Ruby with rbenv'
            ),
        )
    else:
        root, version = action.rbenv_root, action.build_version
        fallback = (
            install_packages(action.build_apt, action.build_rpm),
            IfMissing(root, (Command(("git", "clone", "--depth", "1", action.rbenv_url, root)),)),
            IfMissing(
                f"{root}/plugins/ruby-build",
                (
                    Command(
                        ("git", "clone", "--depth", "1", action.ruby_build_url, f"{root}/plugins/ruby-build")
                    ),
                ),
            ),
            IfMissing(
                f"{root}/versions/{version}",
                (
                    Command(
                        (f"{root}/bin/rbenv", "install", "--skip-existing", version),
                        env=(("RBENV_ROOT", root),),
                    ),
                ),
            ),
            Command(("ln", "-sfn", f"{root}/versions/{version}/bin/ruby", action.link)),
        )
    chain = fallback
    for version in reversed(action.distribution_versions):
        package = f"ruby{version}"
        chain = (
            IfSucceeds(
                (Command(("apt-cache", "show", package)),),
                (
                    Command(("apt-get", "install", "-y", "-q", package), env=APT_ENV),
                    Command(("ln", "-sfn", f"/usr/bin/{package}", action.link)),
                ),
                chain,
            ),
        )
    return (_install(("-d",), "0755", "root", "root", "--", bin_dir), *chain)


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
        # Forget it: should someone create the directory again later, it is theirs, not amidsl's. The
        # record's own folders go with the last entry (another build's entries keep them).
        steps.append(Command(("rm", "-rf", "--", created_marker(path))))
        for folder in (CREATED_RECORD, NODE_STATE_DIR):
            steps.append(IfPresent(folder, (Command(("rmdir", "--ignore-fail-on-non-empty", "--", folder)),)))
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
