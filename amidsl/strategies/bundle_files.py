"""What a build leaves in destination_dir (parts, image file), and the removals of both cleanups."""

from __future__ import annotations

from amidsl.model.actions import Remove
from amidsl.settings import AmiSettings


def image_file(s: AmiSettings) -> str:
    """The image file a bundler makes (and may leave behind): `<destination_dir>/<prefix>`."""
    return f"{s.destination_dir.rstrip('/')}/{s.prefix}"


def parts_removal(s: AmiSettings) -> Remove:
    """Remove the bundle parts `<prefix>.part.*` from destination_dir."""
    return Remove(s.destination_dir, matching=f"{s.prefix}.part.*", description="remove the bundle parts")


def image_removal(s: AmiSettings, bundler: str) -> Remove:
    """Remove the image file, in case `bundler` (what made it) left it behind."""
    return Remove(image_file(s), description=f"remove the image file if {bundler} left it")
