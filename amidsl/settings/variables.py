"""Variables in settings: `{date}`, `{timestamp}`, `{git_sha}`, `{git_sha_short}`, `{env:NAME}`.

A CI build names its image by date or commit and takes per-environment values from its environment
without editing files: `image_name = "web-{date}-{git_sha_short}"`, `secret_key = "{env:CI_SECRET}"`.
Settings whose value is a string are expanded, and so are the string values of the tables of strings
(`tags = { Build = "{git_sha_short}" }`, a key ARN per region in `copy_kms_key_ids`) and the strings of
the lists (`copy_to_regions = ["{env:DR_REGION}"]`); a table's keys are left as written, as they name
things (a tag, a region) rather than carry values. `{{` and `}}` stand for
literal braces. The values are fixed once per run (`RunValues`), so the plan, the script and the build
of one command agree.

Secrets: a variable only ever puts a value *into* a setting; no variable reads another setting, so a
secret cannot travel out of its setting. Messages name the setting and the variable, never its value.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from amidsl.settings.schema import Problem

# Each name and what it gives, for messages and documentation.
VARIABLES = {
    "date": "the UTC date of the run, 2026-11-05",
    "timestamp": "the UTC time of the run, 20261105T143000Z (ISO 8601 basic: valid in image names)",
    "git_sha": "the commit checked out where the settings file is (git rev-parse HEAD)",
    "git_sha_short": "its first 12 hex digits",
    "env:NAME": "the environment variable NAME (an error when it is not set)",
}
# The environment variables the AWS credential chain takes secrets (and the key id) from: a setting that is
# shown may not use them, as it may not use a secret setting's (below).
CREDENTIAL_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",  # the token of a container's credentials endpoint
)
CREDENTIAL_CHAIN = "the AWS credential chain (for the build's keys)"
KNOWN = ", ".join(f"{{{name}}}" for name in VARIABLES)
_REFERENCE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ENV_NAME = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
GIT_SECONDS = 30


@dataclass(frozen=True)
class RunValues:
    """What the variables of one run stand for: its start time, its environment, where git is asked."""

    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    git_dir: Path = field(default_factory=Path.cwd)


def references(text: str) -> list[str]:
    """The variable names a string uses, in order (escaped braces aside)."""
    return [m.group(1) for m in _REFERENCE.finditer(text) if m.group(1) is not None]


def is_env_reference(text: str) -> bool:
    """Whether the whole string is one `{env:NAME}` reference."""
    return re.fullmatch(r"\{env:[A-Za-z_][A-Za-z0-9_]*\}", text) is not None


def git_commit(directory: Path) -> str:
    """The commit checked out in the git work tree holding `directory`; ValueError saying why not."""
    try:
        run = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"git could not be run ({err.__class__.__name__})") from None
    if run.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", run.stdout.strip()):
        reason = (run.stderr.strip().splitlines() or ["no commit"])[-1]
        raise ValueError(f"{str(directory)!r} is not in a git work tree with a commit ({reason})")
    return run.stdout.strip()


@dataclass(frozen=True)
class _Text:
    """One string to expand: its table, its key, its key or index in a table or list, and its name."""

    table: str
    key: str
    # The key in a table of strings (`Build` of `tags`), the index in a list; None for a string setting.
    entry: str | int | None
    value: str
    setting: str  # for messages: `image_name`, `live.host`, `tags.Build`, `copy_to_regions[0]`


def expand_tables(
    tables: Mapping[str, Mapping[str, Any]],
    is_text: Callable[[str, str], bool],
    is_secret: Callable[[str, str], bool],
    run: RunValues,
    *,
    is_text_collection: Callable[[str, str], bool],
) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Expand the variables in every string setting, table and list of strings; the tables and problems.

    `tables` maps "ami"/"live" to their values; `is_text(table, key)` says which settings hold strings,
    `is_text_collection(table, key)` which hold tables of strings (only their values expand) or lists of
    strings, `is_secret(table, key)` which are secret. An environment variable a secret setting uses
    may appear in no other setting, which would show it. Each variable is worked out at most once (git
    is asked only when `{git_sha}` is used). The tables given are left as they are.
    """
    problems: list[Problem] = []
    known: dict[str, str] = {}
    texts = list(_texts(tables, is_text, is_text_collection))
    # Each environment variable a secret comes from, and whose secret it is: the secret settings', and
    # those the AWS credential chain reads when the settings give no keys.
    secret_env = {f"env:{name}": CREDENTIAL_CHAIN for name in CREDENTIAL_CHAIN_ENV}
    secret_env.update(
        (name, f"the secret setting {text.setting}")
        for text in texts
        if is_secret(text.table, _snake(text.key))
        for name in references(text.value)
        if name.startswith("env:")
    )
    expanded = {
        table: {key: _copy(value) for key, value in values.items()} for table, values in tables.items()
    }
    for text in texts:
        own = f"the secret setting {text.setting}"
        shown = [name for name in references(text.value) if secret_env.get(name, own) != own]
        if shown and not is_secret(text.table, _snake(text.key)):
            problems.append(
                Problem(
                    text.setting,
                    f"uses {{{shown[0]}}}, which {secret_env[shown[0]]} uses too",
                    "give this setting its own value: a secret's variable is never shown",
                )
            )
            continue
        value = _expand(text.value, text.setting, run, known, problems)
        if text.entry is None:
            expanded[text.table][text.key] = value
        else:
            expanded[text.table][text.key][text.entry] = value
    return expanded, problems


