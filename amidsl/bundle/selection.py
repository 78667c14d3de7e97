"""What of a source tree goes into an image: ec2-bundle-vol's exclusions, filter and includes."""

import fnmatch
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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
class SourceEntry:
    """A source entry that goes into the image: its path there, its path here, its lstat."""

    path: str
    source: Path
    st: os.stat_result


def image_path_of(*parts: str) -> str:
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
            found[image_path_of(point[len(root) :])] = fields[2]
    return found


def select_entries(
    source: Path,
    exclusions: Iterable[str],
    includes: Iterable[str],
    no_filter: bool,
    image: Path,
    own_files: Iterable[Path],
) -> tuple[list[SourceEntry], list[LeftOut]]:
    """Walk the source tree and decide, entry by entry, what goes into the image."""
    excluded = {image_path_of(e) for e in exclusions}
    included = [image_path_of(i) if i.startswith("/") else i for i in includes]

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
    chosen: list[SourceEntry] = []
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
            path = image_path_of(image_dir, child.name)
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
                chosen.append(SourceEntry(path, Path(child.path), st))
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
