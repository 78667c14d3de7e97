"""Run e2fsprogs tools (mke2fs, debugfs), which often live outside a normal user's PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from amidsl.bundle.errors import ImageError

_SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])


def tool(name: str) -> str:
    """Absolute path of an e2fsprogs program, or ImageError saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path=_SBIN)
    if found is None:
        raise ImageError(f"{name} is not installed; install e2fsprogs (apt-get install e2fsprogs)")
    return found


def debugfs(image: Path, commands: list[str], *, write: bool = False) -> str:
    """Run debugfs commands (one per line) against an image file and return its output."""
    if not commands:
        return ""
    argv = [tool("debugfs"), *(["-w"] if write else []), "-f", "-", str(image)]
    # debugfs -f writes its output unbuffered, a few bytes per write;
    # into a file those writes are cheap, where through a pipe each would wake this process to read it.
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(
            argv,
            input="\n".join(commands).encode("utf-8", "surrogateescape") + b"\n",
            stdout=output,
            stderr=subprocess.PIPE,
            check=False,
            # Never page `stat` output through less, whatever the caller's environment says.
            env={**os.environ, "DEBUGFS_PAGER": "__none__", "PAGER": "__none__"},
        )
        output.seek(0)
        stdout = output.read()
    stderr = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0 or "while trying to open" in stderr or "not open" in stderr:
        first = next((line for line in stderr.splitlines() if "debugfs 1." not in line), stderr)
        raise ImageError(
            f"debugfs cannot read {image} as an ext2/3/4 filesystem image ({first.strip()}); "
            "pass an ext2/3/4 image file (as made by mke2fs)"
        )
    return stdout.decode("utf-8", "surrogateescape")


def quote(name: str) -> str:
    """Quote a name for a debugfs command line (a doubled quote is a literal quote)."""
    return '"' + name.replace('"', '""') + '"'
