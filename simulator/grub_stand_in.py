"""A stand-in for grub-mkimage, for simulated nodes on a machine without GRUB 2 for BIOS.

It takes the options the node program passes to the real one and checks them as the real one does: the
target format, the directory with GRUB's i386-pc images and the modules (with their dependencies from
moddep.lst), the early config file. It then writes a core image that is no boot code: sectors of text
saying what the real one would hold (the format, the prefix, the modules, the embedded config). It is
run as

    python3 -I grub_stand_in.py [--version | -O FORMAT -d DIR -c CONFIG -p PREFIX -o OUTPUT MODULE...]

Standard library only: it runs as its own process, as a program of the node would.
"""

from __future__ import annotations

import os
import sys

SECTOR = 512
VERSION = "grub-mkimage (GRUB) simulated-stand-in"
MARK = "amidsl simulator: stand-in for GRUB's"
PLATFORM = "i386-pc"
# The images grub-mkimage reads from the directory for i386-pc, besides the modules.
PLATFORM_IMAGES = ("kernel.img", "lzma_decompress.img", "diskboot.img")
OPTIONS = {"-O": "format", "-d": "directory", "-c": "config", "-p": "prefix", "-o": "output"}
LONG_OPTIONS = {
    "--format": "-O",
    "--directory": "-d",
    "--config": "-c",
    "--prefix": "-p",
    "--output": "-o",
}
USAGE_STATUS = 64  # argp's status for a bad option


class MkimageError(Exception):
    """What the real grub-mkimage would say before exiting with status 1."""


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The options (by name) and the module names, as argp parses them; MkimageError on a bad option."""
    options: dict[str, str] = {}
    modules = []
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        flag, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        flag = LONG_OPTIONS.get(flag, flag)
        if flag in OPTIONS:
            if not equals:
                if not rest:
                    raise MkimageError(f"option requires an argument -- '{flag.lstrip('-')}'")
                value = rest.pop(0)
            options[OPTIONS[flag]] = value
        elif word.startswith("-"):
            raise MkimageError(f"unrecognized option '{word}'")
        else:
            modules.append(word)
    return options, modules


def dependencies(directory: str) -> dict[str, list[str]]:
    """moddep.lst: each module's dependencies."""
    found = {}
    with open(os.path.join(directory, "moddep.lst")) as f:
        for line in f:
            name, _, needs = line.partition(":")
            if name.strip():
                found[name.strip()] = needs.split()
    return found


def with_dependencies(modules: list[str], depends: dict[str, list[str]]) -> list[str]:
    """The modules and everything they need, dependencies first."""
    ordered: list[str] = []

    def add(name: str) -> None:
        if name not in ordered:
            for needed in depends.get(name, []):
                add(needed)
            ordered.append(name)

    for name in modules:
        add(name)
    return ordered


def read(path: str) -> bytes:
    """A file grub-mkimage needs, or the error it gives for it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise MkimageError(f"cannot open `{path}': {err.strerror}") from None


def core_image(options: dict[str, str], modules: list[str]) -> bytes:
    """The stand-in core image: a first sector where diskboot.img would be, then what the core holds."""
    if "format" not in options:
        raise MkimageError("Target format not specified (use the -O option).")
    if options["format"] != PLATFORM:
        raise MkimageError(f"unknown target format {options['format']}")
    if "output" not in options:
        raise MkimageError("output file must be specified")
    directory = options.get("directory", f"/usr/lib/grub/{PLATFORM}")
    for name in PLATFORM_IMAGES:
        read(os.path.join(directory, name))
    needed = with_dependencies(modules, dependencies(directory))
    for name in needed:
        read(os.path.join(directory, f"{name}.mod"))
    config = read(options["config"]).decode("utf-8", "replace") if "config" in options else ""
    first = f"{MARK} diskboot.img: no boot code".encode().ljust(SECTOR, b"\x00")
    text = (
        f"{MARK} core image: no boot code (made by a stand-in grub-mkimage)\n"
        f"format: {options['format']}\nprefix: {options.get('prefix', '')}\n"
        f"modules: {' '.join(needed)}\nearly config:\n{config}"
    ).encode()
    return first + text.ljust(-(-len(text) // SECTOR) * SECTOR, b"\x00")


def main(argv: list[str]) -> int:
    """Act as `grub-mkimage ARGS`: print the version, or write the stand-in core image."""
    if argv[1:] == ["--version"]:
        print(VERSION)
        return 0
    try:
        options, modules = parse(argv[1:])
        image = core_image(options, modules)
        with open(options["output"], "wb") as f:
            f.write(image)
    except MkimageError as err:
        print(f"grub-mkimage: error: {str(err).rstrip('.')}.", file=sys.stderr)
        return USAGE_STATUS if str(err).startswith(("unrecognized option", "option requires")) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
