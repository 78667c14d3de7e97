"""Build an ext4 filesystem image of a directory tree, as ec2-bundle-vol does, without root.

The tree is copied (sparse-aware) into a private staging directory with ec2-bundle-vol's exclusions
applied, `mke2fs -d` turns the staging tree into a filesystem, and debugfs then sets the numeric
owners and modes the copy could not keep without root, and creates device nodes. The walk and the
copy reach every entry as the node program does: through directory descriptors checked against what
the walk saw, so that nothing a symbolic link swapped in leads to gets into the image.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import posixpath
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from amidsl.bundle.e2fs import debugfs, quote, tool
from amidsl.bundle.errors import ImageError
from amidsl.bundle.ls import list_image
from amidsl.bundle.selection import (
    ALWAYS_EXCLUDED,
    DEFAULT_FILTER,
    LeftOut,
    Reason,
    SourceEntry,
    select_entries,
)
from amidsl.node.amidsl_node import (
    BLOCK_SIZE,
    MAX_IMAGE_MB,
    DirectoryChain,
    copy_sparse,
    create_private_file,
    estimate_size_mb,
    inode_count,
    open_checked,
)

__all__ = [
    "ALWAYS_EXCLUDED",
    "DEFAULT_FILTER",
    "MAX_IMAGE_MB",
    "ImageReport",
    "LeftOut",
    "Reason",
    "build_image",
    "estimate_size_mb",
]


@dataclass(frozen=True)
class ImageReport:
    """What build_image made: the image, its size, how many entries it holds, what it left out."""

    image_path: Path
    size_mb: int
    entries: int
    left_out: tuple[LeftOut, ...]


# Why reading a source entry may fail: no permission, or it is not the entry the walk saw any more (a
# symbolic link, another file, a FIFO or socket in its place). Anything else (a full disk) is an error.
_UNREADABLE = frozenset({errno.EACCES, errno.EPERM, errno.ELOOP, errno.ESTALE, errno.ENOTDIR, errno.ENXIO})


@dataclass(frozen=True)
class _Staged:
    """The staging tree: entries that made it, device nodes still to create, bytes allocated."""

    entries: list[SourceEntry]
    devices: list[SourceEntry]
    allocated: int


def _stage(chosen: list[SourceEntry], source: Path, staging: Path, left_out: list[LeftOut]) -> _Staged:
    """Recreate the chosen entries under staging (devices are made later, in the image).

    Each entry is reached through its directory's descriptor, opened as the walk saw it (the node
    program's DirectoryChain), and a file is copied only if it is the one the walk saw: a directory or
    file swapped for a symbolic link since the walk is left out as unreadable, never followed.
    """
    staged: list[SourceEntry] = []
    devices: list[SourceEntry] = []
    first_link: dict[tuple[int, int], Path] = {}
    allocated = 0
    failed_dirs: list[str] = []
    seen: dict[str, os.stat_result] = {}  # image path -> the walk's lstat of each staged directory
    directories = DirectoryChain(str(source), seen)
    try:
        for entry in chosen:
            if any(entry.path.startswith(d + "/") for d in failed_dirs):
                continue
            target = staging / entry.path.lstrip("/")
            parent, _, name = entry.path.rpartition("/")
            st = entry.st
            try:
                dir_fd = directories.open(parent or "/")
                if stat.S_ISDIR(st.st_mode):
                    target.mkdir(mode=0o700)
                    seen[entry.path] = st
                    allocated += BLOCK_SIZE
                elif stat.S_ISLNK(st.st_mode):
                    link = os.readlink(name, dir_fd=dir_fd)
                    os.symlink(link, target)
                    allocated += BLOCK_SIZE if len(os.fsencode(link)) >= 60 else 0
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in first_link:
                        os.link(first_link[key], target)  # keep hard links as hard links
                    else:
                        # O_NONBLOCK: a file swapped for a FIFO is refused, not waited on.
                        fd = open_checked(name, st, dir_fd, os.O_RDONLY | os.O_NONBLOCK)
                        try:
                            copy_sparse(fd, target, st.st_size)
                        finally:
                            os.close(fd)
                        first_link[key] = target
                        allocated += os.lstat(target).st_blocks * 512
                        os.chmod(target, stat.S_IMODE(st.st_mode) | stat.S_IRUSR)
                elif stat.S_ISFIFO(st.st_mode):
                    os.mkfifo(target, 0o600)
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    devices.append(entry)
                    continue
                else:
                    continue
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the walk
            except OSError as exc:
                if exc.errno not in _UNREADABLE:
                    raise
                left_out.append(LeftOut(entry.path, Reason.UNREADABLE, exc.strerror or str(exc)))
                if stat.S_ISDIR(st.st_mode):
                    failed_dirs.append(entry.path)
                continue
            staged.append(entry)
    finally:
        directories.close()
    # Adding entries changed the directories' times; put the source's back, deepest first.
    for entry in reversed(staged):
        if stat.S_ISDIR(entry.st.st_mode):
            target = staging / entry.path.lstrip("/")
            os.utime(target, ns=(entry.st.st_atime_ns, entry.st.st_mtime_ns))
    return _Staged(staged, devices, allocated)


def _mke2fs(staging: Path, image: Path, size_mb: int, entries: int, options: Sequence[str]) -> str:
    with contextlib.suppress(FileNotFoundError):
        image.unlink()
    # Made here, 0600, rather than by mke2fs with whatever mode the umask leaves: it holds the tree's
    # files, root-only ones too.
    os.close(create_private_file(str(image)))
    argv = [
        tool("mke2fs"),
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        str(BLOCK_SIZE),
        "-N",
        str(inode_count(entries, size_mb)),
        *options,
        "-d",
        str(staging),
        str(image),
        f"{size_mb}M",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return ""
    return "; ".join(line.strip() for line in (result.stderr or result.stdout).splitlines())


def _fix_up(image: Path, staged: _Staged, root_st: os.stat_result) -> None:
    """Create device nodes and set the source's numeric owners and modes inside the image."""
    if staged.devices:
        inodes = {e.path: e.inode for e in list_image(image)}
        commands = []
        for device in staged.devices:
            parent, name = posixpath.split(device.path)
            kind = "c" if stat.S_ISCHR(device.st.st_mode) else "b"
            major, minor = os.major(device.st.st_rdev), os.minor(device.st.st_rdev)
            commands += [f"cd <{inodes[parent]}>", f"mknod {quote(name)} {kind} {major} {minor}"]
        debugfs(image, commands, write=True)
    in_image = {e.path: e for e in list_image(image)}
    commands = []
    for path, st in [("/", root_st), *((e.path, e.st) for e in (*staged.entries, *staged.devices))]:
        current = in_image.get(path)
        if current is None:
            raise ImageError(f"{path} is missing from the image after mke2fs; this is a bug")
        ino = current.inode
        if current.uid != st.st_uid:
            commands.append(f"sif <{ino}> uid {st.st_uid}")
        if current.gid != st.st_gid:
            commands.append(f"sif <{ino}> gid {st.st_gid}")
        if current.mode != stat.S_IMODE(st.st_mode):
            commands.append(f"sif <{ino}> mode 0{st.st_mode:o}")
    debugfs(image, commands, write=True)


