"""The launcher runs the node program as python3 would, compiling it once per build."""

from __future__ import annotations

import json
import marshal
import subprocess
import sys
from pathlib import Path

from simulator.node_launcher import DESCRIPTION_VARIABLE

LAUNCHER = Path(__file__).resolve().parents[2] / "simulator" / "node_launcher.py"
PROGRAM = """\
import sys
print(__name__, __file__, sys.argv, {version})
sys.exit(3)
"""


def launch(program: Path, cache: Path | None) -> subprocess.CompletedProcess:
    description = {"tools": {}, "full": [], "code_cache": None if cache is None else str(cache)}
    return subprocess.run(
        [sys.executable, "-I", str(LAUNCHER), str(program), "bundle"],
        capture_output=True,
        text=True,
        env={DESCRIPTION_VARIABLE: json.dumps(description)},
    )


def test_the_program_runs_as_a_script_run_by_python3_would(tmp_path):
    program = tmp_path / "amidsl_node.py"
    program.write_text(PROGRAM.format(version=1))
    for cache in (None, tmp_path):  # compiled afresh, then through the build's cache
        run = launch(program, cache)
        assert run.returncode == 3, run.stderr
        assert run.stdout == f"__main__ {program} [{str(program)!r}, 'bundle'] 1\n"


def test_a_program_run_before_runs_from_the_cache(tmp_path):
    program = tmp_path / "amidsl_node.py"
    program.write_text(PROGRAM.format(version=1))
    cache = tmp_path / "cache"
    cache.mkdir()
    assert launch(program, cache).stdout.endswith(" 1\n")
    (kept,) = cache.iterdir()
    # Another program's code in its place shows the kept code is what runs, not compiled again.
    kept.write_bytes(marshal.dumps(compile(PROGRAM.format(version=9), str(program), "exec")))
    assert launch(program, cache).stdout.endswith(" 9\n")


def test_a_changed_program_is_compiled_again(tmp_path):
    program = tmp_path / "amidsl_node.py"
    cache = tmp_path / "cache"
    cache.mkdir()
    program.write_text(PROGRAM.format(version=1))
    assert launch(program, cache).stdout.endswith(" 1\n")
    program.write_text(PROGRAM.format(version=2))
    assert launch(program, cache).stdout.endswith(" 2\n")
    assert len(list(cache.iterdir())) == 2
