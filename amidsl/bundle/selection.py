"""What of a source tree goes into an image: ec2-bundle-vol's exclusions, filter and includes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from amidsl.node import amidsl_node as node
from amidsl.node.amidsl_node import (
    ALWAYS_EXCLUDED,
    DEFAULT_FILTER,
    LOCAL_FS_TYPES,
    image_path_of,
    non_local_mounts,
)

# The rules themselves live in the node program, which applies them on the node in native builds.
__all__ = [
    "ALWAYS_EXCLUDED",
    "DEFAULT_FILTER",
    "LOCAL_FS_TYPES",
    "LeftOut",
    "Reason",
    "SourceEntry",
    "image_path_of",
    "non_local_mounts",
    "select_entries",
]


class Reason(str, Enum):
    """Why something was left out of an image."""

    def __str__(self) -> str:
        return str(self.value)

    ALWAYS_EXCLUDED = node.LEFT_OUT_ALWAYS
    FILTER = node.LEFT_OUT_FILTER
    EXCLUSION = node.LEFT_OUT_EXCLUSION
    IMAGE_FILE = node.LEFT_OUT_IMAGE_FILE
    NON_LOCAL_MOUNT = node.LEFT_OUT_NON_LOCAL
    SOCKET = node.LEFT_OUT_SOCKET
    UNREADABLE = node.LEFT_OUT_UNREADABLE
    UNADDRESSABLE_NAME = node.LEFT_OUT_NEWLINE
    HYGIENE = node.LEFT_OUT_HYGIENE
    EMPTIED = node.LEFT_OUT_EMPTIED
    EXCLUSION_PATTERN = node.LEFT_OUT_PATTERN


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


def select_entries(
    source: Path,
    exclusions: Iterable[str],
    includes: Iterable[str],
    no_filter: bool,
    image: Path,
    own_files: Iterable[Path],
) -> tuple[list[SourceEntry], list[LeftOut]]:
    """Walk the source tree and decide, entry by entry, what goes into the image."""

    def identity(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    own_ids = {i for i in map(identity, own_files) if i is not None}
    chosen: list[SourceEntry] = []
    left_out: list[LeftOut] = []
    for entry in node.walk_volume(str(source), exclusions, includes, no_filter, identity(image), own_ids):
        if isinstance(entry, node.Skipped):
            left_out.append(LeftOut(entry.path, Reason(entry.reason), entry.rule))
        else:
            chosen.append(SourceEntry(entry.path, Path(entry.source), entry.st))
    return chosen, left_out
