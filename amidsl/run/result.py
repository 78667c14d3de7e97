"""A build's result as data: the facts `amidsl build --json` and `amidsl simulate --json` share.

Both documents carry these fields (each command adds its own: simulate its transcript and image, build
the node it ran on); within a schema version fields are only ever added:

    {"schema": str, "amidsl_version": str,
     "config": [path] (every settings file, in the order they were layered, as given; the built-in
               example's path when no file was found),
     "config_from": "--config", "$AMIDSL_CONFIG", "./amidsl.toml" or "built-in example",
     "error": str or null,
     "image_id": str or null, "image_name": str, "images": {region: image id} (the image and its copies),
     "copies": {region: image id}, "bundle": "s3://BUCKET/PATH/PREFIX.manifest.xml",
     "parts": null (not known: ami-tools) or [{"filename", "size", "sha1", "md5"}],
     "timings": {phase: seconds} (the phases that finished), "settings_digest": "sha256:HEX",
     "snapshot_id": str or null (an EBS-backed build's snapshot, once uploaded, or one a failed upload
                    left: the error says whether it holds the whole disk)}

A failed build's document says what the run made before it failed, in the same fields: the image (and
its copies) when the failure came after RegisterImage, the snapshot once uploaded, the bundle's parts
once made, and the timings of the phases that finished; "error" says what failed.

The settings digest is the SHA-256 of the settings as the script's header shows them (public_settings):
secrets appear there only as where they come from, so the digest never depends on a secret's value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from amidsl import __version__
from amidsl.render.summary import public_settings
from amidsl.run.runner import BuildResult
from amidsl.settings import AmiSettings
from amidsl.strategies import strategy_of


def settings_digest(settings: AmiSettings) -> str:
    """sha256:HEX of the resolved settings without secrets: two builds with the same digest had the same
    settings."""
    text = json.dumps(public_settings(settings), ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def result_document(
    schema: str,
    settings: AmiSettings,
    result: BuildResult | None,
    error: str | None,
    config: Sequence[str],
    config_from: str,
) -> dict[str, Any]:
    """The shared fields of a build's JSON result: `result` is the build's, or what a failed run made
    (BuildError.made), or None when the build failed before any phase ran; `config` the settings files,
    first to last, and `config_from` where their names came from."""
    image_id = result.image_id if result else None
    copies = dict(result.copies) if result else {}
    # An EBS-backed build's image comes from the snapshot it uploaded (once it did), not an S3 bundle.
    snapshot_id = result.settings.snapshot_id if result and result.settings else None
    return {
        "schema": schema,
        "amidsl_version": __version__,
        "config": list(config),
        "config_from": config_from,
        "error": error,
        "image_id": image_id,
        "image_name": settings.image_name,
        "images": ({settings.region: image_id} if image_id else {}) | copies,
        "copies": copies,
        "bundle": f"s3://{settings.s3_manifest_path}" if strategy_of(settings).uses_bucket else None,
        "snapshot_id": snapshot_id,
        "parts": result.parts if result else None,
        "timings": dict(result.timings) if result else {},
        "settings_digest": settings_digest(settings),
    }


def registered_lines(settings: AmiSettings, image_id: str, copies: dict[str, str]) -> list[str]:
    """The sentences saying what a build registered: the image, its bundle, its copies."""
    bundle = f"s3://{settings.s3_manifest_path}"
    source = f"the snapshot {settings.snapshot_id}" if settings.snapshot_id else bundle
    lines = [f"registered {image_id} ({settings.image_name}) from {source}"]
    return lines + [f"copied it to {region} as {copy}" for region, copy in copies.items()]
