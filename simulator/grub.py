"""GRUB 2 for BIOS on a simulated node: this machine's own where it has it, else stand-ins.

An hvm build runs grub-mkimage on the node and copies the volume's /usr/lib/grub/i386-pc into the
image. The node program runs on this machine (simulator.node_launcher), so its grub-mkimage is this
machine's. Where this machine has GRUB 2 for BIOS (grub-mkimage and the i386-pc files, Debian's
grub-pc-bin), the fake node gets a copy of those files and the image gets GRUB's real boot code.
Elsewhere the node gets stand-ins: files that say what they stand for, and a grub-mkimage
(simulator.grub_stand_in) that checks its arguments as the real one does and writes a core image that
is no boot code. The image then has the disk layout of a real build but no GRUB boot code in its MBR,
and the simulation says so (`modelled`): it never passes a stand-in off as a boot sector.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amidsl.node.amidsl_node import GRUB_FILES, GRUB_PLATFORM
from simulator.grub_stand_in import MARK, SECTOR

if TYPE_CHECKING:
    from simulator.node import FakeNode

HOST_MODULES = Path("/usr/lib/grub") / GRUB_PLATFORM  # where this machine's GRUB 2 for BIOS would be
NODE_MODULES = f"/usr/lib/grub/{GRUB_PLATFORM}"
PACKAGE = "grub-pc-bin"  # the template node is Debian-like
MKIMAGE_NAMES = ("grub-mkimage", "grub2-mkimage")  # what the node program looks for
STAND_IN_MKIMAGE = Path(__file__).with_name("grub_stand_in.py")
# How the node got its GRUB (FakeNode.grub).
HOST = "this machine's"
STAND_IN = "stand-in"
# The stand-in modules and their dependencies (moddep.lst): what grub-install's core image for an
# ext4 root on an MBR disk needs, and what a boot menu loads after it.
STAND_IN_MODULES = {
    "biosdisk": (),
    "part_msdos": (),
    "fshelp": (),
    "ext2": ("fshelp",),
    "search_fs_uuid": (),
    "boot": (),
    "extcmd": (),
    "normal": ("boot", "extcmd"),
    "linux": ("boot",),
    "gzio": (),
}


def host_mkimage() -> str | None:
    """This machine's grub-mkimage, where it also has GRUB's i386-pc files; else None."""
    if not all((HOST_MODULES / name).is_file() for name in GRUB_FILES):
        return None
    return next((found for found in map(shutil.which, MKIMAGE_NAMES) if found), None)


def stand_in_file(name: str) -> bytes:
    """A stand-in for one of GRUB's i386-pc files: text saying what it stands for, no GRUB code."""
    text = f"{MARK} {GRUB_PLATFORM}/{name}: not GRUB code\n".encode()
    return text.ljust(SECTOR, b"\x00") if name.endswith(".img") else text


def install(node: FakeNode) -> None:
    """Give the node GRUB 2 for BIOS: a copy of this machine's files, else stand-ins (node.grub says)."""
    node.make_dirs(NODE_MODULES)
    if host_mkimage() is not None:
        shutil.copytree(HOST_MODULES, node.host_path(NODE_MODULES), dirs_exist_ok=True)
        node.grub = HOST
    else:
        depends = "".join(f"{name}: {' '.join(needs)}\n" for name, needs in STAND_IN_MODULES.items())
        node.write_bytes(f"{NODE_MODULES}/moddep.lst", depends.encode())
        for name in [*GRUB_FILES, *(f"{module}.mod" for module in STAND_IN_MODULES)]:
            if name != "moddep.lst":
                node.write_bytes(f"{NODE_MODULES}/{name}", stand_in_file(name))
        node.grub = STAND_IN
    node.packages.add(PACKAGE)


def node_mkimage(node: FakeNode, tools: Path) -> dict[str, str | None]:
    """The grub-mkimage the node program finds on the node (simulator.node_launcher's tools)."""
    found: dict[str, str | None] = dict.fromkeys(MKIMAGE_NAMES)
    if PACKAGE not in node.packages or node.grub is None:
        return found
    if node.grub == HOST:
        found[MKIMAGE_NAMES[0]] = host_mkimage()
        return found
    program = tools / MKIMAGE_NAMES[0]
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I "{STAND_IN_MKIMAGE}" "$@"\n')
    program.chmod(0o755)
    found[MKIMAGE_NAMES[0]] = str(program)
    return found


def modelled(node: FakeNode) -> list[str]:
    """How the simulation made an hvm image's boot: what it modelled, and whose GRUB it used."""
    lines = ["modelled: the kernel and initramfs (stand-ins on the fake node; nothing boots the image)"]
    if node.grub == STAND_IN:
        lines.append(
            f"modelled: GRUB 2 for BIOS, as this machine has none ({PACKAGE}): stand-in files and "
            f"grub-mkimage, so the MBR and core image hold no boot code; install {PACKAGE} to simulate "
            "with GRUB's own"
        )
    elif node.grub == HOST:
        lines.append(f"GRUB 2 for BIOS: this machine's own ({PACKAGE}), so the boot code is GRUB's real one")
    return lines
