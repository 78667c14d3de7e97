"""Typed readers of the settings table: each reads one setting (or its default) and records problems.

A row's reader is a function (reading, row) -> value; the factories below make the ones that take
parameters. The `read_*` functions read any key by name, for readers of tables and lists.
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import re
from collections.abc import Mapping

from amidsl.example import example_credentials
from amidsl.secrets import Secret
from amidsl.settings.paths import (
    BOOT_PATHS,
    MAX_FILE_NAME,
    created_record_name,
    is_within,
    system_dir_reason,
)
from amidsl.settings.reading import Reading
from amidsl.settings.schema import Reader, Setting, Source

# -- reading a key by name ------------------------------------------------------------------------


def toml_type(value: object) -> str:
    """The TOML type of a value read from a settings file ("table", "array", "datetime", ...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, datetime.datetime):
        return "datetime"
    kinds = ((str, "string"), (int, "integer"), (float, "float"), (datetime.date, "date"))
    kinds += ((datetime.time, "time"), (Mapping, "table"), (list, "array"), (tuple, "array"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), type(value).__name__)


def toml_spelling(value: object) -> str:
    """A value as a message shows it: booleans, dates, arrays and tables as TOML writes them (true, not
    Python's True); strings quoted as the other messages quote them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{key} = {toml_spelling(item)}" for key, item in value.items())
        return f"{{ {pairs} }}" if pairs else "{}"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(toml_spelling(item) for item in value)}]"
    return repr(value)


def got(value: object) -> str:
    """What a message says it got instead: a string as written, anything else with its TOML type."""
    return repr(value) if isinstance(value, str) else f"{toml_type(value)} {toml_spelling(value)}"


def read_text(r: Reading, name: str, default: str | None = None) -> str | None:
    """A string, or None (with a problem) when the value is of another type."""
    value = r.given.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        secret = name in r.rows and r.rows[name].secret
        r.problem(
            name,
            f"must be a string, got {toml_type(value) + ' (hidden)' if secret else got(value)}",
            f'quote the value, e.g. {name} = "..."',
        )
        return None
    return value


def read_flag(r: Reading, name: str, default: bool) -> bool:
    """true or false (the default, with a problem, for anything else)."""
    value = r.given.get(name, default)
    if not isinstance(value, bool):
        r.problem(name, f"must be true or false, got {got(value)}", f"write {name} = true or false")
        return default
    return value


def read_text_list(r: Reading, name: str) -> tuple[str, ...]:
    """A list of strings (empty, with a problem, for anything else)."""
    value = r.given.get(name, [])
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        # One string is most likely one entry given without the brackets: the fix shows it in them.
        example = json.dumps([value], ensure_ascii=False) if isinstance(value, str) else '["...", ...]'
        r.problem(name, f"must be a list of strings, got {got(value)}", f"write {name} = {example}")
        return ()
    if not all(isinstance(item, str) for item in value):
        r.problem(name, f"must hold only strings, got {got(value)}", "quote every entry")
        return ()
    return tuple(value)


def read_node_path(r: Reading, name: str, default: str | None) -> str | None:
    """An absolute, normalised path on the node."""
    value = read_text(r, name, default)
    if value is None:
        return None
    if not value.startswith("/") or "\n" in value or "\0" in value:
        r.problem(name, f"{value!r} is not an absolute path on the node", "give a path starting with /")
        return value
    normal = os.path.normpath(value)
    if normal.startswith("//"):
        normal = normal[1:]
    if normal != (value.rstrip("/") or "/") or "/../" in f"{value}/":
        r.problem(
            name,
            f"{value!r} is not a normalised path",
            f"write it as {normal!r} (no '..', '.', '//' or trailing '/')",
        )
    return normal


def comma_free(r: Reading, name: str, value: str) -> None:
    """An excluded directory: ec2-bundle-vol's `-e` list is comma-separated."""
    if "," in value:
        r.problem(
            name,
            f"{value!r} contains a comma",
            "choose a directory without ',' (ec2-bundle-vol's exclusion list is comma-separated)",
        )


# -- readers of rows ------------------------------------------------------------------------------


