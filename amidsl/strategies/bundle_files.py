"""What a build leaves in destination_dir (parts, image file) and the cleanup both strategies share."""

from __future__ import annotations

from amidsl.actions import Remove
from amidsl.settings import AmiSettings


def image_file(s: AmiSettings) -> str:
    """The image file a bundler makes (and may leave behind): `<destination_dir>/<prefix>`."""
    return f"{s.destination_dir.rstrip('/')}/{s.prefix}"


def cleanup(s: AmiSettings, tools: Remove, bundler: str, manifest: str | None = None) -> list[Remove]:
    """Remove the tools the build put on the node, then the bundle files `bundler` wrote on it."""
    return [
        tools,
        Remove(s.destination_dir, matching=f"{s.prefix}.part.*", description="remove the bundle parts"),
        *([Remove(manifest, description="remove the bundle manifest")] if manifest else []),
        Remove(image_file(s), description=f"remove the image file if {bundler} left it"),
    ]
