"""Settings for an AMI build: the settings table, its readers and rules, and settings files.

A port of the ami-crate settings schema with snake_case keys (kebab-case accepted as aliases). `resolve`
turns a user's mapping into a frozen, finalised `AmiSettings`, or raises `SettingsError` listing every
problem found, each naming the setting, the bad value (never a secret) and the fix.

The modules: table.py (one row per setting), readers.py and checks.py (what a single setting must be),
credentials.py (the signing key and certificates), rules.py (rules across settings), resolution.py
(AmiSettings and resolve), keys.py (unknown keys, aliases, control characters), files.py (TOML),
paths.py (directories settings may not name), constants.py (choices and limits), reference.py (the
settings reference, docs/settings.md), starter.py (the starter file `amidsl init` writes), layers.py
(several files and --set merged), variables.py ({date}, {env:NAME}, ... in string settings), schema.py
(Source, Problem, SettingsError, the row type).

Each name below is imported from its module on first use: the command table imports
amidsl.settings.constants on every `amidsl` run, and that must not load the rest (cryptography, the
node program).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    **dict.fromkeys(("Problem", "Setting", "SettingsError", "Source"), "schema"),
    **dict.fromkeys(("AmiSettings", "resolve"), "resolution"),
    **dict.fromkeys(("ami_table", "load_toml", "read_settings_file"), "files"),
    **dict.fromkeys(("is_control", "normalise_keys"), "keys"),
    **dict.fromkeys(("ORGANIZATION_ARN", "OU_ARN", "known_regions"), "checks"),
    **dict.fromkeys(("settings_reference",), "reference"),
    **dict.fromkeys(
        (
            "FREE_TEXT_KEYS",
            "HYGIENE_KEEP_KEYS",
            "REQUIRED",
            "ROWS",
            "SECRET_KEYS",
            "SETTINGS",
            "STRATEGY_RULES",
            "USER_KEYS",
        ),
        "table",
    ),
    **dict.fromkeys(
        (
            "KEY_DIR_NAMES",
            "MAX_FILE_NAME",
            "NODE_STATE_DIR",
            "PROTECTED_DIRS",
            "SYSTEM_DIRS",
            "SYSTEM_TREES",
            "created_record_name",
            "system_dir_reason",
        ),
        "paths",
    ),
    **dict.fromkeys(
        (
            "AMI_TOOLS_URL",
            "ARCHITECTURES",
            "BOOT_MODES",
            "BUNDLERS",
            "DEFAULT_IMAGE_WAIT_SECONDS",
            "DEFAULT_RUBY_VERSION",
            "DEFAULT_UPLOAD_CONCURRENCY",
            "IMDS_SUPPORT",
            "INSTALL_STRATEGIES",
            "MAX_IMAGE_TAGS",
            "MAX_OBJECT_TAGS",
            "MAX_UPLOAD_CONCURRENCY",
            "PARTITIONS",
            "SRIOV_NET_SUPPORT",
            "UPLOAD_CREDENTIALS",
            "VIRTUALIZATION_TYPES",
        ),
        "constants",
    ),
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its module the first time it is asked for."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