def text(r: Reading, row: Setting) -> str | None:
    """A string; an empty one stands for the default where the row has one."""
    default = r.default(row)
    value = read_text(r, row.name, default)
    return value if default is None else (value or default)


def flag(r: Reading, row: Setting) -> bool:
    """true or false."""
    return read_flag(r, row.name, r.default(row))


def optional_flag(r: Reading, row: Setting) -> bool | None:
    """true, false, or absent (None)."""
    return None if r.given.get(row.name) is None else read_flag(r, row.name, False)


def choice(r: Reading, row: Setting) -> str:
    """One of the row's choices."""
    default = r.default(row)
    value = read_text(r, row.name, default)
    if value is not None and value not in row.choices:
        choices = ", ".join(row.choices)
        r.problem(row.name, f"{value!r} is not one of {choices}", f"use one of {choices}")
    return value or default


def optional_choice(r: Reading, row: Setting) -> str | None:
    """Absent (None) or one of the row's choices (anything else is a problem, and None)."""
    value = read_text(r, row.name)
    if value is not None and value not in row.choices:
        r.problem(
            row.name,
            f"{value!r} is not one of {', '.join(row.choices)}",
            f"use {' or '.join(repr(c) for c in row.choices)}, or remove it",
        )
        return None
    return value


def node_path(r: Reading, row: Setting) -> str | None:
    """An absolute, normalised path on the node."""
    default = r.default(row)
    return read_node_path(r, row.name, default) or default


def owned_dir(r: Reading, row: Setting) -> str:
    """A directory amidsl creates and later removes recursively: never a system directory."""
    default = r.default(row)
    value = read_node_path(r, row.name, default) or default
    comma_free(r, row.name, value)
    reason = system_dir_reason(value)
    fix = f"use a directory of its own that amidsl creates, e.g. {default!r}"
    if system_dir_reason(default) is not None:
        # A default made of another setting is refused along with that setting: never suggest it.
        fix = "use a directory of its own that amidsl creates, outside the system directories"
        made_of = re.findall(r"<(\w+)>", row.shown_default)  # `<install_dir>/credentials`
        if r.given.get(row.name) is None and made_of:
            default_text = row.shown_default.strip("`")
            fix = f"it is the default, {default_text}: correct {made_of[0]}, or set {row.name} to {fix[4:]}"
    # The node records the directory under a file name made from its path (see amidsl.model.steps).
    if len(created_record_name(value).encode()) > MAX_FILE_NAME:
        r.problem(row.name, f"{value!r} is too long for amidsl's record of it", "use a shorter path")
    if reason is not None:
        r.problem(row.name, f"{value!r} {reason}; cleanup removes this directory and everything in it", fix)
    return value


def path_list(r: Reading, row: Setting) -> tuple[str, ...]:
    """Absolute directories on the node, normalised, without commas (ec2-bundle-vol -e)."""
    paths = []
    for entry in read_text_list(r, row.name):
        normal = os.path.normpath(entry) if entry.startswith("/") else None
        if normal is None or "\n" in entry or "," in entry:
            r.problem(
                row.name,
                f"entry {entry!r} is not an absolute path without commas",
                "list absolute directories on the node (ec2-bundle-vol -e is comma-separated)",
            )
            continue
        if normal in ("/", "//"):
            r.problem(
                row.name, "entry '/' would exclude the whole volume", "list only the directories to leave out"
            )
            continue
        needed = next((path for path in BOOT_PATHS if is_within(path, normal)), None)
        if needed is not None:
            r.problem(
                row.name,
                f"entry {entry!r} leaves out {needed!r}, which every image needs to boot",
                "list only the directories to leave out below it, e.g. '/usr/share/doc'",
            )
            continue
        paths.append(normal)
    return tuple(paths)


