"""Build an ext4 filesystem image of a directory tree, as ec2-bundle-vol does, without root.

The tree is copied (sparse-aware) into a private staging directory with ec2-bundle-vol's exclusions
applied, `mke2fs -d` turns the staging tree into a filesystem, and debugfs then sets the numeric
owners and modes the copy could not keep without root, and creates device nodes.
"""

import fnmatch
import math
import os
import posixpath
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from amidsl.bundle.e2fs import debugfs, quote, tool
from amidsl.bundle.errors import ImageError
from amidsl.bundle.ls import list_image
from amidsl.bundle.tarstream import data_regions

ALWAYS_EXCLUDED = ("/dev", "/media", "/mnt", "/proc", "/sys")
DEFAULT_FILTER = (
    "*/#*#",
    "*/.#*",
    "*.sw",
    "*.swo",
    "*.swp",
    "*~",
    "*.pem",
    "*.priv",
    "*id_rsa*",
    "*id_dsa*",
    "*.gpg",
    "*.jks",
    "*/.ssh/authorized_keys",
    "*/.bash_history",
)
MAX_SIZE_MB = 10240  # the largest image an S3-backed AMI may have
BLOCK_SIZE = 4096
INODE_SIZE = 256
# Filesystems on local disks. Mounts of anything else under the source (network filesystems,
# tmpfs, proc, overlays, squashfs…) are left out, as ec2-bundle-vol leaves out non-local mounts.
LOCAL_FS_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "jfs", "reiserfs", "f2fs", "vfat", "msdos", "exfat"}
)


class Reason(StrEnum):
    """Why something was left out of an image."""

    ALWAYS_EXCLUDED = "always-excluded directory"
    FILTER = "filter pattern"
    EXCLUSION = "caller exclusion"
    IMAGE_FILE = "the image file itself"
    NON_LOCAL_MOUNT = "non-local mount"
    SOCKET = "socket (its program recreates it at run time)"
    UNREADABLE = "unreadable"
    UNADDRESSABLE_NAME = "name contains a newline, which debugfs cannot address"


@dataclass(frozen=True)
class LeftOut:
    """A path kept out of the image, why, and which rule (directory, pattern, path) matched."""

    path: str
    reason: Reason
    rule: str


@dataclass(frozen=True)
class ImageReport:
    """What build_image made: the image, its size, how many entries it holds, what it left out."""

    image_path: Path
    size_mb: int
    entries: int
    left_out: tuple[LeftOut, ...]


@dataclass(frozen=True)
class _Entry:
    """A source entry to put in the image: image path, source path, its lstat."""

    path: str
    source: Path
    st: os.stat_result


def _image_path(*parts: str) -> str:
    return posixpath.normpath("/" + "/".join(p.strip("/") for p in parts if p.strip("/")))


def _unescape_mount_point(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in mount points as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def non_local_mounts(source: Path, mounts_table: str | None = None) -> dict[str, str]:
    """Mount points under source whose filesystem is not a local disk's: image path → type."""
    if mounts_table is None:
        try:
            mounts_table = Path("/proc/self/mounts").read_text(errors="surrogateescape")
        except OSError:
            return {}
    root = os.path.realpath(source).rstrip("/")
    found: dict[str, str] = {}
    for line in mounts_table.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] in LOCAL_FS_TYPES:
            continue
        point = _unescape_mount_point(fields[1])
        if point.startswith(root + "/"):
            found[_image_path(point[len(root) :])] = fields[2]
    return found