def build_image(
    source_dir: Path | str,
    image_path: Path | str,
    *,
    size_mb: int | None = None,
    exclusions: Iterable[str] = (),
    includes: Iterable[str] = (),
    no_filter: bool = False,
    mke2fs_options: Sequence[str] = (),
) -> ImageReport:
    """Make an ext4 image of source_dir (taken as /) with ec2-bundle-vol's exclusions."""
    source, image = Path(source_dir), Path(image_path)
    if not source.is_dir():
        raise ImageError(f"source directory {source} does not exist or is not a directory")
    if size_mb is not None and not 1 <= size_mb <= MAX_IMAGE_MB:
        raise ImageError(f"size_mb is {size_mb}; an S3-backed AMI image must be 1..{MAX_IMAGE_MB} MB")
    if not image.parent.is_dir():
        raise ImageError(f"directory {image.parent} for the image does not exist; create it first")
    # The staging tree and the unfinished image live in a private (0700) directory beside the image,
    # so that no other user can read them or plant a link at a name the build uses.
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=f".{image.name}.staging-") as tmp:
        private = Path(tmp)
        staging, building = private / "root", private / f"{image.name}.building"
        staging.mkdir(mode=0o700)
        chosen, left_out = select_entries(
            source, exclusions, includes, no_filter, image, own_files=(private,)
        )
        staged = _stage(chosen, source, staging, left_out)
        entries = len(staged.entries) + len(staged.devices)
        size = size_mb or estimate_size_mb(staged.allocated, entries)
        # An estimate can fall short on unusual trees; grow it rather than fail.
        for _attempt in range(1 if size_mb else 3):
            error = _mke2fs(staging, building, size, entries, mke2fs_options)
            if not error or size_mb:
                break
            size = math.ceil(size * 1.5)
        if error:
            raise ImageError(
                f"mke2fs could not build a {size} MB image of {source}: {error}; "
                "pass a larger size_mb or exclude more"
            )
        _fix_up(building, staged, os.lstat(source))
        os.replace(building, image)
    return ImageReport(image, size, entries, tuple(sorted(left_out, key=lambda x: x.path)))