def _texts(
    tables: Mapping[str, Mapping[str, Any]],
    is_text: Callable[[str, str], bool],
    is_text_collection: Callable[[str, str], bool],
) -> Iterator[_Text]:
    """The strings variables expand in: string settings, and the strings of tables and lists of strings."""
    for table, values in tables.items():
        for key, value in values.items():
            setting = key if table == "ami" else f"{table}.{key}"
            if isinstance(value, str) and is_text(table, _snake(key)):
                yield _Text(table, key, None, value, setting)
            elif isinstance(value, Mapping) and is_text_collection(table, _snake(key)):
                for entry, text in value.items():
                    if isinstance(text, str):  # another type is its reader's to refuse
                        yield _Text(table, key, entry, text, f"{setting}.{entry}")
            elif isinstance(value, list) and is_text_collection(table, _snake(key)):
                for index, text in enumerate(value):
                    if isinstance(text, str):
                        yield _Text(table, key, index, text, f"{setting}[{index}]")


def _copy(value: Any) -> Any:
    """A table's or list's own copy, to expand in (the value given is left as it is)."""
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, list) else value


def _snake(key: object) -> str:
    """A key as the settings table names it (kebab-case is an alias)."""
    return str(key).replace("-", "_")


def _expand(text: str, setting: str, run: RunValues, known: dict[str, str], problems: list[Problem]) -> str:
    """One string with its variables replaced (a problem for each unknown or unavailable one)."""
    pieces = []
    position = 0
    for match in _REFERENCE.finditer(text):
        pieces.append(text[position : match.start()])
        position = match.end()
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            pieces.append(token[0])
        elif name is None:
            problems.append(
                Problem(
                    setting,
                    f"has an unmatched {token!r} at position {match.start()}",
                    f"write {token * 2} for a literal brace, or a variable: {KNOWN}",
                )
            )
        else:
            value = _value(name, setting, run, known, problems)
            pieces.append(value if value is not None else token)
    pieces.append(text[position:])
    return "".join(pieces)


def _value(
    name: str, setting: str, run: RunValues, known: dict[str, str], problems: list[Problem]
) -> str | None:
    """The value of one variable for this run (None, with a problem, when it has none)."""
    if name in known:
        return known[name]
    env = _ENV_NAME.fullmatch(name)
    if name == "date":
        value = run.now.strftime("%Y-%m-%d")
    elif name == "timestamp":
        value = run.now.strftime("%Y%m%dT%H%M%SZ")
    elif name in ("git_sha", "git_sha_short"):
        try:
            commit = known.get("git_sha") or git_commit(run.git_dir)
        except ValueError as err:
            problems.append(
                Problem(
                    setting,
                    f"uses {{{name}}}, but {err}",
                    "run amidsl where the settings file is in a git checkout, or remove the variable",
                )
            )
            return None
        known["git_sha"] = commit
        value = commit if name == "git_sha" else commit[:12]
    elif env is not None:
        if env.group(1) not in run.environ:
            problems.append(
                Problem(
                    setting,
                    f"uses {{{name}}}, but {env.group(1)} is not set in the environment",
                    f"export {env.group(1)} before running amidsl",
                )
            )
            return None
        value = run.environ[env.group(1)]
    else:
        problems.append(
            Problem(
                setting,
                f"uses an unknown variable {{{name}}}",
                f"use one of {KNOWN}, or write {{{{ and }}}} for literal braces",
            )
        )
        return None
    known[name] = value
    return value