def _select(
    source: Path,
    exclusions: Iterable[str],
    includes: Iterable[str],
    no_filter: bool,
    image: Path,
    own_files: Iterable[Path],
) -> tuple[list[_Entry], list[LeftOut]]:
    """Walk the source tree and decide, entry by entry, what goes into the image."""
    excluded = {_image_path(e) for e in exclusions}
    included = [_image_path(i) if i.startswith("/") else i for i in includes]

    def identity(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    # Files are recognised by device and inode: cheaper than resolving every path, and immune
    # to the different spellings (symlinks, ..) one file can have.
    image_id = identity(image)
    own_ids = {identity(p) for p in own_files} - {None}
    mounts = non_local_mounts(source)
    chosen: list[_Entry] = []
    left_out: list[LeftOut] = []

    def filtered_by(path: str) -> str | None:
        if no_filter or any(path == i or fnmatch.fnmatchcase(path, i) for i in included):
            return None
        return next((p for p in DEFAULT_FILTER if fnmatch.fnmatchcase(path, p)), None)

    pending = [(source, "/")]
    while pending:
        directory, image_dir = pending.pop()
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            left_out.append(LeftOut(image_dir, Reason.UNREADABLE, exc.strerror or str(exc)))
            continue
        for child in children:
            path = _image_path(image_dir, child.name)
            st = child.stat(follow_symlinks=False)
            pattern = filtered_by(path)
            file_id = (st.st_dev, st.st_ino)
            if file_id in own_ids:
                continue  # this build's own staging tree and unfinished image
            if path in excluded:
                left_out.append(LeftOut(path, Reason.EXCLUSION, path))
            elif file_id == image_id:
                left_out.append(LeftOut(path, Reason.IMAGE_FILE, path))
            elif "\n" in child.name:
                left_out.append(LeftOut(path, Reason.UNADDRESSABLE_NAME, repr(child.name)))
            elif stat.S_ISSOCK(st.st_mode):
                left_out.append(LeftOut(path, Reason.SOCKET, path))
            elif pattern is not None:
                left_out.append(LeftOut(path, Reason.FILTER, pattern))
            else:
                chosen.append(_Entry(path, Path(child.path), st))
                if not stat.S_ISDIR(st.st_mode):
                    continue
                # Mount points and always-excluded directories stay, empty: the system mounts
                # something there at boot.
                if path in ALWAYS_EXCLUDED:
                    left_out.append(LeftOut(path + "/*", Reason.ALWAYS_EXCLUDED, path))
                elif path in mounts:
                    left_out.append(LeftOut(path + "/*", Reason.NON_LOCAL_MOUNT, mounts[path]))
                else:
                    pending.append((Path(child.path), path))
    return chosen, left_out


def _copy_sparse(source: Path, target: Path, size: int) -> None:
    """Copy a regular file's data regions only, so that holes stay holes."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for region in data_regions(src, size):
                offset, end = region.offset, region.offset + region.length
                while offset < end:
                    try:
                        copied = os.copy_file_range(src, dst, end - offset, offset, offset)
                    except OSError:
                        data = os.pread(src, min(end - offset, 1 << 20), offset)
                        copied = os.pwrite(dst, data, offset) if data else 0
                    if copied == 0:
                        break  # the file shrank while being copied
                    offset += copied
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


@dataclass(frozen=True)
class _Staged:
    """The staging tree: entries that made it, device nodes still to create, bytes allocated."""

    entries: list[_Entry]
    devices: list[_Entry]
    allocated: int


def _stage(chosen: list[_Entry], staging: Path, left_out: list[LeftOut]) -> _Staged:
    """Recreate the chosen entries under staging (devices are made later, in the image)."""
    staged: list[_Entry] = []
    devices: list[_Entry] = []
    first_link: dict[tuple[int, int], Path] = {}
    allocated = 0
    unreadable_dirs: list[str] = []
    for entry in chosen:
        if any(entry.path.startswith(d + "/") for d in unreadable_dirs):
            continue
        target = staging / entry.path.lstrip("/")
        st = entry.st
        try:
            if stat.S_ISDIR(st.st_mode):
                target.mkdir(mode=0o700)
                allocated += BLOCK_SIZE
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(entry.source)
                os.symlink(link, target)
                allocated += BLOCK_SIZE if len(os.fsencode(link)) >= 60 else 0
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in first_link:
                    os.link(first_link[key], target)  # keep hard links as hard links
                else:
                    _copy_sparse(entry.source, target, st.st_size)
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
        except PermissionError as exc:
            left_out.append(LeftOut(entry.path, Reason.UNREADABLE, exc.strerror or str(exc)))
            if stat.S_ISDIR(st.st_mode):
                unreadable_dirs.append(entry.path)
            continue
        staged.append(entry)
    # Adding entries changed the directories' times; put the source's back, deepest first.
    for entry in reversed(staged):
        if stat.S_ISDIR(entry.st.st_mode):
            target = staging / entry.path.lstrip("/")
            os.utime(target, ns=(entry.st.st_atime_ns, entry.st.st_mtime_ns))
    return _Staged(staged, devices, allocated)


def _journal_bytes(size: int) -> int:
    """The journal mke2fs makes for a filesystem of this size (ext2fs_default_journal_size)."""
    blocks = size // BLOCK_SIZE
    for limit, journal_blocks in ((32768, 1024), (262144, 4096), (524288, 8192), (4194304, 16384)):
        if blocks < limit:
            return journal_blocks * BLOCK_SIZE
    return 32768 * BLOCK_SIZE


def _inode_count(entries: int, size_mb: int) -> int:
    return max(entries + entries // 4 + 64, size_mb * 1024 * 1024 // 16384)


def estimate_size_mb(allocated: int, entries: int) -> int:
    """A filesystem size (MB) that holds this much data and these many inodes, with headroom."""
    inodes = entries + entries // 4 + 64
    # Metadata (bitmaps, descriptors, extent blocks) is a few percent; 5% is reserved for root.
    payload = allocated * 1.05 + inodes * INODE_SIZE + 8 * 1024 * 1024
    size = payload / 0.92
    size += _journal_bytes(int(size))
    return max(16, math.ceil(size / (1024 * 1024)))


def _mke2fs(staging: Path, image: Path, size_mb: int, entries: int, options: Sequence[str]) -> str:
    image.unlink(missing_ok=True)
    argv = [
        tool("mke2fs"),
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        str(BLOCK_SIZE),
        "-N",
        str(_inode_count(entries, size_mb)),
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
    if size_mb is not None and not 1 <= size_mb <= MAX_SIZE_MB:
        raise ImageError(f"size_mb is {size_mb}; an S3-backed AMI image must be 1..{MAX_SIZE_MB} MB")
    if not image.parent.is_dir():
        raise ImageError(f"directory {image.parent} for the image does not exist; create it first")
    building = image.with_name(f".{image.name}.building")
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=f".{image.name}.staging-") as tmp:
        staging = Path(tmp)
        chosen, left_out = _select(
            source, exclusions, includes, no_filter, image, own_files=(building, staging)
        )
        staged = _stage(chosen, staging, left_out)
        entries = len(staged.entries) + len(staged.devices)
        size = size_mb or estimate_size_mb(staged.allocated, entries)
        # An estimate can fall short on unusual trees; grow it rather than fail.
        for _attempt in range(1 if size_mb else 3):
            error = _mke2fs(staging, building, size, entries, mke2fs_options)
            if not error or size_mb:
                break
            size = math.ceil(size * 1.5)
        if error:
            building.unlink(missing_ok=True)
            raise ImageError(
                f"mke2fs could not build a {size} MB image of {source}: {error}; "
                "pass a larger size_mb or exclude more"
            )
        try:
            _fix_up(building, staged, os.lstat(source))
        except BaseException:
            building.unlink(missing_ok=True)
            raise
    os.replace(building, image)
    return ImageReport(image, size, entries, tuple(sorted(left_out, key=lambda x: x.path)))
