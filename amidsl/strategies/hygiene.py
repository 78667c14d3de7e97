"""What the preview says of image hygiene: what a shared image must not carry, and what was kept.

The items themselves (patterns, treatments, reasons) are the node program's HYGIENE table, which the
node applies in native builds; ec2-bundle-vol cannot apply them (the ami-tools preview says so).
"""

from __future__ import annotations

from amidsl.model.actions import PlanWarning
from amidsl.node.amidsl_node import (
    DEFAULT_FILTER,
    HYGIENE,
    HYGIENE_EMPTY_DIR,
    HYGIENE_EMPTY_FILE,
    HYGIENE_LEAVE_OUT,
    HygieneItem,
    hygiene_items,
)
from amidsl.settings import AmiSettings


def applied_items(s: AmiSettings) -> list[HygieneItem]:
    """The hygiene items this build applies (all but those kept with keep_<item> = true)."""
    return hygiene_items(s.hygiene_keep)


def kept_items(s: AmiSettings) -> list[HygieneItem]:
    """The hygiene items this build keeps in the image."""
    return [item for item in HYGIENE if item.name in s.hygiene_keep]


def hygiene_notes(s: AmiSettings, how: str) -> list[PlanWarning]:
    """The preview's notes on image hygiene: what is done (how: by whom), and a warning per item kept."""
    applied = applied_items(s)
    emptied = [i.name for i in applied if i.treatment == HYGIENE_EMPTY_FILE]
    empty_dirs = [p for i in applied if i.treatment == HYGIENE_EMPTY_DIR for p in i.patterns]
    left_out = [i.name for i in applied if i.treatment == HYGIENE_LEAVE_OUT]
    parts = []
    if left_out:
        parts.append(f"left out: {', '.join(left_out)}")
    if emptied:
        parts.append(f"kept as empty files (same owner and mode): {', '.join(emptied)}")
    if empty_dirs:
        parts.append(f"kept as empty directories: {', '.join(empty_dirs)}")
    notes = [
        PlanWarning(
            f"image hygiene ({how}): " + "; ".join(parts) + ". The filter's includes keep "
            f"{', '.join(s.includes)}"
            + (f"; exclude_patterns leave out {', '.join(s.exclude_patterns)}" if s.exclude_patterns else "")
            + ". The node check (install) says how instances will get SSH host keys and their login "
            "key (cloud-init or EC2 Instance Connect in the volume), and warns when nothing installs the "
            "launch key pair. The result lists what each item took",
            note=True,
        )
    ]
    for item in kept_items(s):
        notes.append(
            PlanWarning(
                f"keep_{item.name} = true: the image keeps {item.what.split(':')[0]}; every "
                "instance launched from it, and everyone it is shared with, gets them. The filter still "
                f"leaves out what it matches ({', '.join(DEFAULT_FILTER)}): add such a path to `includes` "
                "to keep it too"
            )
        )
    return notes


def sharing_warning(s: AmiSettings) -> list[PlanWarning]:
    """A loud warning when an image that keeps hygiene items is shared with other accounts."""
    kept = [f"keep_{item.name}" for item in kept_items(s)]
    if not kept or not (s.public_image or s.launch_permissions):
        return []
    who = "every AWS account" if s.public_image else f"the accounts {', '.join(s.launch_permissions)}"
    return [
        PlanWarning(
            f"the image is shared with {who} and keeps what image hygiene would leave out "
            f"({', '.join(kept)}): they can read it all; remove those settings or the sharing"
        )
    ]
