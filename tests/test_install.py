"""The README's main command on a fresh install: the package without extras runs `amidsl simulate`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What `pip install .` needs from a clone: the packages and the project metadata (README is the long
# description).
PACKAGE_FILES = ("amidsl", "simulator", "pyproject.toml", "README.md")


def test_a_fresh_install_without_extras_runs_simulate(tmp_path):
    source = tmp_path / "clone"
    source.mkdir()
    for name in PACKAGE_FILES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, source / name)
    venv = tmp_path / "venv"
    # This pip installs into the new environment (--python): unpacking a pip of its own there takes
    # seconds and proves nothing.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin/python", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "install", "-q", "--no-compile", "."],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [venv / "bin/amidsl", "simulate"], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "registered ami-" in run.stdout
    assert list(work.iterdir()) == []
