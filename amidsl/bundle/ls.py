"""List the files inside an ext2/3/4 image with debugfs, without mounting it.

Names are read from the directories' raw blocks and attributes from the raw inodes, never from
debugfs's text listings, where a name holding a newline could hide itself and what follows it.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from amidsl.bundle.e2fs import debugfs, quote
from amidsl.bundle.errors import ImageError
from amidsl.iterate import zip_strict
from amidsl.node.amidsl_node import (
    LINUX_PARTITION,
    SECTOR,
    Partition,
    boot_loader_state,
    read_partition_table,
)
from amidsl.printable import printable_name

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
MAX_ENTRIES = 2_000_000  # far more than a root filesystem holds; a crafted image stops here
MAX_PATH = 4096  # PATH_MAX: no program could open a longer path in the image
MAX_DIRECTORY = 256 * 1024 * 1024  # millions of entries; a larger directory is crafted
_EXTENTS_FL = 0x80000
_FAST_LINK_MAX = 60  # a symlink target shorter than i_block lives in the inode itself
# `imap <N>` says where an inode's bytes are: "\tlocated at block 1059, offset 0x0100".
_IMAP_LINE = re.compile(r"^\tlocated at block (\d+), offset 0x([0-9a-f]+)$", re.MULTILINE)
# `inode_dump -b <N>` prints the inode's block map as "OOOO  hhhh hhhh … ascii" lines (octal offset), only
# once debugfs has read the inode and checked it (its checksum, on a metadata_csum filesystem).
_DUMP_LINE = re.compile(r"^[0-7]+  (?:[0-9a-f]{4} ){7}[0-9a-f]{4}", re.MULTILINE)
_INODE_BYTES = 128  # every ext2/3/4 inode has at least these, and every field read here is in them
_SUPERBLOCK = 1024  # where an ext2/3/4 superblock starts in its filesystem
_LOG_BLOCK_SIZE_AT = 24  # s_log_block_size, in the superblock
_EXT_MAGIC_AT = _SUPERBLOCK + 0x38  # an ext2/3/4 superblock's magic number, 0xEF53


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


def _read_bounded(path: Path, limit: int, image: Path) -> bytes:
    """A file debugfs dumped, refused if a crafted inode made it larger than any real one."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"{image} holds a directory or link target larger than {limit} bytes")
    return data


def _split_output(output: str, command: str, count: int, image: Path) -> list[str]:
    """Split debugfs -f output on its echoed commands; only names in a command could fake one,
    and the commands here hold only inode numbers and a scratch path."""
    chunks = re.split(rf"^debugfs: {command} <\d+>.*$", output, flags=re.MULTILINE)[1:]
    if len(chunks) != count:
        raise ImageError(f"unexpected debugfs output while listing {image}")
    return chunks


def _inode_position(number: int, chunk: str, filesystem: Filesystem, block_size: int) -> int:
    """Where the inode's bytes are in the image file, as `imap` says, once debugfs has read the inode
    without error (`inode_dump -b`)."""
    found = _IMAP_LINE.search(chunk)
    if found is None or _DUMP_LINE.search(chunk) is None:
        raise ImageError(
            f"debugfs could not read inode {number} of {filesystem.debugfs_path} (a damaged inode: its "
            "checksum does not match, or no such inode)"
        )
    block, offset = int(found.group(1)), int(found.group(2), 16)
    return filesystem.offset + block * block_size + offset


def _read_inode(image_file: BinaryIO, image_size: int, position: int, filesystem: Filesystem) -> bytes:
    """The inode's first bytes. debugfs has just read them, so they are in the file; that is checked
    again here rather than trusted, as a crafted group descriptor's far-off inode table would make
    seek() raise (EINVAL, or no offset-sized integer)."""
    if position + _INODE_BYTES > image_size:
        raise ImageError(f"an inode of {filesystem.debugfs_path} lies beyond the end of the image")
    try:
        image_file.seek(position)
        raw = image_file.read(_INODE_BYTES)
    except (OSError, ValueError) as err:  # a read error of the disk; a position past any file: a guard
        raise ImageError(f"cannot read an inode of {filesystem.debugfs_path}: {err}") from err
    if len(raw) < _INODE_BYTES:  # a guard: only a file cut short while it is listed comes here
        raise ImageError(f"an inode of {filesystem.debugfs_path} lies beyond the end of the image")
    return raw


def _block_size(filesystem: Filesystem, image_file: BinaryIO) -> int:
    """The filesystem's block size, from its superblock (s_log_block_size)."""
    image_file.seek(filesystem.offset + _SUPERBLOCK + _LOG_BLOCK_SIZE_AT)
    field = image_file.read(4)
    (log_block_size,) = struct.unpack("<I", field.ljust(4, b"\xff"))
    # A guard only: debugfs has opened this superblock, and it refuses one cut short or with a block
    # size above 64 KiB (a corrupt superblock) before any listing comes here; no image reaches this.
    if log_block_size > 6:
        raise ImageError(f"{filesystem.debugfs_path} has a damaged superblock (a bad block size)")
    return 1024 << log_block_size


