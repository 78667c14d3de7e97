"""Run e2fsprogs tools (mke2fs, debugfs), which often live outside a normal user's PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from amidsl.bundle.errors import ImageError

_SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])
# The oldest e2fsprogs whose debugfs takes every command given here: `inode_dump -b` came in 1.44.3.
DEBUGFS_NEEDS_E2FSPROGS = "1.44.3"
# What debugfs says on stderr when it does not run a command as given: an unknown command, an option it
# does not know ("inode_dump: Usage: inode_dump <file>" before 1.44.3). Output missing then is no damage.
_REFUSED_COMMAND = re.compile(
    r"^(?:debugfs: Command not found .*|\S+: Usage: .*|\S+: invalid option .*)$", re.M
)
# What debugfs prints on stdout before it runs any command when the superblock's checksum does not
# match; it then reopens the filesystem ignoring every checksum, the inodes' too.
_SUPERBLOCK_CHECKSUM_RETRY = "Checksum errors in superblock!"


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
    _check_diagnostics(image, result.returncode, result.stderr.decode("utf-8", "replace"), stdout)
    return stdout.decode("utf-8", "surrogateescape")


def _check_diagnostics(image: Path, returncode: int, stderr: str, stdout: bytes) -> None:
    """Raise ImageError if what debugfs said means its output cannot be trusted (the one place that
    reads debugfs's own messages)."""
    # First: an unknown command also makes debugfs exit 1, which is no fault of the image.
    refused = _REFUSED_COMMAND.search(stderr)
    if refused is not None:
        raise ImageError(
            f"debugfs is too old: it does not take a command amidsl gives it ({refused.group(0).strip()}); "
            f"amidsl needs e2fsprogs ≥ {DEBUGFS_NEEDS_E2FSPROGS} (apt-get install e2fsprogs)"
        )
    if returncode != 0 or "while trying to open" in stderr or "not open" in stderr:
        first = next((line for line in stderr.splitlines() if "debugfs 1." not in line), stderr)
        raise ImageError(
            f"debugfs cannot read {image} as an ext2/3/4 filesystem image ({first.strip()}); "
            "pass an ext2/3/4 image file (as made by mke2fs)"
        )
    # Only what comes before the first echoed command ("debugfs: ...") is debugfs's own: after it,
    # a command's output could hold bytes of the image.
    opening = stdout.split(b"debugfs: ", 1)[0].decode("utf-8", "replace")
    if _SUPERBLOCK_CHECKSUM_RETRY in opening:
        raise ImageError(
            f"{image} is damaged: its filesystem's metadata checksums do not match (the superblock's), so "
            "none of its metadata can be trusted; run e2fsck -f on a copy of it, or rebuild the image"
        )


def quote(name: str) -> str:
    """Quote a name for a debugfs command line (a doubled quote is a literal quote)."""
    return '"' + name.replace('"', '""') + '"'
