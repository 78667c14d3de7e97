"""Runs amidsl's node program, unchanged, as it would run on the simulated node.

The node program runs on this machine against the node's directory. What it asks the operating system
about the node, this launcher answers as the FakeNode says: which e2fsprogs programs the node has (none,
or an old mke2fs that reports its version) and which directories sit on a full disk. It is started as

    python3 -I node_launcher.py PROGRAM COMMAND < request.json

with the node's description as JSON in the environment variable NODE_DESCRIPTION:
{"tools": {name: path or null}, "full": [directory...]}.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from typing import Any

DESCRIPTION_VARIABLE = "NODE_DESCRIPTION"


def _under(path: Any, directories: list[str]) -> bool:
    found = os.path.realpath(os.fsdecode(path))
    return any(found == d or found.startswith(d.rstrip("/") + "/") for d in directories)


def describe_node(tools: dict[str, str | None], full: list[str]) -> None:
    """Make this process see the node's tools and full disks (os.statvfs, shutil.which)."""
    real_which, real_statvfs = shutil.which, os.statvfs

    def which(name: str, *args: Any, **kwargs: Any) -> str | None:
        return tools[name] if name in tools else real_which(name, *args, **kwargs)

    def statvfs(path: Any) -> os.statvfs_result:
        found = real_statvfs(path)
        if not _under(path, full):
            return found
        # A full disk: no block free.
        return os.statvfs_result((found.f_bsize, found.f_frsize, found.f_blocks, 0, 0, *found[5:]))

    shutil.which = which  # type: ignore[assignment]
    os.statvfs = statvfs  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    """Describe the node, then run the program as `python3 PROGRAM COMMAND` would."""
    description = json.loads(os.environ.pop(DESCRIPTION_VARIABLE, "{}"))
    describe_node(description.get("tools", {}), description.get("full", []))
    program, command = argv[1], argv[2]
    sys.argv = [program, command]
    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
