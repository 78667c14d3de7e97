"""Every step type does the same on a real bash as on the simulator's FakeNode.

Each case's steps are rendered by the real renderer and run by bash in one temporary directory, then
run by the simulator's step runner on a FakeNode rooted in another; the two trees (files, their
contents and modes, directories, links), the exit status and amidsl's own messages must agree. A case
builds its steps for a root: "" on the node, the temporary directory's path for bash.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import pytest

from amidsl.model.actions import EnvSecret, OptionalArg, PathsMatching, RuntimeValue, StagedFile
from amidsl.model.steps import (
    ByPackageManager,
    Check,
    CollectExisting,
    CollectMatching,
    Command,
    Fail,
    Glob,
    IfMissing,
    IfPresent,
    IfSucceeds,
    ShellVariable,
    Step,
    StepVisitor,
    visit_step,
)
from amidsl.render.shell import ShellSteps, render_steps
from simulator.node import FakeNode
from simulator.steps import StepRunner
from simulator.template import standard_programs

# What every rendered script defines before its phases (amidsl.render.shell's preamble): `fail`.
PREAMBLE = """set -Eeuo pipefail
umask 022
fail() {
  printf 'amidsl: %s\\n' "$*" >&2
  return 1
}
"""

SECRET = EnvSecret("AMIDSL_TEST_SECRET", "a test secret")
TOKEN = EnvSecret("AMIDSL_TEST_TOKEN", "a test token")
STAGED = StagedFile("AMIDSL_TEST_STAGED", "a staged test file")
IMAGE_ID = RuntimeValue("test_image_id", "ami-register")


@dataclass(frozen=True)
class Case:
    """Steps for a root, the files there before they run, and the environment ("{root}" filled in)."""

    name: str
    steps: Callable[[str], tuple[Step, ...]]
    given: dict[str, str | None] = field(default_factory=dict)  # path -> text, or None: a directory
    env: dict[str, str] = field(default_factory=dict)
    known_difference: str | None = None  # why the simulator differs here (the case is expected to fail)


def _work(*names: str) -> dict[str, str | None]:
    """A /work directory holding files named `names` (each holding its own name)."""
    return {"/work": None, **{f"/work/{name}": name for name in names}}


# The filesystem type bash's `find -fstype` sees for the temporary directory, and the fake node's root's.
TMP_FS_TYPE = subprocess.run(
    ["find", tempfile.gettempdir(), "-maxdepth", "0", "-printf", "%F"],
    capture_output=True,
    text=True,
    check=True,
).stdout


def _matching(root: str, *patterns: str, **options: object) -> PathsMatching:
    """A search under the root's /work for patterns, on the temporary directory's filesystem type."""
    return PathsMatching(
        patterns,
        (TMP_FS_TYPE, "ext4"),
        "a test rule",
        root=f"{root}/work",
        **options,  # type: ignore[arg-type]
    )


def _install_file(root: str, path: str, mode: str) -> Command:
    return Command(("install", "-m", mode, "/dev/null", f"{root}{path}"))


CASES: dict[type, tuple[Case, ...]] = {
    Command: (
        Case(
            "printf into a new file",
            lambda r: (Command(("printf", "%s", "hello"), stdout=f"{r}/work/out"),),
            given=_work(),
        ),
        Case(
            "printf into a file made private first keeps its mode",
            lambda r: (
                _install_file(r, "/work/secret", "0600"),
                Command(("printf", "%s", "text"), stdout=f"{r}/work/secret"),
            ),
            given=_work(),
        ),
        Case(
            "a umask is the command's own",
            lambda r: (
                Command(("printf", "%s", "private"), stdout=f"{r}/work/private", umask="077"),
                Command(("printf", "%s", "shared"), stdout=f"{r}/work/shared"),
            ),
            given=_work(),
        ),
        Case(
            "a here-document into a file made private first",
            lambda r: (
                _install_file(r, "/work/program.py", "0700"),
                Command(("cat",), stdout=f"{r}/work/program.py", stdin="print('$HOME')\n`not run`\n"),
            ),
            given=_work(),
        ),
        Case(
            "install -d makes parents and the mode",
            lambda r: (Command(("install", "-d", "-m", "0750", "--", f"{r}/work/a/b")),),
            given=_work(),
        ),
        Case(
            "rm -f of a glob, dotfiles kept",
            lambda r: (Command(("rm", "-f", "--", Glob(f"{r}/work", "*.tmp"))),),
            given=_work("a.tmp", "b.tmp", ".c.tmp", "keep.txt"),
        ),
        Case(
            "rm -f of a glob matching nothing",
            lambda r: (Command(("rm", "-f", "--", Glob(f"{r}/work", "*.tmp"))),),
            given=_work("keep.txt"),
        ),
        Case(
            "rm -rf of a directory",
            lambda r: (Command(("rm", "-rf", "--", f"{r}/work/sub")),),
            given={**_work(), "/work/sub": None, "/work/sub/.hidden": "x"},
        ),
        Case(
            "rm of a missing file fails",
            lambda r: (
                Command(("rm", "--", f"{r}/work/missing")),
                Command(("printf", "%s", "not reached"), stdout=f"{r}/work/after"),
            ),
            given=_work(),
        ),
        Case(
            "find empties a directory, dotfiles included",
            lambda r: (Command(("find", f"{r}/work", "-mindepth", "1", "-delete")),),
            given={**_work(".pk", "cert"), "/work/sub": None, "/work/sub/.x": "x"},
        ),
        Case(
            "mv of a glob to a new name",
            lambda r: (Command(("mv", "--", Glob(f"{r}/work", "tools-1.*"), f"{r}/work/tools")),),
            given={**_work(), "/work/tools-1.5": None, "/work/tools-1.5/bin": "tool"},
        ),
        Case(
            "ln -sfn replaces a link",
            lambda r: (Command(("ln", "-sfn", f"{r}/work/ruby3.1", f"{r}/work/ruby")),),
            given=_work("ruby3.1"),
        ),
        Case(
            "a missing program fails with 127",
            lambda r: (Command(("amidsl-no-such-program", "--version")),),
        ),
        Case("false fails", lambda r: (Command(("false",)),)),
        Case(
            "a working directory that does not exist fails",
            lambda r: (Command(("true",), cwd=f"{r}/work/missing"),),
            given=_work(),
        ),
        Case(
            "a working directory that exists",
            lambda r: (Command(("printf", "%s", "x"), cwd=f"{r}/work", stdout=f"{r}/work/out"),),
            given=_work(),
        ),
        Case(
            "run-time references expand to their values",
            lambda r: (
                Command(
                    ("printf", "%s\\n", SECRET, OptionalArg("--token", TOKEN), IMAGE_ID, STAGED),
                    env=(("IMAGE", IMAGE_ID),),
                    stdout=f"{r}/work/out",
                ),
            ),
            given=_work(),
            env={
                SECRET.env_var: "s3cr3t",
                TOKEN.env_var: "t0ken",
                IMAGE_ID.env_var: "ami-0123",
                STAGED.env_var: "{root}/work/staged",
            },
        ),
        Case(
            "an optional secret the runner does not have is left out",
            lambda r: (
                Command(("printf", "%s\\n", "a", OptionalArg("--token", TOKEN), "b"), stdout=f"{r}/work/out"),
            ),
            given=_work(),
        ),
        Case(
            "a staged file is installed with its mode",
            lambda r: (Command(("install", "-m", "0600", STAGED, f"{r}/work/pk")),),
            given={**_work(), "/stage": None, "/stage/key": "key text"},
            env={STAGED.env_var: "{root}/stage/key"},
        ),
        Case(
            "a run-time value the runner does not supply stops the steps",
            lambda r: (
                Command(("printf", "%s", IMAGE_ID), stdout=f"{r}/work/out"),
                Command(("printf", "%s", "not reached"), stdout=f"{r}/work/after"),
            ),
            given=_work(),
        ),
    ),
    IfMissing: (
        Case(
            "runs its steps when the path is missing",
            lambda r: (IfMissing(f"{r}/work/dir", (Command(("mkdir", f"{r}/work/dir")),)),),
            given=_work(),
        ),
        Case(
            "skips its steps when the path exists",
            lambda r: (IfMissing(f"{r}/work/file", (Command(("rm", "-f", f"{r}/work/file")),)),),
            given=_work("file"),
        ),
        Case(
            "kind d runs its steps when the path is a file, not a directory",
            lambda r: (
                IfMissing(
                    f"{r}/work/file",
                    (Command(("printf", "%s", "ran"), stdout=f"{r}/work/out"),),
                    kind="d",
                ),
            ),
            given=_work("file"),
        ),
        Case(
            "a failure inside stops the steps after it",
            lambda r: (
                IfMissing(f"{r}/work/dir", (Command(("false",)),)),
                Command(("printf", "%s", "not reached"), stdout=f"{r}/work/after"),
            ),
            given=_work(),
        ),
    ),
    IfPresent: (
        Case(
            "runs its steps when the directory is there",
            lambda r: (IfPresent(f"{r}/work", (Command(("rm", "-f", f"{r}/work/file")),)),),
            given=_work("file"),
        ),
        Case(
            "skips its steps when the path is a file",
            lambda r: (IfPresent(f"{r}/work/file", (Command(("rm", "-f", f"{r}/work/file")),)),),
            given=_work("file"),
        ),
        Case(
            "skips its steps when nothing is there",
            lambda r: (IfPresent(f"{r}/work/dir", (Command(("false",)),)),),
            given=_work(),
        ),
    ),
    Check: (
        Case("absent passes", lambda r: (Check("absent", f"{r}/work/gone", "still there"),), given=_work()),
        Case(
            "absent fails on a file",
            lambda r: (Check("absent", f"{r}/work/file", "still there"),),
            given=_work("file"),
        ),
        Case(
            "absent fails on a dangling link",
            lambda r: (
                Command(("ln", "-sfn", f"{r}/work/nowhere", f"{r}/work/link")),
                Check("absent", f"{r}/work/link", "the link is still there"),
            ),
            given=_work(),
        ),
        Case(
            "empty passes on an empty directory",
            lambda r: (Check("empty", f"{r}/work", "files remain"),),
            given=_work(),
        ),
        Case(
            "empty passes on a missing directory",
            lambda r: (Check("empty", f"{r}/work/missing", "files remain"),),
            given=_work(),
        ),
        Case(
            "empty fails on a dotfile",
            lambda r: (Check("empty", f"{r}/work", "files remain"),),
            given=_work(".pk"),
        ),
        Case(
            "recorded passes when nothing is there",
            lambda r: (Check("recorded", f"{r}/work/tools", "not amidsl's"),),
            given=_work(),
        ),
        Case(
            "recorded fails on a directory amidsl did not record",
            lambda r: (Check("recorded", f"{r}/work", "not amidsl's"),),
            given=_work("precious"),
        ),
    ),
    ByPackageManager: (
        Case(
            "runs the branch of the first program the node has",
            lambda r: (
                ByPackageManager(
                    (
                        ("amidsl-no-such-program", (Command(("false",)),)),
                        ("printf", (Command(("printf", "%s", "second"), stdout=f"{r}/work/out"),)),
                    ),
                    otherwise="no program",
                ),
            ),
            given=_work(),
        ),
        Case(
            "fails with its message when the node has none",
            lambda r: (
                ByPackageManager(
                    (("amidsl-no-such-program", (Command(("true",)),)),),
                    otherwise="install amidsl-no-such-program first",
                ),
            ),
        ),
    ),
    IfSucceeds: (
        Case(
            "runs then when every test succeeds",
            lambda r: (
                IfSucceeds(
                    (Command(("true",)), Command(("printf", "%s", "quiet"))),
                    (Command(("printf", "%s", "then"), stdout=f"{r}/work/out"),),
                    (Command(("printf", "%s", "otherwise"), stdout=f"{r}/work/out"),),
                ),
            ),
            given=_work(),
        ),
        Case(
            "runs otherwise when a test fails",
            lambda r: (
                IfSucceeds(
                    (Command(("true",)), Command(("false",))),
                    (Command(("printf", "%s", "then"), stdout=f"{r}/work/out"),),
                    (Command(("printf", "%s", "otherwise"), stdout=f"{r}/work/out"),),
                ),
            ),
            given=_work(),
        ),
        Case(
            "a chain: the second test decides",
            lambda r: (
                IfSucceeds(
                    (Command(("false",)),),
                    (Command(("printf", "%s", "first"), stdout=f"{r}/work/out"),),
                    (
                        IfSucceeds(
                            (Command(("true",)),),
                            (Command(("printf", "%s", "second"), stdout=f"{r}/work/out"),),
                            (Fail("neither"),),
                        ),
                    ),
                ),
            ),
            given=_work(),
        ),
        Case(
            "no otherwise: nothing runs when a test fails",
            lambda r: (IfSucceeds((Command(("false",)),), (Fail("not reached"),)),),
        ),
    ),
    CollectExisting: (
        Case(
            "sets the variable to the paths that exist and says which do not",
            lambda r: (
                CollectExisting("EXISTING", (f"{r}/work/a", f"{r}/work/missing", f"{r}/work/b"), ","),
                Command(("printf", "%s", ShellVariable("EXISTING")), stdout=f"{r}/work/out"),
            ),
            given=_work("a", "b"),
        ),
        Case(
            "an empty value when nothing exists",
            lambda r: (
                CollectExisting("EXISTING", (f"{r}/work/x", f"{r}/work/y"), ":"),
                Command(("printf", "%s", ShellVariable("EXISTING")), stdout=f"{r}/work/out"),
            ),
            given=_work(),
        ),
    ),
    CollectMatching: (
        Case(
            "adds the matching paths, sorted, a matching directory whole, and says each",
            lambda r: (
                CollectExisting("FOUND", (f"{r}/work/keep",), ","),
                CollectMatching("FOUND", _matching(r, f"{r}/work/*/.ssh/id_*", "*/.*_history", "*/.gnupg")),
                Command(("printf", "%s", ShellVariable("FOUND")), stdout=f"{r}/work/out"),
            ),
            given={
                **_work("keep"),
                "/work/b": None,
                "/work/b/.ssh": None,
                "/work/b/.ssh/id_ed25519": "key",
                "/work/b/.ssh/config": "config",
                "/work/a": None,
                "/work/a/.bash_history": "history",
                "/work/a/.gnupg": None,
                "/work/a/.gnupg/secring": "ring",
            },
        ),
        Case(
            "counts instead of saying each path",
            lambda r: (
                CollectMatching("FOUND", _matching(r, "*.pem", say_each=False)),
                Command(("printf", "%s", ShellVariable("FOUND")), stdout=f"{r}/work/out"),
            ),
            given={**_work("a.pem", "b.pem", "c.txt")},
        ),
        Case(
            "says `otherwise` and adds nothing when none of when_any exists",
            lambda r: (
                CollectMatching(
                    "FOUND",
                    _matching(r, "*.pem", when_any=(f"{r}/work/generator",), otherwise="nothing makes them"),
                ),
                Command(("printf", "%s", ShellVariable("FOUND")), stdout=f"{r}/work/out"),
            ),
            given={**_work("a.pem")},
        ),
        Case(
            "searches when one of when_any exists",
            lambda r: (
                CollectMatching("FOUND", _matching(r, "*.pem", when_any=(f"{r}/no", f"{r}/work/generator"))),
                Command(("printf", "%s", ShellVariable("FOUND")), stdout=f"{r}/work/out"),
            ),
            given={**_work("a.pem", "generator")},
        ),
        Case(
            "stops at a path holding the separator, which would split the list",
            lambda r: (
                CollectMatching("FOUND", _matching(r, "*.pem")),
                Command(("printf", "%s", ShellVariable("FOUND")), stdout=f"{r}/work/out"),
            ),
            given={**_work("a,b.pem")},
        ),
    ),
    Fail: (
        Case(
            "stops the steps with its message",
            lambda r: (
                Fail("stop here: fix it"),
                Command(("printf", "%s", "not reached"), stdout=f"{r}/work/after"),
            ),
            given=_work(),
        ),
    ),
}


@dataclass(frozen=True)
class Outcome:
    """What steps did: exit status, amidsl's own messages, and the tree under the root."""

    status: int
    messages: tuple[str, ...]
    tree: dict[str, tuple[object, ...]]


