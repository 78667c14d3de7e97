"""List the files inside an ext2/3/4 image with debugfs, without mounting it."""

import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amidsl.bundle.e2fs import debugfs
from amidsl.bundle.errors import ImageError

# debugfs `ls -p` prints one "/inode/mode/uid/gid/name/size/" line per entry (size empty for dirs).
_LS_LINE = re.compile(r"^/(\d+)/([0-7]+)/(\d+)/(\d+)/(.*)/(\d*)/$", re.MULTILINE)
_FAST_LINK = 'Fast link dest: "'
_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}
ROOT_INODE = 2


@dataclass(frozen=True)
class ImageEntry:
    """One file, directory, link or node in an image; path is absolute within the image."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    inode: int
    target: str | None = None


def _children(image: Path, directories: list[tuple[int, str]]) -> list[ImageEntry]:
    """The entries of several directories, read in one debugfs run."""
    output = debugfs(image, [f"ls -p <{ino}>" for ino, _ in directories])
    # With -f debugfs echoes each command as "debugfs: <command>"; split its output on them.
    chunks = re.split(r"^debugfs: ls -p <\d+>$", output, flags=re.MULTILINE)[1:]
    if len(chunks) != len(directories):
        raise ImageError(f"unexpected debugfs output while listing {image}")
    entries = []
    for (_, parent), chunk in zip(directories, chunks, strict=True):
        for match in _LS_LINE.finditer(chunk):
            ino, mode, uid, gid, name, size = match.groups()
            if name in (".", "..") or ino == "0":  # inode 0: an unused directory slot
                continue
            mode_bits = int(mode, 8)
            entries.append(
                ImageEntry(
                    path=f"{parent.rstrip('/')}/{name}",
                    type=_TYPES.get(stat.S_IFMT(mode_bits), "unknown"),
                    mode=stat.S_IMODE(mode_bits),
                    uid=int(uid),
                    gid=int(gid),
                    size=int(size or 0),
                    inode=int(ino),
                )
            )
    return entries


def _symlink_targets(image: Path, links: list[ImageEntry]) -> dict[int, str]:
    """Targets of symlinks: inline ("fast") ones from stat, longer ones dumped from their block."""
    targets: dict[int, str] = {}
    output = debugfs(image, [f"stat <{link.inode}>" for link in links])
    chunks = re.split(r"^debugfs: stat <\d+>$", output, flags=re.MULTILINE)[1:]
    slow = []
    for link, chunk in zip(links, chunks, strict=True):
        start = chunk.find(_FAST_LINK)
        if start >= 0:
            begin = start + len(_FAST_LINK)
            targets[link.inode] = chunk[begin : begin + link.size]
        else:
            slow.append(link)
    if slow:
        with tempfile.TemporaryDirectory() as scratch:
            debugfs(image, [f"dump <{link.inode}> {scratch}/{link.inode}" for link in slow])
            for link in slow:
                raw = (Path(scratch) / str(link.inode)).read_bytes()
                targets[link.inode] = raw.decode("utf-8", "surrogateescape")
    return targets


def list_image(image_path: Path | str) -> list[ImageEntry]:
    """Every entry of an ext2/3/4 image (root first, then breadth-first, sorted by path)."""
    image = Path(image_path)
    if not image.is_file():
        raise ImageError(f"image {image} does not exist or is not a file")
    root_line = debugfs(image, [f"stat <{ROOT_INODE}>"])
    mode_match = re.search(r"Mode:\s+0?([0-7]+)", root_line)
    owner_match = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", root_line)
    if not mode_match or not owner_match:
        raise ImageError(f"cannot read the root directory of {image}")
    entries = [
        ImageEntry(
            "/",
            "dir",
            int(mode_match.group(1), 8),
            int(owner_match.group(1)),
            int(owner_match.group(2)),
            0,
            ROOT_INODE,
        )
    ]
    level = [(ROOT_INODE, "/")]
    while level:
        children = _children(image, level)
        entries.extend(children)
        level = [(e.inode, e.path) for e in children if e.type == "dir"]
    links = [e for e in entries if e.type == "symlink"]
    if links:
        targets = _symlink_targets(image, links)
        entries = [
            ImageEntry(**{**e.__dict__, "target": targets[e.inode]}) if e.type == "symlink" else e
            for e in entries
        ]
    return sorted(entries, key=lambda e: e.path)


_TYPE_LETTERS = {
    "file": "-",
    "dir": "d",
    "symlink": "l",
    "fifo": "p",
    "socket": "s",
    "char": "c",
    "block": "b",
}


def listing_line(entry: ImageEntry) -> str:
    """The one listing format (image-ls and simulate --inspect): type+mode, uid:gid, size, path."""
    link = f" -> {entry.target}" if entry.target is not None else ""
    owner = f"{entry.uid}:{entry.gid}"
    kind = _TYPE_LETTERS.get(entry.type, "?")
    return f"{kind}{entry.mode:04o} {owner:>11} {entry.size:>12} {entry.path}{link}"
