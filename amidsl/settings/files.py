"""Settings files: the TOML document, its `[ami]` table, local files relative to the file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from amidsl.settings.schema import Problem, SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the `[ami]` table of a TOML settings file; relative local_file paths are made absolute."""
    return ami_table(read_settings_file(path), path)


def read_settings_file(
    path: str | os.PathLike[str], given_by: str = "--config", missing_fix: str = "pass an existing TOML file"
) -> dict[str, Any]:
    """The whole TOML document of a settings file; a missing, unreadable or invalid file: SettingsError.

    `given_by` is where the path came from (an option, an environment variable), which the problems name;
    `missing_fix` is the fix for a file that does not exist.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            [Problem(given_by, f"file {str(path)!r} does not exist", missing_fix)], origin=str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(
            given_by,
            f"cannot read {str(path)!r} ({exc.__class__.__name__})",
            "make the file readable UTF-8 text",
        )
        raise SettingsError([problem], origin=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        problem = Problem(given_by, f"not valid TOML: {exc}", "correct the TOML syntax there")
        raise SettingsError([problem], origin=str(path)) from None


def ami_table(document: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `[ami]` table of a settings file read from path; relative local_file paths made absolute."""
    table = document.get("ami")
    if not isinstance(table, dict):
        problem = Problem(
            "[ami]", "the file has no [ami] table", "put the settings under an [ami] table header"
        )
        raise SettingsError([problem], origin=str(path))
    return anchor_local_files(table, Path(path).parent)


def anchor_local_files(table: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve relative `local_file` entries against the settings file's folder."""
    anchored = dict(table)
    for key, value in table.items():
        if isinstance(value, dict):
            source = dict(value)
            for name in ("local_file", "local-file"):
                local = source.get(name)
                if isinstance(local, str) and local and not os.path.isabs(local):
                    source[name] = str(base / os.path.expanduser(local))
            anchored[key] = source
    return anchored
