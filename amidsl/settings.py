"""Settings for an AMI build: schema, defaults, finalisation and validation.

A port of the ami-crate settings schema with snake_case keys (kebab-case accepted as aliases). `resolve`
turns a user's mapping into a frozen, finalised `AmiSettings`, or raises `SettingsError` listing every
problem found, each naming the setting, the bad value (never a secret) and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import ipaddress
import json
import os
import re
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from amidsl.example import example_credentials
from amidsl.node.amidsl_node import DEFAULT_INCLUDES, HYGIENE_NAMES
from amidsl.secrets import Secret
from amidsl.tags import BUILT_BY_TAG

AMI_TOOLS_URL = "https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip"
# ec2-ami-tools 1.5 runs on Ruby 2.x; Ruby 3.0 removed URI.escape, which its S3 code calls.
DEFAULT_RUBY_VERSION = "2.7.8"
# Where amidsl keeps its own state on a node; excluded from every image like the crate's pallet dir.
NODE_STATE_DIR = "/var/lib/amidsl"

INSTALL_STRATEGIES = ("auto", "rbenv", "package", "none")
# ec2-bundle-vol --partition: "none" makes a plain filesystem image; the others need a standard
# /dev/(xvd|sd) root device, dmsetup, kpartx, parted, sgdisk and legacy grub on the node.
PARTITIONS = ("none", "mbr", "gpt", "auto")
# How ec2-upload-bundle gets AWS credentials: the keys (-a/-s, at run time) or the node's instance profile.
UPLOAD_CREDENTIALS = ("keys", "instance-profile")
BUNDLERS = ("native", "ami-tools")
ARCHITECTURES = ("x86_64", "i386", "arm64")
VIRTUALIZATION_TYPES = ("paravirtual", "hvm")
# What RegisterImage accepts (botocore's EC2 model): ImdsSupport only "v2.0", SriovNetSupport only
# "simple". BootMode "uefi" is refused: instance-store root devices run only on Xen instance types
# (C1, C3, D2, I2, M1, M2, M3, R3, X1), which boot with legacy BIOS; UEFI needs a Nitro type.
IMDS_SUPPORT = ("v2.0",)
BOOT_MODES = ("legacy-bios", "uefi-preferred")
SRIOV_NET_SUPPORT = ("simple",)
MAX_IMAGE_TAGS = 50  # EC2's limit per resource (amidsl's own tag included)
MAX_OBJECT_TAGS = 10  # S3's limit per object
DEFAULT_IMAGE_WAIT_SECONDS = 1800
# Parts a native build's node uploads at once (its presigned PUTs).
DEFAULT_UPLOAD_CONCURRENCY = 4
# The node holds each part it is sending in memory (10 MiB): 16 at once stay within 160 MiB.
MAX_UPLOAD_CONCURRENCY = 16
# Whom an image may be shared with (besides 12-digit account ids), in any partition.
ORGANIZATION_ARN = re.compile(r"arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}")
OU_ARN = re.compile(
    r"arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}"
)

# Directories whose recursive removal (cleanup) or exclusion would wreck a node or make a useless image.
PROTECTED_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/usr",
        "/var",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/sbin",
        "/var/lib",
        "/var/log",
    ]
)

# Trees a directory amidsl removes recursively may never lie in (a user's own directory under /usr/local,
# /var/lib or /home/USER is fine; the well-known ones below are not).
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
SYSTEM_DIRS = PROTECTED_DIRS | frozenset(
    [
        "/tmp",
        "/mnt",
        "/media",
        "/snap",
        "/lost+found",
        *(f"/var/{name}" for name in ("tmp", "cache", "spool", "mail", "www", "backups", "opt", "local")),
        *(f"/var/lib/{name}" for name in ("dpkg", "apt", "rpm", "dnf", "yum", "systemd")),
        *(
            f"/usr/local/{name}"
            for name in ("bin", "etc", "games", "include", "lib", "man", "sbin", "share", "src")
        ),
        NODE_STATE_DIR,
    ]
)
MAX_FILE_NAME = 255  # bytes, on Linux file systems
# Directories holding a user's keys: never a credential or install directory, wherever they are.
KEY_DIR_NAMES = frozenset({".ssh", ".gnupg", ".aws"})
# Settings whose value is free text: a line break is allowed there (no other control character).
FREE_TEXT_KEYS = frozenset({"image_description", "content"})

REQUIRED = ("image_name", "region", "user_id", "s3_bucket", "private_key_source", "certificate_source")
# Settings whose values no message shows (access_key too: a wrong value there may be the secret key).
SECRET_KEYS = frozenset({"secret_key", "session_token", "access_key"})


@dataclass(frozen=True)
class Source:
    """Where a file comes from: a file on the controller, inline content, or a URL (install only)."""

    local_file: str | None = None
    content: str | Secret | None = None
    url: str | None = None
    example: bool = False  # amidsl's built-in throwaway credentials (content filled in)


@dataclass(frozen=True)
class AmiSettings:
    """Finalised settings for one AMI build; every path and default filled in."""

    image_name: str
    image_description: str
    access_key: str | None = field(repr=False)  # shown nowhere, as the secret key
    secret_key: Secret | None
    session_token: Secret | None
    region: str
    user_id: str
    user: str
    exclusions: tuple[str, ...]
    extra_exclusions: tuple[str, ...]
    install_strategy: str
    install_dir: str
    install_source: Source
    ami_tools_url: str
    install_ruby: bool
    ruby_version: str
    destination_dir: str
    credential_dir: str
    private_key_source: Source
    certificate_source: Source
    private_key_path: str
    certificate_path: str
    arch: str
    s3_bucket: str
    s3_path: str
    s3_manifest_path: str
    manifest_path: str
    prefix: str
    image_size_mb: int | None
    inherit: bool
    virtualization_type: str | None
    kernel_id: str | None
    ramdisk_id: str | None
    block_device_mappings: tuple[tuple[str, str], ...]
    certificate_pem: str
    private_key_pem: Secret
    image_id: str | None = None
    bundler: str = "native"
    volume: str = "/"
    ec2_certificate_source: Source | None = None
    ec2_certificate_pem: str = ""
    partition: str = "none"
    upload_credentials: str = "keys"
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY
    # After registering: tags, who may launch the image, copies, RegisterImage's optional attributes.
    tags: tuple[tuple[str, str], ...] = ()
    bundle_tags: tuple[tuple[str, str], ...] = ()
    launch_permissions: tuple[str, ...] = ()
    public_image: bool = False
    copy_to_regions: tuple[str, ...] = ()
    imds_support: str | None = None
    boot_mode: str | None = None
    ena_support: bool | None = None
    sriov_net_support: str | None = None
    force_deregister: bool = False
    image_wait_seconds: int = DEFAULT_IMAGE_WAIT_SECONDS
    # What goes into the image beyond exclusions: the filter's includes (the user's after the built-in
    # ones), the user's own exclusion patterns, and the image hygiene items kept (keep_<item> = true).
    includes: tuple[str, ...] = DEFAULT_INCLUDES
    exclude_patterns: tuple[str, ...] = ()
    hygiene_keep: tuple[str, ...] = ()

    @property
    def tools_dir(self) -> str:
        """The unpacked ec2-ami-tools folder (the crate renames `ec2-ami-tools-<version>` to this)."""
        return f"{self.install_dir}/ec2-ami-tools"

    @property
    def s3_location(self) -> str:
        """Bucket and key prefix as ec2-upload-bundle's `-b` takes them."""
        return f"{self.s3_bucket}/{self.s3_path}" if self.s3_path else self.s3_bucket

    def with_values(self, **changes: Any) -> AmiSettings:
        """Return a copy with some fields changed (e.g. the image id after registration)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: which setting, what is wrong, how to fix it."""

    setting: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}. Fix: {self.fix}."