def _prepare(root: Path, given: dict[str, str | None]) -> None:
    for path, text in given.items():
        target = root / path.lstrip("/")
        if text is None:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
        else:
            target.write_text(text)
            target.chmod(0o644)


def _tree(root: Path, prefix: str) -> dict[str, tuple[object, ...]]:
    """Every path under root: its kind and mode, a file's content (`prefix` of its paths taken out),
    where a link leads."""
    found: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            mode = oct(path.lstat().st_mode & 0o7777)
            if path.is_symlink():
                found[relative] = ("link", os.path.relpath(path.resolve(), root.resolve()))
            elif path.is_dir():
                found[relative] = ("directory", mode)
            else:
                found[relative] = ("file", mode, path.read_bytes().replace(prefix.encode(), b""))
    return found


def _messages(output: str, root: str) -> tuple[str, ...]:
    lines = output.replace(root, "").splitlines()
    return tuple(line for line in lines if line.startswith("amidsl: "))


def _in_bash(case: Case, root: Path) -> Outcome:
    _prepare(root, case.given)
    script = PREAMBLE + "\n".join(render_steps(case.steps(str(root)))) + "\n"
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C"}
    env |= {name: value.format(root=root) for name, value in case.env.items()}
    done = subprocess.run(
        ["bash", "-c", script], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Outcome(done.returncode, _messages(done.stdout, str(root)), _tree(root, str(root)))


def _on_fake_node(case: Case, root: Path) -> Outcome:
    _prepare(root, case.given)
    node = FakeNode(root, programs=standard_programs())
    env = {name: value.format(root="") for name, value in case.env.items()}
    result = StepRunner(node, env).run(case.steps(""))
    return Outcome(result.status, _messages(result.output, ""), _tree(root, ""))


def _params() -> list:
    return [
        pytest.param(
            case,
            id=f"{step_type.__name__}: {case.name}",
            marks=[pytest.mark.xfail(reason=case.known_difference, strict=True)]
            if case.known_difference
            else [],
        )
        for step_type, cases in CASES.items()
        for case in cases
    ]


@pytest.mark.parametrize("step_type", get_args(Step), ids=lambda t: t.__name__)
def test_every_step_type_has_a_case(step_type):
    assert CASES.get(step_type), f"no conformance case for the step type {step_type.__name__}: add one"
    for case in CASES[step_type]:
        assert any(isinstance(step, step_type) for step in case.steps("")), case.name


@pytest.mark.parametrize("case", _params())
def test_steps_do_on_the_fake_node_what_they_do_in_bash(case, tmp_path):
    (tmp_path / "bash").mkdir()
    (tmp_path / "node").mkdir()
    in_bash = _in_bash(case, tmp_path / "bash")
    on_node = _on_fake_node(case, tmp_path / "node")
    assert on_node == in_bash


def test_a_back_end_without_a_handler_for_every_step_type_cannot_be_made():
    class Partial(StepVisitor[list[str]]):
        def command(self, step: Command) -> list[str]:
            return []

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_a_step_of_an_unknown_type_is_refused_by_the_walker():
    @dataclass(frozen=True)
    class Sleep:
        seconds: int

    with pytest.raises(TypeError, match="no step handler for the step type Sleep"):
        visit_step(Sleep(1), ShellSteps())  # type: ignore[arg-type]