@dataclass(frozen=True)
class _Inode:
    mode: int
    uid: int
    gid: int
    size: int
    fast_link: bytes | None


def _inodes(filesystem: Filesystem, numbers: list[int]) -> dict[int, _Inode]:
    """Mode, owner, size (and inline symlink target) of inodes, from their raw bytes.

    debugfs checks each inode and says where it is, and the bytes are read from the file: a whole
    `inode_dump` would print each as a hex dump, hundreds of unbuffered writes per inode."""
    image = filesystem.debugfs_path
    unique = sorted(set(numbers))
    output = debugfs(image, [command for n in unique for command in (f"imap <{n}>", f"inode_dump -b <{n}>")])
    chunks = _split_output(output, "imap", len(unique), image)
    with open(filesystem.file, "rb") as image_file:  # once for the whole batch
        image_size = os.fstat(image_file.fileno()).st_size
        block_size = _block_size(filesystem, image_file)
        inodes = {}
        for number, chunk in zip_strict(unique, chunks):
            position = _inode_position(number, chunk, filesystem, block_size)
            inodes[number] = _parse_inode(_read_inode(image_file, image_size, position, filesystem))
    return inodes


def _parse_inode(raw: bytes) -> _Inode:
    """The fields read from an inode's first bytes (the high halves of size, uid and gid included)."""
    mode, uid_low, size_low = struct.unpack_from("<HHI", raw, 0)
    (gid_low,) = struct.unpack_from("<H", raw, 24)
    (flags,) = struct.unpack_from("<I", raw, 32)
    (size_high,) = struct.unpack_from("<I", raw, 108)
    uid_high, gid_high = struct.unpack_from("<HH", raw, 120)
    size = size_low | size_high << 32
    fast = stat.S_ISLNK(mode) and size < _FAST_LINK_MAX and not flags & _EXTENTS_FL
    return _Inode(
        mode=mode,
        uid=uid_low | uid_high << 16,
        gid=gid_low | gid_high << 16,
        size=size,
        fast_link=raw[40 : 40 + size] if fast else None,
    )


def _directory_entries(data: bytes, image: Path, directory: str) -> list[tuple[int, bytes]]:
    """(inode, name) of every live entry in raw ext2/3/4 directory blocks (hash-tree nodes included:
    they hide inside entries of inode 0 or behind the rec_len of "..")."""
    entries, position = [], 0
    while position + 8 <= len(data):
        inode, rec_len, name_len = struct.unpack_from("<IHB", data, position)
        if rec_len in (0, 65535):  # 64 KiB blocks store a whole-block entry this way
            rec_len = 65536
        if rec_len < 8 + name_len or rec_len % 4 or position + rec_len > len(data):
            raise ImageError(f"directory {directory!r} of {image} is damaged (a bad entry length)")
        name = data[position + 8 : position + 8 + name_len]
        if inode and name not in (b".", b".."):
            entries.append((inode, name))
        position += rec_len
    return entries


def _children(filesystem: Filesystem, directories: list[tuple[int, str]], scratch: Path) -> list[ImageEntry]:
    """The entries of several directories, read from their raw blocks (no name can hide or forge)."""
    image = filesystem.debugfs_path
    debugfs(image, [f"dump <{ino}> {quote(str(scratch / str(ino)))}" for ino, _ in directories])
    named = []
    for ino, parent in directories:
        dumped = scratch / str(ino)
        if not dumped.is_file():
            raise ImageError(f"debugfs could not read directory {parent!r} of {image}")
        for child, name in _directory_entries(_read_bounded(dumped, MAX_DIRECTORY, image), image, parent):
            path = f"{parent.rstrip('/')}/{name.decode('utf-8', 'surrogateescape')}"
            if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
                raise ImageError(f"{image} holds a path longer than {MAX_PATH} bytes; refusing to list it")
            named.append((child, path))
        dumped.unlink()
    inodes = _inodes(filesystem, [child for child, _ in named]) if named else {}
    entries = []
    for child, path in named:
        inode = inodes[child]
        kind = _TYPES.get(stat.S_IFMT(inode.mode), "unknown")
        target = None
        if inode.fast_link is not None:
            target = inode.fast_link.decode("utf-8", "surrogateescape")
        entries.append(
            ImageEntry(
                path=path,
                type=kind,
                mode=stat.S_IMODE(inode.mode),
                uid=inode.uid,
                gid=inode.gid,
                size=0 if kind == "dir" else inode.size,
                inode=child,
                target=target,
            )
        )
    return entries


def _slow_link_targets(image: Path, links: list[ImageEntry], scratch: Path) -> dict[int, str]:
    """Targets of symlinks too long for the inode, dumped from their data block."""
    debugfs(image, [f"dump <{link.inode}> {quote(str(scratch / str(link.inode)))}" for link in links])
    targets = {}
    for link in links:
        raw = _read_bounded(scratch / str(link.inode), MAX_PATH, image)
        targets[link.inode] = raw.decode("utf-8", "surrogateescape")
    return targets