class SettingsError(ValueError):
    """The settings have problems; `problems` lists every one of them."""

    def __init__(self, problems: list[Problem], origin: str = "settings") -> None:
        self.problems = problems
        self.origin = origin
        lines = [f"{origin}: {len(problems)} problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


# One setting per image hygiene item keeps it: keep_ssh_host_keys = true, ...
HYGIENE_KEEP_KEYS = tuple(f"keep_{name}" for name in HYGIENE_NAMES)
SETTING_NAMES = (
    *tuple(f.name for f in dataclasses.fields(AmiSettings)),
    "extra_exclusions",
    *HYGIENE_KEEP_KEYS,
)
# Derived from other settings, never given by a user.
_DERIVED = {"certificate_pem", "private_key_pem", "ec2_certificate_pem", "hygiene_keep"}
USER_KEYS = tuple(sorted(set(SETTING_NAMES) - _DERIVED))


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the `[ami]` table of a TOML settings file; relative local_file paths are made absolute."""
    return ami_table(read_settings_file(path), path)


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole TOML document of a settings file; a missing, unreadable or invalid file: SettingsError."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            [Problem("--config", f"file {str(path)!r} does not exist", "pass an existing TOML file")],
            origin=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(
            "--config",
            f"cannot read {str(path)!r} ({exc.__class__.__name__})",
            "make the file readable UTF-8 text",
        )
        raise SettingsError([problem], origin=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        problem = Problem("--config", f"not valid TOML: {exc}", "correct the TOML syntax there")
        raise SettingsError([problem], origin=str(path)) from None


def ami_table(document: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `[ami]` table of a settings file read from path; relative local_file paths made absolute."""
    table = document.get("ami")
    if not isinstance(table, dict):
        problem = Problem(
            "[ami]", "the file has no [ami] table", "put the settings under an [ami] table header"
        )
        raise SettingsError([problem], origin=str(path))
    return _anchor_local_files(table, Path(path).parent)


def _anchor_local_files(table: dict[str, Any], base: Path) -> dict[str, Any]:
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


def resolve(raw: Mapping[str, Any], origin: str = "settings") -> AmiSettings:
    """Merge defaults into `raw`, finalise derived values and validate; raise SettingsError on problems."""
    problems: list[Problem] = []
    values = normalise_keys(raw, USER_KEYS, problems)
    checker = _Checker(values, problems)
    settings = checker.build()
    if problems:
        raise SettingsError(problems, origin=origin)
    assert settings is not None
    return settings


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region in botocore's shipped partition data (read as JSON: boto3 itself stays unloaded)."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    data = Path(spec.submodule_search_locations[0], "data")
    regions: set[str] = set()
    # partitions.json is the newer source; endpoints.json still lists a few regions on its own.
    for name in ("partitions.json", "endpoints.json"):
        try:
            partitions = json.loads((data / name).read_text(encoding="utf-8"))["partitions"]
        except (OSError, ValueError, KeyError):
            continue
        regions.update(region for partition in partitions for region in partition.get("regions", {}))
    return frozenset(regions)  # empty without partition data: the name check alone applies


def normalise_keys(
    raw: Mapping[str, Any],
    known: Sequence[str],
    problems: list[Problem],
    table: str = "",
) -> dict[str, Any]:
    """Accept kebab-case aliases; report unknown keys (with a suggestion) and duplicates.

    `table` prefixes the names in messages (e.g. "live." for the [live] table).
    """
    values: dict[str, Any] = {}
    where = f"[{table.rstrip('.')}] " if table else ""
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        _check_control_characters(f"{table}{name}", name, value, problems)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(known)}"
            problems.append(Problem(f"{table}{key}", f"is not a known {where}setting", f"remove it ({hint})"))
            continue
        if name in values:
            problems.append(
                Problem(
                    f"{table}{name}",
                    f"is given twice (as {key!r} and another spelling)",
                    "keep one of the two",
                )
            )
            continue
        values[name] = value
    return values


