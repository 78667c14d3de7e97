"""Runs amidsl's node program, unchanged, as it would run on the simulated node.

The node program runs on this machine against the node's directory. What it asks the operating system
about the node, this launcher answers as the FakeNode says: which e2fsprogs programs the node has (none,
or an old mke2fs that reports its version) and which directories sit on a full disk. It is started as

    python3 -I node_launcher.py PROGRAM COMMAND < request.json

with the node's description as JSON in the environment variable NODE_DESCRIPTION:
{"tools": {name: path or null}, "full": [directory...], "code_cache": directory or null}.

The program is compiled from the node's copy of its source, as python3 would; a simulation runs it
several times, so where the description names a code_cache (a private directory of the simulation),
the code compiled from that very source is kept there for the next run. The launcher imports nothing
the node program does not (pathlib, say): each import is paid at every run.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import shutil
import sys
import types
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


def compiled(program: str, cache: str | None) -> types.CodeType:
    """The program's code: compiled from its source, or taken from `cache` where the same source at the
    same path was compiled before."""
    with open(program, "rb") as file:
        source = file.read()
    if cache is None:
        return compile(source, program, "exec", dont_inherit=True)
    kept = os.path.join(cache, hashlib.sha256(program.encode() + b"\0" + source).hexdigest())
    if os.path.isfile(kept):
        with open(kept, "rb") as file:
            return marshal.loads(file.read())
    code = compile(source, program, "exec", dont_inherit=True)
    partial = f"{kept}.{os.getpid()}"
    with open(partial, "wb") as file:
        file.write(marshal.dumps(code))
    os.replace(partial, kept)
    return code


def run_as_main(program: str, code: types.CodeType) -> None:
    """Run the code as `python3 PROGRAM` runs a script: as module __main__, whose __file__ is the
    program (the globals runpy.run_path gives a script)."""
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=program, __cached__=None, __loader__=None, __package__="", __spec__=None)
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


def main(argv: list[str]) -> None:
    """Describe the node, then run the program as `python3 PROGRAM COMMAND` would."""
    description = json.loads(os.environ.pop(DESCRIPTION_VARIABLE, "{}"))
    describe_node(description.get("tools", {}), description.get("full", []))
    program, command = argv[1], argv[2]
    sys.argv = [program, command]
    run_as_main(program, compiled(program, description.get("code_cache")))


if __name__ == "__main__":
    main(sys.argv)