@dataclass(frozen=True)
class DiskLayout:
    """An image's layout: its MBR partitions (none for a bare filesystem) and what boots it."""

    partitions: tuple[Partition, ...]
    boot_loader: str

    @property
    def root(self) -> Partition | None:
        """The partition holding the root filesystem: the first Linux one."""
        return next((p for p in self.partitions if p.kind == LINUX_PARTITION), None)


def disk_layout(image_path: Path | str) -> DiskLayout | None:
    """The partition table and boot loader of a whole-disk image; None for a bare filesystem."""
    with open(image_path, "rb") as f:
        head = f.read(1024 * 1024)
    if head[_EXT_MAGIC_AT : _EXT_MAGIC_AT + 2] == b"\x53\xef":
        return None  # a filesystem image (paravirtual) has its superblock where an MBR disk has GRUB
    partitions = read_partition_table(head[:SECTOR])
    if not partitions:
        return None
    return DiskLayout(tuple(partitions), boot_loader_state(head))


def describe_layout(image_path: Path | str) -> list[str]:
    """The image's layout in words: partition table and boot loader, or a bare filesystem."""
    layout = disk_layout(image_path)
    if layout is None:
        return ["layout: a bare filesystem, no partition table (a paravirtual image)"]
    lines = [f"layout: a disk with an MBR partition table ({len(layout.partitions)} partition(s))"]
    for p in layout.partitions:
        kind = "Linux (0x83)" if p.kind == LINUX_PARTITION else f"type 0x{p.kind:02x}"
        boot = ", bootable" if p.bootable else ""
        size = p.sectors * SECTOR // (1024 * 1024)
        lines.append(
            f"partition {p.number}: {kind}{boot}, from sector {p.start}, {p.sectors} sectors ({size} MiB)"
        )
    lines.append(f"boot loader: {layout.boot_loader}")
    return lines


@dataclass(frozen=True)
class Filesystem:
    """An image's root filesystem: the image file, and where in it the filesystem starts."""

    file: Path
    offset: int = 0  # bytes: the root partition's start in a disk, 0 for a bare filesystem

    @property
    def debugfs_path(self) -> Path:
        """What debugfs opens: e2fsprogs' unix I/O manager takes an offset after the file name."""
        return Path(f"{self.file}?offset={self.offset}") if self.offset else self.file


def filesystem_of(image: Path) -> Filesystem:
    """The image's root filesystem: the whole file, or its root partition."""
    layout = disk_layout(image)
    if layout is None or layout.root is None:
        return Filesystem(image)
    return Filesystem(image, layout.root.start * SECTOR)


def list_image(image_path: Path | str) -> list[ImageEntry]:
    """Every entry of an ext2/3/4 image or of a disk's root partition (root first, sorted by path)."""
    image = Path(image_path)
    if not image.is_file():
        raise ImageError(f"image {image} does not exist or is not a file")
    filesystem = filesystem_of(image)
    image = filesystem.debugfs_path
    root = _inodes(filesystem, [ROOT_INODE])[ROOT_INODE]
    if not stat.S_ISDIR(root.mode):
        raise ImageError(f"cannot read the root directory of {image}")
    entries = [ImageEntry("/", "dir", stat.S_IMODE(root.mode), root.uid, root.gid, 0, ROOT_INODE)]
    visited = {ROOT_INODE}
    level = [(ROOT_INODE, "/")]
    with tempfile.TemporaryDirectory() as scratch:
        while level:
            children = _children(filesystem, level, Path(scratch))
            entries.extend(children)
            if len(entries) > MAX_ENTRIES:
                raise ImageError(f"{image} holds more than {MAX_ENTRIES} entries; refusing to list it")
            # A directory reached twice (a hard-linked directory, a cycle) is listed but not entered again.
            level = []
            for entry in children:
                if entry.type == "dir" and entry.inode not in visited:
                    visited.add(entry.inode)
                    level.append((entry.inode, entry.path))
        slow = [e for e in entries if e.type == "symlink" and e.target is None]
        if slow:
            targets = _slow_link_targets(image, slow, Path(scratch))
            entries = [replace(e, target=targets[e.inode]) if e.inode in targets else e for e in entries]
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
    """The one listing format (image-ls and simulate --inspect): type+mode, uid:gid, size, path.

    Names come from the image: control characters are escaped so none can rewrite the terminal.
    """
    link = f" -> {printable_name(entry.target)}" if entry.target is not None else ""
    owner = f"{entry.uid}:{entry.gid}"
    kind = _TYPE_LETTERS.get(entry.type, "?")
    return f"{kind}{entry.mode:04o} {owner:>11} {entry.size:>12} {printable_name(entry.path)}{link}"