def _check_control_characters(setting: str, name: str, value: Any, problems: list[Problem]) -> None:
    """Refuse NUL and other control characters in a value (and in the lists and tables it holds).

    A shell drops a NUL and a terminal obeys an escape sequence, so such a value makes what runs or
    what is shown differ from what was written. Line breaks are allowed only in free text.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            key_name = str(key).replace("-", "_")
            _check_control_characters(f"{setting}.{key_name}", key_name, item, problems)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_control_characters(setting, name, item, problems)
        return
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        return
    allowed = "\n\r\t" if name in FREE_TEXT_KEYS else ""
    for position, char in enumerate(text):
        if is_control(char) and char not in allowed:
            # Name the character and where it is, never the value (it may be a secret).
            problems.append(
                Problem(
                    setting,
                    f"contains a control character (U+{ord(char):04X}) at position {position}",
                    "remove it: only printable characters are allowed"
                    + (" (and line breaks)" if allowed else ""),
                )
            )
            return


def is_control(char: str) -> bool:
    """A C0 or C1 control character, DEL, or a Unicode line/paragraph separator."""
    code = ord(char)
    return code < 32 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


def created_record_name(path: str) -> str:
    """The file name under which the node records that amidsl created `path` ('%' and '/' encoded)."""
    return path.replace("%", "%25").replace("/", "%2F")


def system_dir_reason(path: str) -> str | None:
    """Why a directory may not be removed recursively (a system, home or key directory), or None."""
    parts = path.strip("/").split("/")
    if path in SYSTEM_DIRS:
        return "is a system directory"
    if any(path == tree or path.startswith(tree + "/") for tree in SYSTEM_TREES) and not (
        path.startswith("/usr/local/") and len(parts) >= 3
    ):
        return "is in a system directory tree"
    if parts[0] == "home" and len(parts) == 2:
        return "is a home directory"
    if KEY_DIR_NAMES & set(parts):
        return "is (or is inside) a directory that holds keys"
    return None


class _Checker:
    """Reads each setting with its default, records problems, and builds AmiSettings if all is well."""

    def __init__(self, values: dict[str, Any], problems: list[Problem]) -> None:
        self.values = values
        self.problems = problems

    def problem(self, setting: str, message: str, fix: str) -> None:
        self.problems.append(Problem(setting, message, fix))

    def shown(self, setting: str, value: Any) -> str:
        """The value as a message may show it: never a secret."""
        return "(hidden)" if setting in SECRET_KEYS else repr(value)

    # -- typed readers -----------------------------------------------------------------------

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(
                name,
                f"must be a string, got {type(value).__name__} {self.shown(name, value)}",
                f'quote the value, e.g. {name} = "..."',
            )
            return None
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, got {value!r}", f"write {name} = true or false")
            return default
        return value

    def text_list(self, name: str) -> tuple[str, ...]:
        value = self.values.get(name, [])
        if isinstance(value, str) or not isinstance(value, list | tuple):
            self.problem(name, f"must be a list of strings, got {value!r}", f'write {name} = ["/path", ...]')
            return ()
        if not all(isinstance(item, str) for item in value):
            self.problem(name, f"must hold only strings, got {value!r}", "quote every entry")
            return ()
        return tuple(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value is not None and value not in choices:
            self.problem(
                name, f"{value!r} is not one of {', '.join(choices)}", f"use one of {', '.join(choices)}"
            )
        return value or default

    def node_path(self, name: str, default: str | None) -> str | None:
        """An absolute, normalised path on the node."""
        value = self.text(name, default)
        if value is None:
            return None
        if not value.startswith("/") or "\n" in value or "\0" in value:
            self.problem(
                name, f"{value!r} is not an absolute path on the node", "give a path starting with /"
            )
            return value
        normal = os.path.normpath(value)
        if normal.startswith("//"):
            normal = normal[1:]
        if normal != (value.rstrip("/") or "/") or "/../" in f"{value}/":
            self.problem(
                name,
                f"{value!r} is not a normalised path",
                f"write it as {normal!r} (no '..', '.', '//' or trailing '/')",
            )
        return normal

    def comma_free(self, name: str, value: str) -> None:
        """An excluded directory: ec2-bundle-vol's `-e` list is comma-separated."""
        if "," in value:
            self.problem(
                name,
                f"{value!r} contains a comma",
                "choose a directory without ',' (ec2-bundle-vol's exclusion list is comma-separated)",
            )

    def owned_dir(self, name: str, default: str) -> str:
        """A directory amidsl creates and later removes recursively: never a system directory."""
        value = self.node_path(name, default) or default
        self.comma_free(name, value)
        reason = system_dir_reason(value)
        # The node records the directory under a file name made from its path (see amidsl.commands).
        if len(created_record_name(value).encode()) > MAX_FILE_NAME:
            self.problem(name, f"{value!r} is too long for amidsl's record of it", "use a shorter path")
        if reason is not None:
            self.problem(
                name,
                f"{value!r} {reason}; cleanup removes this directory and everything in it",
                f"use a directory of its own that amidsl creates, e.g. {default!r}",
            )
        return value

    def source(self, name: str, *, allow_url: bool = False) -> Source | None:
        """A file source table: {local_file = "..."} or {content = "..."} (or {url = "..."})."""
        value = self.values.get(name)
        if value is None:
            return None
        keys = ("local_file", "content", "url") if allow_url else ("local_file", "content")
        example = f'{name} = {{ local_file = "path/to/file.pem" }}'
        if isinstance(value, Source):
            return value
        if not isinstance(value, Mapping):
            shown = "(hidden)" if name == "private_key_source" else repr(value)
            self.problem(name, f"must be a table, got {shown}", f"write {example}")
            return None
        table = {str(k).replace("-", "_"): v for k, v in value.items()}
        if table == {"example": True} and name in ("private_key_source", "certificate_source"):
            key_pem, cert_pem = example_credentials()
            if name == "private_key_source":
                return Source(content=Secret(key_pem), example=True)
            return Source(content=cert_pem, example=True)
        unknown = sorted(set(table) - set(keys))
        given = [k for k in keys if table.get(k) is not None]
        if unknown or len(given) != 1:
            self.problem(
                name,
                f"needs exactly one of {', '.join(keys)} (got {', '.join(sorted(table))})",
                f"write {example}",
            )
            return None
        kind = given[0]
        raw = table[kind]
        if isinstance(raw, Secret):
            return Source(content=raw)
        if not isinstance(raw, str) or not raw:
            self.problem(name, f"{kind} must be a non-empty string", f"write {example}")
            return None
        if kind == "content" and name == "private_key_source":
            return Source(content=Secret(raw))
        if kind == "local_file":
            return Source(local_file=os.path.expanduser(raw))
        return Source(**{kind: raw})

    def check_url(self, name: str, url: str) -> None:
        """An http(s) URL that curl takes as a URL (never as an option)."""
        if not re.fullmatch(r"https?://[^\s'\"]+", url):
            self.problem(
                name, f"{url!r} is not an http(s) URL", f"use an https:// URL such as {AMI_TOOLS_URL!r}"
            )

    def check_tools_archive(self, source: Source) -> None:
        """The ami-tools archive: a URL, or a readable zip file on the controller."""
        if source.content is not None:
            self.problem(
                "install_source",
                "content is not supported for the tools archive",
                "give {url = ...} or {local_file = ...}",
            )
        elif source.url is not None and source.url != AMI_TOOLS_URL:
            self.check_url("install_source", source.url)
        elif source.local_file is not None:
            path = Path(source.local_file)
            if not path.is_file() or not os.access(path, os.R_OK):
                self.problem(
                    "install_source",
                    f"local_file {source.local_file!r} is not a readable file",
                    "point local_file at the ec2-ami-tools zip you downloaded",
                )
            elif not zipfile.is_zipfile(path):
                self.problem(
                    "install_source",
                    f"local_file {source.local_file!r} is not a zip archive",
                    "give the ec2-ami-tools .zip as Amazon publishes it",
                )

    def read_source(self, name: str, source: Source | None) -> str | None:
        """The text of a credential source, or None with a problem recorded."""
        if source is None:
            return None
        if source.content is not None:
            return source.content.reveal() if isinstance(source.content, Secret) else source.content
        assert source.local_file is not None
        try:
            return Path(source.local_file).read_text(encoding="ascii")
        except FileNotFoundError:
            self.problem(
                name,
                f"local_file {source.local_file!r} does not exist",
                "point local_file at your X.509 PEM file",
            )
        except PermissionError:
            self.problem(
                name,
                f"local_file {source.local_file!r} is not readable",
                "make the file readable by the user running amidsl",
            )
        except IsADirectoryError:
            self.problem(
                name,
                f"local_file {source.local_file!r} is a directory",
                "point local_file at the PEM file itself",
            )
        except (OSError, UnicodeDecodeError):
            self.problem(
                name,
                f"local_file {source.local_file!r} is not a PEM text file",
                "give the PEM-encoded file (text starting with -----BEGIN)",
            )
        return None

    # -- the whole schema ----------------------------------------------------------------------

    def build(self) -> AmiSettings | None:
        for name in REQUIRED:
            if self.values.get(name) in (None, ""):
                self.problem(name, "is required", f"set {name} in the [ami] table")

        image_name = self.text("image_name")
        if image_name is not None:
            _check_image_name(self, image_name)
        description = self.text("image_description", "") or ""
        if len(description) > 255:
            self.problem(
                "image_description",
                f"is {len(description)} characters long",
                "shorten it to at most 255 characters",
            )

        access_key, secret_key, session_token = self.aws_credentials()
        region = self.text("region")
        if region is not None:
            self.check_region("region", region)
        user_id = self.account_id()
        user = self.text("user", "root") or "root"
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]*\$?", user):
            self.problem("user", f"{user!r} is not a Linux user name", "give the node's admin user")

        install_dir = self.owned_dir("install_dir", "/opt/ami-tools")
        credential_dir = self.owned_dir("credential_dir", f"{install_dir}/credentials")
        destination_dir = self.node_path("destination_dir", "/tmp") or "/tmp"
        self.comma_free("destination_dir", destination_dir)
        if destination_dir in PROTECTED_DIRS:
            # The image always excludes destination_dir: a system directory would be missing from it.
            self.problem(
                "destination_dir",
                f"{destination_dir!r} is a system directory; the image excludes destination_dir",
                "use a scratch directory such as /tmp or /mnt",
            )
        private_key_path = self.node_path("private_key_path", f"{credential_dir}/pk")
        certificate_path = self.node_path("certificate_path", f"{credential_dir}/cert")
        for name, path in (("private_key_path", private_key_path), ("certificate_path", certificate_path)):
            if path is not None and not _is_within(path, credential_dir):
                self.problem(
                    name,
                    f"{path!r} is outside credential_dir {credential_dir!r}",
                    "keep the credentials inside credential_dir so cleanup removes them "
                    "and the image excludes them",
                )

        strategy = self.install_strategy()
        ruby_version = self.text("ruby_version", DEFAULT_RUBY_VERSION) or DEFAULT_RUBY_VERSION
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", ruby_version):
            self.problem(
                "ruby_version",
                f"{ruby_version!r} is not a Ruby version",
                f"use a version such as {DEFAULT_RUBY_VERSION!r}",
            )
        ami_tools_url = self.text("ami_tools_url", AMI_TOOLS_URL) or AMI_TOOLS_URL
        self.check_url("ami_tools_url", ami_tools_url)
        install_source = self.source("install_source", allow_url=True) or Source(url=ami_tools_url)
        self.check_tools_archive(install_source)

        prefix = self.text("prefix", "image") or "image"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", prefix):
            self.problem(
                "prefix",
                f"{prefix!r} is not a safe bundle file prefix",
                "use letters, digits, '.', '_' and '-' (starting with a letter or digit)",
            )
        bucket = self.text("s3_bucket")
        if bucket:
            _check_bucket(self, bucket)
        s3_path = (self.text("s3_path", "") or "").strip("/")
        if s3_path and not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]+", s3_path):
            self.problem(
                "s3_path",
                f"{s3_path!r} has characters unsafe in an S3 key prefix",
                "use letters, digits and ! _ . * ' ( ) - /",
            )
        expected_s3_manifest = "/".join(p for p in (bucket, s3_path, f"{prefix}.manifest.xml") if p)
        s3_manifest_path = self.text("s3_manifest_path", expected_s3_manifest) or expected_s3_manifest
        if s3_manifest_path != expected_s3_manifest:
            self.problem(
                "s3_manifest_path",
                f"{s3_manifest_path!r} is not where ec2-upload-bundle puts the manifest",
                f"remove it or set it to {expected_s3_manifest!r}",
            )
        expected_manifest = f"{destination_dir}/{prefix}.manifest.xml".replace("//", "/")
        manifest_path = self.node_path("manifest_path", expected_manifest) or expected_manifest
        if manifest_path != expected_manifest:
            self.problem(
                "manifest_path",
                f"{manifest_path!r} is not where ec2-bundle-vol writes the manifest",
                f"remove it or set it to {expected_manifest!r}",
            )

        arch = self.choice("arch", "x86_64", ARCHITECTURES)
        virtualization_type = self.text("virtualization_type")
        if virtualization_type is not None and virtualization_type not in VIRTUALIZATION_TYPES:
            self.problem(
                "virtualization_type",
                f"{virtualization_type!r} is not one of {', '.join(VIRTUALIZATION_TYPES)}",
                "use paravirtual or hvm",
            )
        kernel_id = self.image_ref("kernel_id", "aki")
        ramdisk_id = self.image_ref("ramdisk_id", "ari")
        block_device_mappings = self.block_device_mappings()
        image_size_mb = self.values.get("image_size_mb")
        if image_size_mb is not None and (
            isinstance(image_size_mb, bool)
            or not isinstance(image_size_mb, int)
            or not 1 <= image_size_mb <= 10240
        ):
            self.problem(
                "image_size_mb",
                f"{image_size_mb!r} is not a size from 1 to 10240 MB",
                "give a whole number of MB up to 10240 (ec2-bundle-vol's maximum)",
            )
            image_size_mb = None
        # ec2-bundle-vol's default (inherit) fails on Ruby 3 and wherever IMDSv2 is required.
        inherit = self.flag("inherit", False)
        bundler = self.choice("bundler", "native", BUNDLERS)
        if virtualization_type is None and bundler == "native":
            # A native build makes a whole disk with GRUB, which EC2 boots as HVM.
            virtualization_type = "hvm"
        if virtualization_type == "hvm" and (kernel_id or ramdisk_id):
            self.problem(
                "kernel_id" if kernel_id else "ramdisk_id",
                "an hvm image boots its own kernel through its boot loader; EC2 takes no kernel or "
                "ramdisk for it",
                'remove kernel_id and ramdisk_id, or set virtualization_type = "paravirtual"',
            )
        partition = self.choice("partition", "none", PARTITIONS)
        upload_credentials = self.choice("upload_credentials", "keys", UPLOAD_CREDENTIALS)
        upload_concurrency = self.values.get("upload_concurrency", DEFAULT_UPLOAD_CONCURRENCY)
        if (
            isinstance(upload_concurrency, bool)
            or not isinstance(upload_concurrency, int)
            or not (1 <= upload_concurrency <= MAX_UPLOAD_CONCURRENCY)
        ):
            self.problem(
                "upload_concurrency",
                f"{upload_concurrency!r} is not a number of parts from 1 to {MAX_UPLOAD_CONCURRENCY}",
                "give how many parts the node uploads at once, e.g. 4",
            )
            upload_concurrency = DEFAULT_UPLOAD_CONCURRENCY
        if bundler == "ami-tools":
            self.ami_tools_limits(
                arch, session_token if secret_key else None, upload_credentials, inherit, strategy
            )
            self.ami_tools_image_limits(virtualization_type, partition)
        else:
            self.native_limits(arch)
        volume = self.node_path("volume", "/") or "/"
        ec2_certificate_source = self.source("ec2_certificate_source")
        ec2_cert_pem = self.read_source("ec2_certificate_source", ec2_certificate_source) or ""
        if ec2_cert_pem:
            try:
                # Expiry is not checked: EC2's certificates are long expired and still in use.
                x509.load_pem_x509_certificate(ec2_cert_pem.encode("ascii"))
            except ValueError:
                self.problem(
                    "ec2_certificate_source",
                    "is not a PEM X.509 certificate",
                    "give EC2's cert-ec2*.pem from the ec2-ami-tools archive",
                )
        # Given only to resume a build after ami-register (e.g. to run a test phase alone).
        image_id = self.text("image_id")
        if image_id is not None and not re.fullmatch(r"ami-[0-9a-f]{8}([0-9a-f]{9})?", image_id):
            self.problem(
                "image_id", f"{image_id!r} is not an AMI id", "give an id like ami-0123456789abcdef0"
            )

        extra = tuple(self.path_list("extra_exclusions"))
        given = tuple(self.path_list("exclusions"))
        # The fix for the crate's defect: everything amidsl puts on the node is always excluded.
        mandatory = (install_dir, credential_dir, destination_dir, NODE_STATE_DIR)
        exclusions = tuple(dict.fromkeys(mandatory + given + extra))

        private_key_source = self.source("private_key_source")
        certificate_source = self.source("certificate_source")
        key_pem = self.read_source("private_key_source", private_key_source)
        cert_pem = self.read_source("certificate_source", certificate_source)
        cert_pem = self.check_credentials(key_pem, cert_pem)

        publishing = self.publishing(region, user_id, virtualization_type)
        selection = self.selection()

        if self.problems:
            return None
        return AmiSettings(
            image_name=image_name or "",
            image_description=description,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            region=region or "",
            user_id=user_id or "",
            user=user,
            exclusions=exclusions,
            extra_exclusions=extra,
            install_strategy=strategy,
            install_dir=install_dir,
            install_source=install_source,
            ami_tools_url=ami_tools_url,
            install_ruby=strategy != "none",
            ruby_version=ruby_version,
            destination_dir=destination_dir,
            credential_dir=credential_dir,
            private_key_source=private_key_source or Source(),
            certificate_source=certificate_source or Source(),
            private_key_path=private_key_path or "",
            certificate_path=certificate_path or "",
            arch=arch,
            s3_bucket=bucket or "",
            s3_path=s3_path,
            s3_manifest_path=s3_manifest_path,
            manifest_path=manifest_path,
            prefix=prefix,
            image_size_mb=image_size_mb,
            inherit=inherit,
            virtualization_type=virtualization_type,
            kernel_id=kernel_id,
            ramdisk_id=ramdisk_id,
            block_device_mappings=block_device_mappings,
            certificate_pem=cert_pem or "",
            private_key_pem=Secret(key_pem or ""),
            image_id=image_id,
            bundler=bundler,
            volume=volume,
            ec2_certificate_source=ec2_certificate_source,
            ec2_certificate_pem=ec2_cert_pem,
            partition=partition,
            upload_credentials=upload_credentials,
            upload_concurrency=upload_concurrency,
            **publishing,
            **selection,
        )

    def check_region(self, name: str, region: str) -> bool:
        """Record a problem unless `region` is a region AWS has; True when it is."""
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
            self.problem(
                name, f"{region!r} is not an AWS region name", "use a region code such as 'us-east-1'"
            )
            return False
        if known_regions() and region not in known_regions():
            close = difflib.get_close_matches(region, sorted(known_regions()), n=1)
            self.problem(
                name,
                f"{region!r} is not a region AWS has (per the partition data boto3 ships)",
                f"did you mean {close[0]!r}?" if close else "use a region code such as 'us-east-1'",
            )
            return False
        return True

    def ami_tools_image_limits(self, virtualization_type: str | None, partition: str) -> None:
        """An image ec2-bundle-vol makes that EC2 could not boot, refused before anything runs."""
        if virtualization_type == "hvm" and partition == "none":
            self.problem(
                "virtualization_type",
                "'hvm' boots the image as a whole disk through BIOS, but partition 'none' makes a "
                "plain filesystem image without a partition table or boot loader",
                'use virtualization_type = "paravirtual" (pv-grub), or partition = "mbr" (needs legacy '
                "grub, a /dev/xvd* or /dev/sd* root device, dmsetup, kpartx, parted and sgdisk on the node)",
            )

    def native_limits(self, arch: str) -> None:
        """What a native build cannot make into an image EC2 launches, refused before anything runs."""
        if arch == "arm64":
            self.problem(
                "arch",
                "no instance type launches an arm64 instance-store AMI (only Xen x86 types launch "
                "instance-store AMIs), and the hvm images of native builds boot through GRUB for BIOS "
                "(i386-pc), which arm64 systems lack",
                'build from an x86_64 node with arch = "x86_64"',
            )

    def ami_tools_limits(
        self, arch: str, session_token: Secret | None, upload_credentials: str, inherit: bool, strategy: str
    ) -> None:
        """What ec2-ami-tools 1.5 cannot do, refused before anything runs."""
        if arch == "arm64":
            self.problem(
                "arch",
                "'arm64' is not supported by ec2-bundle-vol (it prints 'Unsupported architecture' and "
                "carries on), and no instance type launches an arm64 instance-store AMI",
                'use arch = "x86_64" (or "i386") with bundler = "ami-tools"',
            )
        if session_token is not None and upload_credentials == "keys":
            self.problem(
                "session_token",
                "ec2-upload-bundle drops the session token under SigV4, so S3 rejects temporary "
                "credentials with the ami-tools strategy",
                'use bundler = "native" (the token stays on the controller), or '
                'upload_credentials = "instance-profile" (the node\'s instance profile uploads)',
            )
        if inherit and strategy in ("package", "none"):
            self.problem(
                "inherit",
                "inherit reads instance metadata with Kernel#open, which fails on Ruby 3 (a "
                f"distribution Ruby, as install_strategy {strategy!r} may give)",
                'remove inherit, or set install_strategy = "rbenv" (Ruby 2.7; the instance must also '
                "allow IMDSv1)",
            )

    def aws_credentials(self) -> tuple[str | None, Secret | None, Secret | None]:
        access_key = self.text("access_key")
        secrets: list[Secret | None] = []
        for name in ("secret_key", "session_token"):
            value = self.values.get(name)
            if isinstance(value, str) and value:
                value = Secret(value)
            elif value is not None and not isinstance(value, Secret):
                self.problem(
                    name,
                    f"must be a string, got {type(value).__name__}",
                    f"quote the value, or remove {name} to use the AWS credential chain",
                )
                value = None
            secrets.append(value or None)
        secret_key, session_token = secrets
        if access_key is not None and not re.fullmatch(r"(AKIA|ASIA)[A-Z0-9]{16}", access_key):
            # Never echo it: a value here that is no key id may well be the secret key, swapped.
            self.problem(
                "access_key",
                f"a {len(access_key)}-character value that is not an AWS access key id"
                + (
                    " (it has the length of a secret key: are the two swapped?)"
                    if len(access_key) == 40
                    else ""
                ),
                "give the 20-character key id (AKIA... or ASIA...) here and the secret in secret_key",
            )
        if (access_key is None) != (secret_key is None):
            missing = "secret_key" if secret_key is None else "access_key"
            self.problem(
                missing,
                "is missing while its partner is set",
                "give both access_key and secret_key, or neither to use the AWS credential chain",
            )
        if session_token is not None and secret_key is None:
            self.problem(
                "session_token",
                "is set without access_key and secret_key",
                "give the temporary access_key and secret_key that go with the token",
            )
        return access_key, secret_key, session_token

    def account_id(self) -> str | None:
        value = self.values.get("user_id")
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:012d}"
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem("user_id", f"must be a string, got {value!r}", 'quote it: user_id = "..."')
            return None
        digits = value.replace("-", "").strip()
        if re.fullmatch(r"(AKIA|ASIA)[A-Z0-9]{16}", digits):
            self.problem(
                "user_id",
                "the value is an access key id, not an account id",
                "give your 12-digit AWS account id (put the key id in access_key)",
            )
        elif not re.fullmatch(r"\d{12}", digits):
            self.problem(
                "user_id",
                f"{value!r} is not a 12-digit AWS account id",
                "give your 12-digit account id, e.g. '1234-5678-9012' or '123456789012'",
            )
        return digits

    def install_strategy(self) -> str:
        install_ruby = self.flag("install_ruby", True)
        default = "auto" if install_ruby else "none"
        strategy = self.choice("install_strategy", default, INSTALL_STRATEGIES)
        if not install_ruby and strategy != "none":
            self.problem(
                "install_ruby",
                f"is false but install_strategy is {strategy!r}",
                'remove install_ruby, or set install_strategy = "none"',
            )
        return strategy

    def pattern_list(self, name: str) -> tuple[str, ...]:
        """Paths or fnmatch patterns in the image: absolute, or starting with `*`."""
        patterns = []
        for entry in self.text_list(name):
            if not entry.startswith(("/", "*")) or "\n" in entry or "\0" in entry or "," in entry:
                self.problem(
                    name,
                    f"entry {entry!r} is not a path or pattern in the image",
                    "write absolute paths or patterns such as '/etc/ssl/certs/*.pem' or '*/.env' "
                    "(no commas or line breaks)",
                )
                continue
            patterns.append(entry)
        return tuple(patterns)

    def selection(self) -> dict[str, Any]:
        """includes (after the built-in ones), exclude_patterns, and the hygiene items kept."""
        includes = tuple(dict.fromkeys(DEFAULT_INCLUDES + self.pattern_list("includes")))
        pairs = zip(HYGIENE_NAMES, HYGIENE_KEEP_KEYS, strict=True)
        keep = tuple(name for name, key in pairs if self.flag(key, False))
        return {
            "includes": includes,
            "exclude_patterns": self.pattern_list("exclude_patterns"),
            "hygiene_keep": keep,
        }

    def path_list(self, name: str) -> list[str]:
        paths = []
        for entry in self.text_list(name):
            normal = os.path.normpath(entry) if entry.startswith("/") else None
            if normal is None or "\n" in entry or "," in entry:
                self.problem(
                    name,
                    f"entry {entry!r} is not an absolute path without commas",
                    "list absolute directories on the node (ec2-bundle-vol -e is comma-separated)",
                )
                continue
            if normal in ("/", "//"):
                self.problem(
                    name, "entry '/' would exclude the whole volume", "list only the directories to leave out"
                )
                continue
            paths.append(normal)
        return paths

    def image_ref(self, name: str, kind: str) -> str | None:
        value = self.text(name)
        if value is not None and not re.fullmatch(rf"{kind}-[0-9a-f]{{8}}([0-9a-f]{{9}})?", value):
            self.problem(name, f"{value!r} is not a {kind}- image id", f"give an id like {kind}-1a2b3c4d")
        return value

    def block_device_mappings(self) -> tuple[tuple[str, str], ...]:
        value = self.values.get("block_device_mappings", [])
        example = 'block_device_mappings = [{ device_name = "/dev/sdb", virtual_name = "ephemeral0" }]'
        if not isinstance(value, list | tuple):
            self.problem(
                "block_device_mappings", f"must be a list of tables, got {value!r}", f"write {example}"
            )
            return ()
        mappings = []
        for entry in value:
            table = (
                {str(k).replace("-", "_"): v for k, v in entry.items()} if isinstance(entry, Mapping) else {}
            )
            device, virtual = table.get("device_name"), table.get("virtual_name")
            if (
                set(table) != {"device_name", "virtual_name"}
                or not isinstance(device, str)
                or not re.fullmatch(r"/dev/[a-z0-9]+", device)
                or not isinstance(virtual, str)
                or not re.fullmatch(r"ephemeral\d+", virtual)
            ):
                self.problem(
                    "block_device_mappings", f"entry {entry!r} is not a device mapping", f"write {example}"
                )
                continue
            mappings.append((device, virtual))
        return tuple(mappings)

    # -- after registering ---------------------------------------------------------------------

    def publishing(
        self, region: str | None, user_id: str | None, virtualization: str | None
    ) -> dict[str, Any]:
        """The settings of what happens after RegisterImage, as AmiSettings fields."""
        wait = self.values.get("image_wait_seconds", DEFAULT_IMAGE_WAIT_SECONDS)
        if isinstance(wait, bool) or not isinstance(wait, int) or not 1 <= wait <= 86400:
            self.problem(
                "image_wait_seconds",
                f"{wait!r} is not a number of seconds from 1 to 86400",
                "give how long to wait for each image to become available, e.g. 1800",
            )
            wait = DEFAULT_IMAGE_WAIT_SECONDS
        return {
            **self.register_attributes(virtualization),
            "tags": self.tag_table("tags", MAX_IMAGE_TAGS - 1, r".*"),
            # S3 object tags allow fewer characters than EC2 tags.
            "bundle_tags": self.tag_table("bundle_tags", MAX_OBJECT_TAGS, r"[\w\s+=.:/@-]*"),
            "launch_permissions": self.launch_permissions(user_id),
            "public_image": self.flag("public_image", False),
            "copy_to_regions": self.copy_regions(region),
            "force_deregister": self.flag("force_deregister", False),
            "image_wait_seconds": wait,
        }

    def register_attributes(self, virtualization: str | None) -> dict[str, Any]:
        """RegisterImage's optional attributes, as EC2 takes them for an instance-store image."""
        if self.values.get("boot_mode") == "uefi":
            self.problem(
                "boot_mode",
                "'uefi' cannot boot an instance-store image: its root device runs only on Xen instance "
                "types (C1, C3, D2, I2, M1, M2, M3, R3, X1), which boot with legacy BIOS",
                'use boot_mode = "legacy-bios" (or "uefi-preferred", which falls back to it), or remove it',
            )
            boot_mode = None
        else:
            boot_mode = self.optional_choice("boot_mode", BOOT_MODES)
        ena_support = None if self.values.get("ena_support") is None else self.flag("ena_support", False)
        sriov = self.optional_choice("sriov_net_support", SRIOV_NET_SUPPORT)
        for name, value in (
            ("boot_mode", boot_mode),
            ("ena_support", ena_support),
            ("sriov_net_support", sriov),
        ):
            if value is not None and virtualization != "hvm":
                self.problem(
                    name,
                    "EC2 supports it only for HVM images (a paravirtual instance may become unreachable)",
                    'set virtualization_type = "hvm", or remove it',
                )
        return {
            "imds_support": self.optional_choice("imds_support", IMDS_SUPPORT),
            "boot_mode": boot_mode,
            "ena_support": ena_support,
            "sriov_net_support": sriov,
        }

    def copy_regions(self, region: str | None) -> tuple[str, ...]:
        """copy_to_regions: regions AWS has, other than the build's own, each once."""
        copies = self.text_list("copy_to_regions")
        for copy in copies:
            if self.check_region("copy_to_regions", copy) and copy == region:
                self.problem(
                    "copy_to_regions", f"{copy!r} is the build's own region", "list only other regions"
                )
        if len(set(copies)) != len(copies):
            self.problem("copy_to_regions", "lists a region twice", "list each region once")
        return copies

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        """A setting that is absent (None) or one of `choices` (anything else is a problem, and None)."""
        value = self.text(name)
        if value is not None and value not in choices:
            self.problem(
                name,
                f"{value!r} is not one of {', '.join(choices)}",
                f"use {' or '.join(repr(c) for c in choices)}, or remove it",
            )
            return None
        return value

    def tag_table(self, name: str, most: int, allowed: str) -> tuple[tuple[str, str], ...]:
        """A table of tag keys to values, with AWS's limits (key 1-128, value at most 256 characters)."""
        value = self.values.get(name, {})
        example = f'{name} = {{ team = "web", stage = "prod" }}'
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a table of strings, got {value!r}", f"write {example}")
            return ()
        tags = []
        for key, text in value.items():
            key = str(key)
            if not isinstance(text, str):
                self.problem(f"{name}.{key}", f"must be a string, got {text!r}", f'quote it: {key} = "..."')
            elif not 1 <= len(key) <= 128 or len(text) > 256:
                self.problem(
                    f"{name}.{key}", "is too long", "keep keys to 1-128 and values to 256 characters at most"
                )
            elif key.lower().startswith("aws:") or key == BUILT_BY_TAG:
                self.problem(
                    f"{name}.{key}",
                    "is a reserved tag key (aws: belongs to AWS, amidsl:built-by to amidsl)",
                    "choose another key",
                )
            elif not (re.fullmatch(allowed, key) and re.fullmatch(allowed, text)):
                self.problem(
                    f"{name}.{key}",
                    "has characters S3 does not allow in an object tag",
                    "use letters, digits, spaces and + - = . _ : / @",
                )
            else:
                tags.append((key, text))
        if len(tags) > most:
            self.problem(
                name, f"has {len(tags)} tags", f"give at most {most} (AWS's limit, amidsl's own aside)"
            )
        return tuple(tags)

    def launch_permissions(self, user_id: str | None) -> tuple[str, ...]:
        """Who else may launch the image: account ids, organization ARNs and OU ARNs (public apart)."""
        entries = []
        for entry in self.text_list("launch_permissions"):
            account = entry.replace("-", "") if re.fullmatch(r"[\d-]+", entry) else entry
            if entry.lower() in ("all", "public"):
                self.problem(
                    "launch_permissions",
                    f"{entry!r} would make the image public",
                    "to let every AWS account launch it, set public_image = true (not in this list)",
                )
            elif account == user_id:
                self.problem(
                    "launch_permissions",
                    f"{entry!r} is the image's own account, which can always launch it",
                    "list only other accounts",
                )
            elif not (
                re.fullmatch(r"\d{12}", account)
                or ORGANIZATION_ARN.fullmatch(entry)
                or OU_ARN.fullmatch(entry)
            ):
                self.problem(
                    "launch_permissions",
                    f"{entry!r} is not an account id, an organization ARN or an organizational unit ARN",
                    "give 12-digit account ids, arn:aws:organizations::ACCOUNT:organization/o-... or "
                    "arn:aws:organizations::ACCOUNT:ou/o-.../ou-...",
                )
            else:
                entries.append(account)
        return tuple(dict.fromkeys(entries))

    def check_credentials(self, key_pem: str | None, cert_pem: str | None) -> str | None:
        """The key and certificate parse as PEM, the key is RSA, and they belong together.

        Returns the certificate as amidsl uses it: re-encoded from the parsed certificate, so nothing
        else in its file (a private key, comments) can reach the node, a script or a plan.
        """
        key = cert = None
        if key_pem is not None and _pem_labels(key_pem)[1:]:
            self.problem(
                "private_key_source",
                f"holds {len(_pem_labels(key_pem))} PEM blocks, not just the private key",
                "give a file with only your private key in it",
            )
            key_pem = None
        if cert_pem is not None and any(label != "CERTIFICATE" for label in _pem_labels(cert_pem)):
            # Never name the block: it may be a private key, whose headers messages do not quote.
            self.problem(
                "certificate_source",
                "holds more than a certificate (another PEM block, perhaps a private key)",
                "give a file with only the certificate: it is copied to the node and shown in plans",
            )
            cert_pem = None
        elif cert_pem is not None and len(_pem_labels(cert_pem)) > 1:
            self.problem(
                "certificate_source",
                f"holds {len(_pem_labels(cert_pem))} certificates",
                "give a file with only the certificate that belongs to your private key",
            )
            cert_pem = None
        if key_pem is not None:
            try:
                key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
            except (ValueError, TypeError, UnicodeEncodeError):
                # Never echo the content: say only what kind of problem it is.
                self.problem(
                    "private_key_source",
                    "is not an unencrypted PEM private key",
                    "give your RSA private key as an unencrypted PEM file (PKCS#1 or PKCS#8), without a "
                    "passphrase",
                )
            else:
                if not isinstance(key, rsa.RSAPrivateKey):
                    self.problem(
                        "private_key_source",
                        "is not an RSA key",
                        "ec2-ami-tools sign with RSA: give your RSA signing key",
                    )
                    key = None
        if cert_pem is not None:
            try:
                cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                self.problem(
                    "certificate_source",
                    "is not a PEM X.509 certificate",
                    "give the certificate file (-----BEGIN CERTIFICATE-----)",
                )
        if key is not None and cert is not None:
            cert_key = cert.public_key()
            if not isinstance(cert_key, rsa.RSAPublicKey) or (
                cert_key.public_numbers() != key.public_key().public_numbers()
            ):
                self.problem(
                    "private_key_source",
                    "does not match certificate_source",
                    "give the private key that belongs to the certificate (they were created together)",
                )
        if cert is None:
            return cert_pem
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _pem_labels(text: str) -> list[str]:
    """The labels of the PEM blocks in a text (e.g. ["CERTIFICATE"])."""
    return re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", text)


