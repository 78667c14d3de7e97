"""The `[live]` table: how to reach the node (SSH), AWS (profile, endpoint) and how to launch a node.

Kept apart from the `[ami]` settings, which describe the image and must stay the same whichever way the
build runs. Validation collects every problem, each naming the setting, the bad value and the fix, and
raises the same `SettingsError` the `[ami]` table does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amidsl.settings import Problem, SettingsError, normalise_keys
from amidsl.settings.checks import ENDPOINT_URL
from amidsl.settings.readers import got, toml_spelling

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_WAIT_SECONDS = 900
# The tag that marks the nodes of a group (as pallet tagged a group's nodes).
GROUP_TAG = "amidsl:group"


@dataclass(frozen=True)
class LiveSettings:
    """Where and how a live build runs: the SSH target, AWS session options, the node to launch."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    ssh_config: str = DEFAULT_SSH_CONFIG
    trust_on_first_use: bool = False
    profile: str | None = None
    endpoint_url: str | None = None
    image_id: str | None = None
    instance_type: str | None = None
    key_name: str | None = None
    security_group_ids: tuple[str, ...] = ()
    subnet_id: str | None = None
    group: str | None = None  # the launched node's group tag (default: the spec's name)
    wait_seconds: int = DEFAULT_WAIT_SECONDS

    def required_for(self, mode: str) -> list[Problem]:
        """What a build mode (host, group or launch) still needs from these settings."""
        problems = []
        if mode == "host" and not self.host:
            problems.append(Problem("live.host", "is not set", "give --host NODE or set host in [live]"))
        if mode == "launch":
            for name in ("image_id", "instance_type", "key_name"):
                if not getattr(self, name):
                    problems.append(
                        Problem(
                            f"live.{name}",
                            "is needed to launch a node",
                            f"set {name} in [live] (see `amidsl build --help`)",
                        )
                    )
        return problems


LIVE_KEYS = tuple(LiveSettings.__dataclass_fields__)
# The [live] settings given as strings: variables expand there, and --set takes their text as it is.
LIVE_TEXT_KEYS = frozenset(
    name for name, field in LiveSettings.__dataclass_fields__.items() if str(field.type).startswith("str")
)


def live_table(document: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `[live]` table of a settings file read from path ({} when there is none); paths made absolute."""
    path = Path(path)
    table = document.get("live", {})
    if not isinstance(table, dict):
        raise SettingsError(
            [Problem("[live]", "is not a table", "write the live settings under a [live] header")],
            origin=str(path),
        )
    return anchor_live_paths(table, path.parent)


def anchor_live_paths(table: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The [live] table with its relative file paths made absolute against `base`."""
    anchored = dict(table)
    for key in ("identity_file", "identity-file", "known_hosts", "known-hosts", "ssh_config", "ssh-config"):
        value = anchored.get(key)
        if isinstance(value, str) and value and not value.startswith("~") and not os.path.isabs(value):
            anchored[key] = str(base / value)
    return anchored


def resolve_live(raw: Mapping[str, Any], origin: str = "[live]") -> LiveSettings:
    """Validate a `[live]` mapping into LiveSettings; raise SettingsError listing every problem."""
    problems: list[Problem] = []
    values = normalise_keys(raw, LIVE_KEYS, problems, table="live.")
    checked = _LiveChecker(values, problems).build()
    if problems:
        raise SettingsError(problems, origin=origin)
    assert checked is not None
    return checked


class _LiveChecker:
    """Reads each [live] key with its type and format, recording problems."""

    def __init__(self, values: dict[str, Any], problems: list[Problem]) -> None:
        self.values = values
        self.problems = problems

    def problem(self, name: str, message: str, fix: str) -> None:
        self.problems.append(Problem(f"live.{name}", message, fix))

    def text(self, name: str, pattern: str | None = None, fix: str = "") -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(name, f"must be a non-empty string, got {got(value)}", f'write {name} = "..."')
            return None
        if pattern is not None and not re.fullmatch(pattern, value):
            self.problem(name, f"{value!r} is not valid", fix)
            return None
        return value

    def number(self, name: str, low: int, high: int, fix: str) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(name, f"{toml_spelling(value)} is not a whole number from {low} to {high}", fix)
            return None
        return value

    def flag(self, name: str) -> bool:
        value = self.values.get(name, False)
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, got {got(value)}", f"write {name} = true or false")
            return False
        return value

    def build(self) -> LiveSettings | None:
        host = self.text(
            "host", r"[A-Za-z0-9_.:\[\]%-]+", "give a host name, an address or a ~/.ssh/config alias"
        )
        port = self.number("port", 1, 65535, "give the node's SSH port, e.g. port = 22")
        user = self.text("user", r"[a-z_][a-z0-9_.-]*\$?", "give the login user name on the node")
        identity_file = self.text("identity_file")
        if identity_file is not None:
            identity_file = os.path.expanduser(identity_file)
            if not os.path.isfile(identity_file):
                self.problem(
                    "identity_file",
                    f"{identity_file!r} does not exist",
                    "point identity_file at your SSH private key, or remove it to use ssh-agent",
                )
        known_hosts = self.text("known_hosts") or DEFAULT_KNOWN_HOSTS
        ssh_config = self.text("ssh_config") or DEFAULT_SSH_CONFIG
        trust = self.flag("trust_on_first_use")
        profile = self.text("profile")
        endpoint_url = self.text("endpoint_url", ENDPOINT_URL, "give a URL such as https://s3.example.com")
        image_id = self.text("image_id", r"ami-[0-9a-f]{8}([0-9a-f]{9})?", "give the AMI to launch, ami-...")
        instance_type = self.text(
            "instance_type", r"[a-z0-9-]+\.[a-z0-9-]+", "give an EC2 instance type such as t3.micro"
        )
        key_name = self.text("key_name")
        subnet_id = self.text(
            "subnet_id", r"subnet-[0-9a-f]{8}([0-9a-f]{9})?", "give an id like subnet-0a1b2c3d"
        )
        group = self.text("group", r"[A-Za-z0-9._-]{1,128}", "use letters, digits, '.', '_' and '-'")
        wait_seconds = self.number("wait_seconds", 1, 7200, "give a number of seconds, e.g. 900")
        groups = self.values.get("security_group_ids", [])
        if not isinstance(groups, (list, tuple)) or not all(
            isinstance(g, str) and re.fullmatch(r"sg-[0-9a-f]{8}([0-9a-f]{9})?", g) for g in groups
        ):
            self.problem(
                "security_group_ids",
                f"{toml_spelling(groups)} is not a list of sg- ids",
                'write ["sg-0a1b2c3d", ...]',
            )
            groups = []
        if self.problems:
            return None
        return LiveSettings(
            host=host,
            port=port,
            user=user,
            identity_file=identity_file,
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            trust_on_first_use=trust,
            profile=profile,
            endpoint_url=endpoint_url,
            image_id=image_id,
            instance_type=instance_type,
            key_name=key_name,
            security_group_ids=tuple(groups),
            subnet_id=subnet_id,
            group=group,
            wait_seconds=wait_seconds or DEFAULT_WAIT_SECONDS,
        )