def pattern_list(r: Reading, row: Setting) -> tuple[str, ...]:
    """Paths or fnmatch patterns in the image: absolute, or starting with `*`."""
    patterns = []
    for entry in read_text_list(r, row.name):
        if not entry.startswith(("/", "*")) or "\n" in entry or "\0" in entry or "," in entry:
            r.problem(
                row.name,
                f"entry {entry!r} is not a path or pattern in the image",
                "write absolute paths or patterns such as '/etc/ssl/certs/*.pem' or '*/.env' "
                "(no commas or line breaks)",
            )
            continue
        why = _never_matches(entry)
        if why:
            normal = posixpath.normpath(entry).replace("//", "/")
            r.problem(
                row.name,
                f"entry {entry!r} {why}, so it matches no path: the image's paths have no trailing '/', "
                "'//', '.' or '..'",
                f"write {normal!r}",
            )
            continue
        patterns.append(entry)
    return tuple(patterns)


def _never_matches(pattern: str) -> str:
    """Why a pattern can match none of the image's (normalised) paths; "" when it can."""
    if pattern != "/" and pattern.endswith("/"):
        return "ends with '/'"
    if "//" in pattern:
        return "holds '//'"
    if any(part in (".", "..") for part in pattern.split("/")):
        return "holds '.' or '..'"
    return ""


def whole_number(low: int, high: int, what: str, fix: str) -> Reader:
    """A reader of an integer from low to high; `what` completes "<value> is not ..." in the message."""

    def read(r: Reading, row: Setting) -> int | None:
        default = r.default(row)
        value = r.given.get(row.name, default)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
        ):
            r.problem(row.name, f"{toml_spelling(value)} is not {what}", fix)
            return default
        return value

    return read


def image_ref(kind: str) -> Reader:
    """A reader of an optional EC2 image id of a kind (aki, ari)."""

    def read(r: Reading, row: Setting) -> str | None:
        value = read_text(r, row.name)
        if value is not None and not re.fullmatch(rf"{kind}-[0-9a-f]{{8}}([0-9a-f]{{9}})?", value):
            r.problem(row.name, f"{value!r} is not a {kind}- image id", f"give an id like {kind}-1a2b3c4d")
        return value

    return read


def secret_text(r: Reading, row: Setting) -> Secret | None:
    """A secret string, wrapped at once; empty or absent: None."""
    value = r.given.get(row.name)
    if isinstance(value, str) and value:
        return Secret(value)
    if value is not None and not isinstance(value, Secret):
        r.problem(
            row.name,
            f"must be a string, got {toml_type(value)}",
            f"quote the value, or remove {row.name} to use the AWS credential chain",
        )
        return None
    return value or None


def source(*, allow_url: bool = False, example: bool = False) -> Reader:
    """A reader of a file source table: {local_file = "..."} or {content = "..."} (or {url = "..."}).

    With `example`, {example = true} gives amidsl's built-in throwaway credentials. A secret row's
    content is wrapped as a Secret and never shown.
    """
    keys = ("local_file", "content", "url") if allow_url else ("local_file", "content")

    def read(r: Reading, row: Setting) -> Source | None:
        name = row.name
        value = r.given.get(name)
        if value is None:
            return r.default(row)
        example_text = f'{name} = {{ local_file = "path/to/file.pem" }}'
        if isinstance(value, Source):
            return value
        if not isinstance(value, Mapping):
            shown = toml_type(value) if row.secret else got(value)
            r.problem(name, f"must be a table, got {shown}", f"write {example_text}")
            return None
        table = {str(k).replace("-", "_"): v for k, v in value.items()}
        if example and table == {"example": True}:
            key_pem, cert_pem = example_credentials()
            return Source(content=Secret(key_pem) if row.secret else cert_pem, example=True)
        unknown = sorted(set(table) - set(keys))
        given = [k for k in keys if table.get(k) is not None]
        if unknown or len(given) != 1:
            r.problem(
                name,
                f"needs exactly one of {', '.join(keys)} (got {', '.join(sorted(table))})",
                f"write {example_text}",
            )
            return None
        kind = given[0]
        raw = table[kind]
        if isinstance(raw, Secret):
            return Source(content=raw)
        if not isinstance(raw, str) or not raw:
            r.problem(name, f"{kind} must be a non-empty string", f"write {example_text}")
            return None
        if kind == "content" and row.secret:
            return Source(content=Secret(raw))
        if kind == "local_file":
            return Source(local_file=os.path.expanduser(raw))
        return Source(**{kind: raw})

    return read