def _check_image_name(checker: _Checker, name: str) -> None:
    if not 3 <= len(name) <= 128:
        checker.problem(
            "image_name", f"{name!r} has {len(name)} characters", "give an AMI name of 3 to 128 characters"
        )
    bad = sorted(set(re.sub(r"[A-Za-z0-9()\[\]./\-'@_ ]", "", name)))
    if bad:
        checker.problem(
            "image_name",
            f"{name!r} contains characters EC2 refuses ({''.join(bad)!r})",
            "use letters, digits, spaces and ( ) [ ] . / - ' @ _",
        )


def _check_bucket(checker: _Checker, bucket: str) -> None:
    rules = []
    if not 3 <= len(bucket) <= 63:
        rules.append("3 to 63 characters")
    if not re.fullmatch(r"[a-z0-9.-]*", bucket):
        rules.append("only lowercase letters, digits, '.' and '-'")
    if not (bucket[:1].isalnum() and bucket[-1:].isalnum()):
        rules.append("start and end with a letter or digit")
    if ".." in bucket:
        rules.append("no '..'")
    try:
        ipaddress.ip_address(bucket)
        rules.append("not an IP address")
    except ValueError:
        pass
    if rules:
        checker.problem(
            "s3_bucket",
            f"{bucket!r} is not a valid S3 bucket name",
            "a bucket name needs " + "; ".join(rules),
        )


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
