#!/usr/bin/env python3
"""amidsl's node-side program: image the node's volume, bundle it, upload the parts.

It runs on the node being imaged, as root, with nothing but Python >= 3.8 (standard library),
OpenSSL's libcrypto (through ctypes) and e2fsprogs' mke2fs; an hvm image (a bootable disk) also
needs the volume's GRUB 2 for BIOS (grub-mkimage and /usr/lib/grub/i386-pc). amidsl copies it to a
private temporary directory for the build and removes it afterwards.

    python3 amidsl_node.py check    < request.json
    python3 amidsl_node.py bundle   < request.json
    python3 amidsl_node.py upload   < request.json

The request is one JSON object on standard input, so that the AES key and IV and the presigned
upload URLs (which carry signatures) never appear in any process's argument list, which every
user of the node can read, and are never written to disk. Progress goes to standard error; the
result is one JSON object, the last line of standard output. A failure exits non-zero with one
line `amidsl-node: error: ...` on standard error. The first line on standard error names the
pid, so that the caller can stop the run with SIGINT; Ctrl-C or SIGTERM removes what was half made.

Requests (optional keys in brackets) and results:

    check   {volume, destination_dir, [exclude], [virtualization_type]}
            -> {python, mke2fs, libcrypto, free_bytes, volume_bytes, volume_fs{type, uuid, label},
                virtualization_type, grub (version or null), warnings[text]};
               fails, with the figures, when destination_dir has too little free space
    bundle  {volume, exclude, includes, filter, destination_dir, prefix, image_size_mb, key, iv,
             part_size, workers (0: all cores), [level (zlib, default 3)],
             [staging ("auto", the default: a private view of the volume where the node allows,
             else a staging tree of hard links; "links": always the staging tree)],
             [virtualization_type ("paravirtual", the default: a filesystem image; "hvm": a disk
             with an MBR partition table, the filesystem at 1 MiB and GRUB 2 for BIOS)]}
            -> {prefix, image_size, digest, bundled_size, parts[{filename, size, sha1, md5}],
                volume_fs, virtualization_type, grub, warnings, left_out[[path, reason]] (the first 200),
                seconds{check, stage, mke2fs, bundle, remove} (where the time went),
                cpu_seconds{the same steps} (CPU time of this program and mke2fs),
                deflated_ahead{made, used} (chunks deflated while mke2fs ran, and reused)}
    upload  {destination_dir, parts[{filename, url, headers, [size], [sha1]}], concurrency,
             retries, [retry_pause (seconds, default 1)]}
            -> {uploaded[filename], failed[{filename, status, reason}], expired[filename]};
               exit 3 when URLs expired (presign those again), 1 when a part failed for good
    cleanup {volume, destination_dir, [prefix]}
            -> {removed[path]}: what earlier runs that died (SIGKILL, a lost node) left behind;
               bundle does the same first. A live run's files (its pid still runs) are kept.

The bundle is the format ec2-bundle-vol makes: a GNU tar of the image file -> SHA-1 of that tar
stream (the image digest) -> gzip -> AES-128-CBC -> 10 MiB parts `<prefix>.part.<i>`. The
manifest is built and signed elsewhere, from the result this program prints: the signing key
never comes to the node.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import hashlib
import json
import math
import os
import posixpath
import queue
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

# The names amidsl's controller and simulator may import from this program (the same bundle format,
# filter and hygiene on both sides). Everything else is private to the node: change it freely.
CONTROLLER_API = (
    "ALWAYS_EXCLUDED",
    "BLOCK",
    "BLOCK_SIZE",
    "boot_loader_state",
    "bundle_stream",
    "Cleanup",
    "command_upload",
    "copy_sparse",
    "create_private_file",
    "data_regions",
    "DataRegion",
    "DEFAULT_FILTER",
    "DEFAULT_INCLUDES",
    "DirectoryChain",
    "Emptied",
    "EBS_BLOCK_SIZE",
    "EncryptingSink",
    "END_OF_BLOCKS",
    "estimate_size_mb",
    "GRUB_FILES",
    "GRUB_PLATFORM",
    "HOST_KEY_GENERATORS",
    "HYGIENE",
    "HYGIENE_EMPTY_DIR",
    "HYGIENE_EMPTY_FILE",
    "hygiene_items",
    "HYGIENE_LEAVE_OUT",
    "HYGIENE_NAMES",
    "HygieneItem",
    "image_path_of",
    "inode_count",
    "LEFT_OUT_ALWAYS",
    "LEFT_OUT_EMPTIED",
    "LEFT_OUT_EXCLUSION",
    "LEFT_OUT_FILTER",
    "LEFT_OUT_HYGIENE",
    "LEFT_OUT_IMAGE_FILE",
    "LEFT_OUT_NEWLINE",
    "LEFT_OUT_NON_LOCAL",
    "LEFT_OUT_PATTERN",
    "LEFT_OUT_SOCKET",
    "LEFT_OUT_UNREADABLE",
    "LINUX_PARTITION",
    "LOCAL_FS_TYPES",
    "MAX_IMAGE_MB",
    "MIN_HVM_IMAGE_MB",
    "NodeError",
    "non_local_mounts",
    "open_checked",
    "part_filename",
    "Partition",
    "PartWriter",
    "read_partition_table",
    "RECORD",
    "SECTOR",
    "Selected",
    "SizeTally",
    "Skipped",
    "SPARSE_IN_HEADER",
    "SPARSE_PER_EXTENSION",
    "STAGING_LINKS",
    "tar_one_file",
    "walk_volume",
)

MiB = 1024 * 1024
PART_SIZE = 10 * MiB
MAX_IMAGE_MB = 10240  # the largest image an S3-backed AMI may have
MIN_HVM_IMAGE_MB = 17  # the partition starts at 1 MiB, after GRUB's core image; its filesystem needs room
# The largest disk kept for an EBS snapshot: 2 TiB, as an MBR partition's 32-bit sector count allows
# (and EC2 boots an MBR root volume of at most 2 TiB).
MAX_DISK_MB = 2 * 1024 * 1024
# What a bundle makes: encrypted parts (an S3 bundle) or the disk kept whole (for an EBS snapshot).
OUTPUT_PARTS, OUTPUT_DISK = "parts", "disk"
MIN_MKE2FS = (1, 43)  # `mke2fs -d` (populate from a directory) arrived in e2fsprogs 1.43
PROGRESS_SECONDS = 3.0
LEFT_OUT_REPORTED = 200
STAGING_PREFIX = ".amidsl-staging-"  # then the run's pid and a dash, so a dead run's tree is known
GRUB_SCRATCH_PREFIX = ".amidsl-grub-"  # the same, for the scratch directory of grub-mkimage
# Every file of a run is created new (never one already there, nor through a symbolic link) and 0600.
PRIVATE_FILE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# ---------------------------------------------------------------------------------------------
# Errors and progress
# ---------------------------------------------------------------------------------------------


class NodeError(Exception):
    """An expected failure: its message names what failed and the fix, and is all we print."""


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like KeyboardInterrupt so that cleanup code runs."""


def say(line: str) -> None:
    """One progress line on standard error."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Progress:
    """Prints `<verb> X MiB of Y MiB (Z MiB/s)` at most every few seconds."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb, self.total = verb, total
        self.done = 0
        self.started = self.last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.report()

    def report(self) -> None:
        rate = self.done / MiB / max(time.monotonic() - self.started, 1e-6)
        say(f"{self.verb} {self.done // MiB} MiB of {self.total // MiB} MiB ({rate:.0f} MiB/s)")


# ---------------------------------------------------------------------------------------------
# What goes into the image: ec2-bundle-vol's selection rules
# ---------------------------------------------------------------------------------------------

ALWAYS_EXCLUDED = ("/dev", "/media", "/mnt", "/proc", "/sys")
DEFAULT_FILTER = (
    "*/#*#",
    "*/.#*",
    "*.sw",
    "*.swo",
    "*.swp",
    "*~",
    "*.pem",
    "*.priv",
    "*id_rsa*",
    "*id_dsa*",
    "*.gpg",
    "*.jks",
    "*/.ssh/authorized_keys",
    "*/.bash_history",
)
# A path a pattern matches holds the pattern's longest literal piece: searching for those pieces all at
# once is three times faster than matching the patterns, and few paths hold one.
_ANY_FILTER_PIECE = re.compile("|".join(re.escape(max(p.split("*"), key=len)) for p in DEFAULT_FILTER)).search
# Filesystems on local disks. Mounts of anything else under the volume (network filesystems,
# tmpfs, proc, overlays, squashfs...) are left out, as ec2-bundle-vol leaves out non-local mounts.
LOCAL_FS_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "jfs", "reiserfs", "f2fs", "vfat", "msdos", "exfat"}
)

# ---------------------------------------------------------------------------------------------
# Image hygiene: what an image others launch (or share) must not carry, and what is reset instead
# ---------------------------------------------------------------------------------------------
#
# Sources: AWS's guidelines for shared Linux AMIs (remove SSH host keys and authorized keys, leave out
# credentials and shell history), cloud-init's `clean` (instance state, logs, machine-id), systemd's
# notes on building images (an empty /etc/machine-id, no random seed shared between machines) and the
# operations of libguestfs' virt-sysprep (histories, DHCP leases, logs, temporary files, user keys).
# Patterns are image paths matched as fnmatch does (`*` also crosses `/`). Unlike the filter, includes
# do not override an item: a user keeps one with its own setting, keep_<name> = true.

HYGIENE_LEAVE_OUT = "left out"
HYGIENE_EMPTY_FILE = "kept as an empty file (same owner and mode)"
HYGIENE_EMPTY_DIR = "kept as an empty directory (same owner and mode)"


class HygieneItem(NamedTuple):
    """One kind of thing a shared image must not carry: what it matches and what is done with it."""

    name: str  # the setting keep_<name> keeps it
    patterns: tuple
    treatment: str  # HYGIENE_LEAVE_OUT, HYGIENE_EMPTY_FILE (regular files only) or HYGIENE_EMPTY_DIR
    what: str  # for the preview: what it is, and why it goes


HYGIENE = (
    HygieneItem(
        "ssh_host_keys",
        ("/etc/ssh/ssh_host_*",),
        HYGIENE_LEAVE_OUT,
        "SSH host keys: every instance would share the node's identity (AWS: remove them); new ones "
        "are made at first boot by cloud-init, the distribution's sshd-keygen, or a unit amidsl adds",
    ),
    HygieneItem(
        "private_keys",
        (
            "*/.ssh/id_*",
            "*/.ssh/*_rsa",
            "*/.ssh/*_ed25519",
            "*/.ssh/*_ecdsa",
            "*/.ssh/*.key",
            "*/.gnupg",
            "/etc/ssl/private/*",
            "/etc/pki/tls/private/*",
        ),
        HYGIENE_LEAVE_OUT,
        "users' SSH and GnuPG private keys and TLS private keys (of any type, whatever their name)",
    ),
    HygieneItem(
        "authorized_keys",
        ("*/.ssh/authorized_keys*", "*/.ssh/known_hosts*"),
        HYGIENE_LEAVE_OUT,
        "authorized and known SSH keys: the builder's logins (AWS: instances get the launch key pair)",
    ),
    HygieneItem(
        "histories",
        (
            "*/.*_history",
            "*/.*hsts",
            "*/.histfile",
            "*/.lesshst",
            "*/.viminfo",
            "*/.local/share/fish/fish_history",
            "*/.local/share/recently-used.xbel",
        ),
        HYGIENE_LEAVE_OUT,
        "shell, database, editor and pager histories (AWS: remove shell history)",
    ),
    HygieneItem(
        "credentials",
        (
            "*/.aws/credentials",
            "*/.aws/config",
            "*/.aws/sso/cache",
            "*/.docker/config.json",
            "*/.git-credentials",
            "*/.config/gh/hosts.yml",
            "*/.config/gcloud",
            "*/.azure",
            "*/.kube/config",
            "*/.netrc",
            "*/.pgpass",
            "*/.my.cnf",
            "*/.npmrc",
            "*/.pypirc",
            "*/.vault-token",
            "*/.s3cfg",
            "*/.boto",
            "*/.terraform.d/credentials.tfrc.json",
        ),
        HYGIENE_LEAVE_OUT,
        "cloud and tool credentials in home directories (AWS: never leave credentials in an image)",
    ),
    HygieneItem(
        "cloud_init_state",
        (
            "/var/lib/cloud/instance",
            "/var/lib/cloud/instances",
            "/var/lib/cloud/data",
            "/var/lib/cloud/sem",
            "/var/lib/cloud/handlers",
        ),
        HYGIENE_LEAVE_OUT,
        "cloud-init's state of this instance (user data, its scripts' outputs), as `cloud-init clean` "
        "removes it, so that cloud-init runs again on each new instance",
    ),
    HygieneItem(
        "machine_id",
        ("/etc/machine-id", "/var/lib/dbus/machine-id"),
        HYGIENE_EMPTY_FILE,
        "the machine id: an empty /etc/machine-id makes systemd give each instance a new one at boot",
    ),
    HygieneItem(
        "logs",
        ("/var/log/*",),
        HYGIENE_EMPTY_FILE,
        "log files' contents (auth.log, syslog, the journal's files are left out): directories and "
        "files stay, empty, so that services find them",
    ),
    HygieneItem(
        "journal",
        ("/var/log/journal/*",),
        HYGIENE_LEAVE_OUT,
        "the systemd journal of this machine (an empty journal file would be a corrupt one)",
    ),
    HygieneItem(
        "dhcp_leases",
        (
            "/var/lib/dhcp/*",
            "/var/lib/dhclient/*",
            "/var/lib/NetworkManager/*.lease",
            "/var/lib/NetworkManager/*lease*",
            "/var/lib/systemd/network/*",
            "/var/lib/wicked/*",
        ),
        HYGIENE_LEAVE_OUT,
        "DHCP leases of this machine's network",
    ),
    HygieneItem(
        "random_seed",
        ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed", "/var/lib/random-seed"),
        HYGIENE_LEAVE_OUT,
        "the saved random seed: every instance would start from the same one",
    ),
    HygieneItem(
        "temporary_files",
        ("/tmp", "/var/tmp"),
        HYGIENE_EMPTY_DIR,
        "temporary files: /tmp and /var/tmp stay, empty, with their modes (1777)",
    ),
)
HYGIENE_NAMES = tuple(item.name for item in HYGIENE)
# Kept by the filter's includes by default: public keys and certificates the filter's *.pem and *.gpg
# patterns would take, without which the launched system cannot check TLS peers or package signatures.
DEFAULT_INCLUDES = (
    "/etc/ssl/certs/*.pem",
    "/etc/pki/ca-trust/*.pem",
    "/etc/pki/tls/certs/*.pem",
    # OpenSSL's default CA file: Debian's links to the bundle in /etc/ssl/certs, RHEL's to its own.
    "/usr/lib/ssl/cert.pem",
    "/etc/pki/tls/cert.pem",
    "/usr/share/keyrings/*.gpg",
    "/etc/apt/trusted.gpg.d/*.gpg",
    "/etc/apt/keyrings/*.gpg",
    "/usr/share/pki/*.pem",
    "*/certifi/cacert.pem",
    "*/pip/_vendor/certifi/cacert.pem",
    "*/botocore/cacert.pem",
)


def hygiene_items(keep: Iterable[str]) -> list[HygieneItem]:
    """The hygiene items to apply: all of them but those named in keep (NodeError for a wrong name)."""
    kept = set(keep)
    unknown = sorted(kept - set(HYGIENE_NAMES))
    if unknown:
        raise NodeError(f"hygiene keep {unknown} names no item; the items are {', '.join(HYGIENE_NAMES)}")
    return [item for item in HYGIENE if item.name not in kept]


def _literal_head(pattern: str) -> str:
    """The start of an fnmatch pattern up to its first wildcard."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


def _literal_tail(pattern: str) -> str:
    """The end of an fnmatch pattern after its last wildcard."""
    return re.split(r"[*?\]]", pattern)[-1]


def pattern_matcher(patterns: Iterable[str]) -> Callable[[str], int | None]:
    """One regular expression for many fnmatch patterns: the index of the first that matches a path."""
    patterns = list(patterns)
    if not patterns:
        return lambda path: None
    search = re.compile("|".join(f"(?P<p{i}>{fnmatch.translate(p)})" for i, p in enumerate(patterns))).match
    # Most paths match no pattern, and a regular expression of many `.*`s costs more than the rest of
    # the walk (homes full of dot-directories included). So first a necessary condition, in C: a path
    # an absolute pattern matches starts with the pattern's literal head; one a floating pattern
    # matches ends with its literal tail (`*/.*_history`), or holds the literal text after its leading
    # stars (`*/.ssh/id_*`). A wildcard where a literal is needed leaves "": every path is matched.
    heads = tuple(_literal_head(p) for p in patterns if not p.startswith("*"))
    floating = [p.lstrip("*") for p in patterns if p.startswith("*")]
    tails = tuple(_literal_tail(p) for p in floating if _literal_tail(p))
    inner = {_literal_head(p) for p in floating if not _literal_tail(p)}

    def worth_matching(path: str) -> bool:
        return path.startswith(heads) or path.endswith(tails) or any(piece in path for piece in inner)

    def first(path: str) -> int | None:
        found = worth_matching(path) and search(path)
        if not found:
            return None
        # By name: fnmatch's translation has groups of its own on some Pythons.
        return next(i for i in range(len(patterns)) if found.group(f"p{i}") is not None)

    return first


class HygieneRules:
    """Which hygiene item, if any, applies to an image path, and how (see HYGIENE)."""

    def __init__(self, items: Iterable[HygieneItem]) -> None:
        # Leaving out comes first: the journal's files under /var/log go, where other logs are emptied.
        order = (HYGIENE_LEAVE_OUT, HYGIENE_EMPTY_DIR, HYGIENE_EMPTY_FILE)
        self.items = sorted(items, key=lambda item: order.index(item.treatment))
        self._owners = [item for item in self.items for _ in item.patterns]
        self._match = pattern_matcher(p for item in self.items for p in item.patterns)

    def item_for(self, path: str, st: os.stat_result) -> HygieneItem | None:
        """The item path falls under, if its treatment applies to this kind of entry."""
        index = self._match(path)
        if index is None:
            return None
        item = self._owners[index]
        # Emptying is for regular files (a directory under /var/log is walked, a link to
        # /etc/machine-id stays a link), keeping empty for directories.
        if item.treatment == HYGIENE_EMPTY_FILE and not stat.S_ISREG(st.st_mode):
            return None
        if item.treatment == HYGIENE_EMPTY_DIR and not stat.S_ISDIR(st.st_mode):
            return None
        return item


# With its host keys left out, an image whose system makes none at boot would be unreachable over SSH.
# cloud-init (its ssh module, on each new instance) and the sshd-keygen units of RHEL, Fedora and
# Amazon Linux make them; elsewhere (Debian or Ubuntu without cloud-init) amidsl adds this unit, which
# runs `ssh-keygen -A` before the SSH server starts when no host key is there.
HOST_KEYS_UNIT = "amidsl-ssh-host-keys.service"
HOST_KEYS_UNIT_TEXT = """[Unit]
Description=Make the SSH host keys an image built by amidsl leaves out
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
CLOUD_INIT = ("cloud-init", ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg"))  # makes both at first boot
HOST_KEY_GENERATORS = (
    CLOUD_INIT,
    (
        "the distribution's sshd-keygen",
        tuple(
            f"{d}/systemd/system/sshd-keygen{u}"
            for d in ("/usr/lib", "/lib")
            for u in ("@.service", ".service")
        ),
    ),
)
# What installs the launch key pair's public key for the login user of a new instance.
LOGIN_KEY_SOURCES = (
    CLOUD_INIT,
    ("EC2 Instance Connect", ("/usr/share/ec2-instance-connect", "/opt/aws/bin/eic_run_authorized_keys")),
)


class AddedFile(NamedTuple):
    """A file the build adds to the image: text (mode) or, with link, a symbolic link."""

    path: str
    text: str = ""
    mode: int = 0o644
    link: str = ""


def _in_volume(volume: str, path: str) -> bool:
    """Whether the image path exists in the volume (a symbolic link not followed)."""
    return os.path.lexists(volume.rstrip("/") + path)


def _first_found(volume: str, sources: tuple) -> str:
    """The name of the first source one of whose paths exists in the volume, or ''."""
    for name, paths in sources:
        if any(_in_volume(volume, p) for p in paths):
            return name
    return ""


NO_SSH_SERVER = "no SSH server in the volume: none needed"


def _real_directory(volume: str, path: str) -> bool:
    """Whether every component of path in the volume is a directory, none a symbolic link."""
    where = volume.rstrip("/")
    for part in path.strip("/").split("/"):
        where += "/" + part
        try:
            if not stat.S_ISDIR(os.lstat(where).st_mode):
                return False
        except OSError:
            return False
    return True


def plan_host_keys(volume: str, items: Iterable[HygieneItem]) -> tuple[str, list[AddedFile]]:
    """How a launched instance gets SSH host keys, and the files to add to the image for it."""
    if "ssh_host_keys" not in {item.name for item in items}:
        return "kept from the node (keep_ssh_host_keys): every instance shares them", []
    if not _in_volume(volume, "/etc/ssh/sshd_config"):
        return NO_SSH_SERVER, []
    found = _first_found(volume, HOST_KEY_GENERATORS)
    if found:
        return f"made at first boot by {found}", []
    wants = "/etc/systemd/system/multi-user.target.wants"
    if not _real_directory(volume, wants) or not _in_volume(volume, "/usr/bin/ssh-keygen"):
        return (
            "none: the volume has no systemd unit directory or no ssh-keygen, so an instance would have "
            "no SSH host keys; install cloud-init, or set keep_ssh_host_keys = true",
            [],
        )
    unit = f"/etc/systemd/system/{HOST_KEYS_UNIT}"
    return (
        f"made at first boot by {unit}, which amidsl adds (ssh-keygen -A before the SSH server starts)",
        [AddedFile(unit, HOST_KEYS_UNIT_TEXT), AddedFile(f"{wants}/{HOST_KEYS_UNIT}", link=unit)],
    )


def login_key_source(volume: str, items: Iterable[HygieneItem]) -> str:
    """How an instance launched from the image gets its login key, or '' when nothing does."""
    if "authorized_keys" not in {item.name for item in items}:
        return "the node's own authorized_keys are kept (keep_authorized_keys)"
    if not _in_volume(volume, "/etc/ssh/sshd_config"):
        return NO_SSH_SERVER
    found = _first_found(volume, LOGIN_KEY_SOURCES)
    return f"{found} installs the launch key pair's public key" if found else ""


NO_LOGIN_KEY = (
    "nothing in the volume installs the launch key pair at boot (no cloud-init, no EC2 Instance "
    "Connect) and authorized_keys are left out, so no one can log in to an instance launched from "
    "the image; install cloud-init on the node, or set keep_authorized_keys = true"
)


def add_image_files(root: str, files: Iterable[AddedFile]) -> None:
    """Write the added files into the tree mke2fs reads (a staging tree or the view's covers)."""
    for added in files:
        target = root.rstrip("/") + added.path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)  # one of the node's own, of the same name: replaced
        if added.link:
            os.symlink(added.link, target)
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as written:
            written.write(added.text)
        os.chmod(target, added.mode)


def hygiene_report(left_out: Iterable[Skipped], items: Iterable[HygieneItem], shown: int = 5) -> dict:
    """Per hygiene item applied: its treatment, how many paths it took, and the first of them."""
    report = {item.name: {"treatment": item.treatment, "count": 0, "paths": []} for item in items}
    for entry in left_out:
        if entry.reason in (LEFT_OUT_HYGIENE, LEFT_OUT_EMPTIED) and entry.rule in report:
            found = report[entry.rule]
            found["count"] += 1
            if len(found["paths"]) < shown:
                found["paths"].append(entry.path)
    return report


# Why something was left out (the controller shows these words to the user).
LEFT_OUT_ALWAYS = "always-excluded directory"
LEFT_OUT_FILTER = "filter pattern"
LEFT_OUT_EXCLUSION = "caller exclusion"
LEFT_OUT_IMAGE_FILE = "the image file itself"
LEFT_OUT_NON_LOCAL = "non-local mount"
LEFT_OUT_SOCKET = "socket (its program recreates it at run time)"
LEFT_OUT_UNREADABLE = "unreadable"
LEFT_OUT_NEWLINE = "name contains a newline, which debugfs cannot address"
LEFT_OUT_HYGIENE = "image hygiene"  # the rule is the hygiene item's name
LEFT_OUT_EMPTIED = "image hygiene: contents left out, kept empty"
LEFT_OUT_PATTERN = "caller exclusion pattern"


class Selected(NamedTuple):
    """An entry that goes into the image: its path there, its path here, its lstat."""

    path: str
    source: str
    st: os.stat_result


class Skipped(NamedTuple):
    """A path kept out of the image, why, and which rule (directory, pattern, path) matched."""

    path: str
    reason: str
    rule: str


class Emptied(NamedTuple):
    """A regular file that goes into the image empty, with its owner, mode and times (see HYGIENE)."""

    path: str
    source: str
    st: os.stat_result
    rule: str  # the hygiene item


KERNEL_NAMES = ("vmlinuz", "vmlinux", "bzImage")  # how /boot names a kernel


def caller_leaves_out(exclusions: Iterable[str], exclude_patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether the caller's exclusions or exclude_patterns leave an image path out (it, or a directory
    above it): as walk_volume, which nothing else it leaves out could matter to booting."""
    excluded = {image_path_of(e) for e in exclusions}
    matches = pattern_matcher(exclude_patterns)

    def left_out(path: str) -> bool:
        while path != "/":
            if path in excluded or matches(path) is not None:
                return True
            path = posixpath.dirname(path)
        return False

    return left_out


def image_path_of(*parts: str) -> str:
    """The absolute, normalised path inside the image of the joined parts."""
    return posixpath.normpath("/" + "/".join(p.strip("/") for p in parts if p.strip("/")))


def _unescape_mount_point(field: str) -> str:
    # The mount tables write space, tab, newline and backslash in mount points as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def non_local_mounts(source: str, mounts_table: str | None = None) -> dict[str, str]:
    """Mount points under source whose filesystem is not a local disk's: image path -> type."""
    if mounts_table is None:
        try:
            with open("/proc/self/mounts", errors="surrogateescape") as table:
                mounts_table = table.read()
        except OSError:
            return {}
    root = os.path.realpath(source).rstrip("/")
    found = {}
    for line in mounts_table.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] in LOCAL_FS_TYPES:
            continue
        point = _unescape_mount_point(fields[1])
        if point.startswith(root + "/"):
            found[image_path_of(point[len(root) :])] = fields[2]
    return found


def mount_points(source: str, mountinfo: str | None = None) -> set[str]:
    """Image paths of every mount point under source, bind mounts of its own filesystem included.

    A bind mount of the volume's own filesystem has the volume's device number: only the mount table
    tells it from a directory.
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", errors="surrogateescape") as table:
                mountinfo = table.read()
        except OSError:
            return set()
    root = os.path.realpath(source).rstrip("/")
    found = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ", 5)
        if len(fields) < 5:
            continue
        point = _unescape_mount_point(fields[4])
        if point.startswith(root + "/"):
            found.add(image_path_of(point[len(root) :]))
    return found


# Directories are opened one component at a time, each in its parent's descriptor, without following a
# symbolic link, and checked to be the directory the walk saw (device and inode). A local user who owns
# a directory can swap it for a link to one they cannot read (/root/.ssh) between the walk's lstat and
# any later open by path; opened this way, the swap is refused instead of followed.
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_checked(name: str, st: os.stat_result, dir_fd: int | None, flags: int) -> int:
    """Open name (in dir_fd) not following a symbolic link; OSError unless it is the file st describes."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        found = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if (found.st_dev, found.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise OSError(errno.ESTALE, "replaced since the volume was walked", name)
    return fd


def _within(path: str, directory: str) -> bool:
    return path == directory or directory == "/" or path.startswith(directory + "/")


class DirectoryChain:
    """Verified descriptors of one directory of the volume and of its ancestors (see DIRECTORY_FLAGS).

    Only the chain to the directory last asked for stays open: walking depth first, each directory is
    opened once, and a deep tree costs as many descriptors as it is deep.
    """

    def __init__(self, volume: str, seen: dict) -> None:
        self.volume = volume
        self.seen = seen  # image path -> the walk's lstat of each directory ("/": of the volume)
        self.chain: list = []  # (image path, descriptor), the volume's first

    def open(self, path: str, st: os.stat_result | None = None) -> int:
        """The descriptor of the directory at path in the image (st: its lstat, if not in seen).

        It stays valid until another path is asked for, or close().
        """
        chain = self.chain
        while chain and not _within(path, chain[-1][0]):
            os.close(chain.pop()[1])
        if not chain:
            # The volume as the caller names it: a symbolic link may lead to it.
            fd = os.open(self.volume, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            root, found = self.seen.get("/"), os.fstat(fd)
            if root is not None and (root.st_dev, root.st_ino) != (found.st_dev, found.st_ino):
                os.close(fd)
                raise OSError(errno.ESTALE, "replaced since the volume was walked", self.volume)
            chain.append(("/", fd))
        while chain[-1][0] != path:
            parent, parent_fd = chain[-1]
            name = path[len(parent.rstrip("/")) + 1 :].partition("/")[0]
            child = f"{parent.rstrip('/')}/{name}"
            wanted = st if child == path and st is not None else self.seen.get(child)
            if wanted is None:
                raise OSError(errno.ENOENT, "not a directory the walk saw", child)
            chain.append((child, open_checked(name, wanted, parent_fd, DIRECTORY_FLAGS)))
        return chain[-1][1]

    def close(self) -> None:
        """Close every descriptor still open."""
        while self.chain:
            os.close(self.chain.pop()[1])


def walk_volume(
    source: str,
    exclusions: Iterable[str],
    includes: Iterable[str],
    no_filter: bool,
    image_id: tuple[int, int] | None = None,
    own_ids: Iterable[tuple[int, int]] = (),
    hygiene: Iterable[HygieneItem] = (),
    exclude_patterns: Iterable[str] = (),
) -> Iterator[Selected | Skipped | Emptied]:
    """Walk source (taken as the image's /), yielding each entry as Selected, Skipped or Emptied.

    A directory is yielded before its contents. own_ids are (device, inode) pairs of this
    build's own files (staging tree, unfinished image), silently passed over. hygiene: the items of
    HYGIENE to apply; exclude_patterns: the caller's own fnmatch patterns, which nothing overrides.
    """
    excluded = {image_path_of(e) for e in exclusions}
    included = [image_path_of(i) if i.startswith("/") else i for i in includes]
    own = set(own_ids)
    mounts = non_local_mounts(source)
    rules = HygieneRules(hygiene)
    # A directory hygiene keeps empty stays, empty, even when the caller excludes it: the default
    # destination_dir is /tmp, which the system needs (mode 1777).
    kept_empty = {p for item in rules.items if item.treatment == HYGIENE_EMPTY_DIR for p in item.patterns}
    caller_patterns = list(exclude_patterns)
    caller_pattern = pattern_matcher(caller_patterns)

    def filtered_by(path: str) -> str | None:
        # One regular expression first: most paths match no pattern, and 14 fnmatch calls per
        # entry cost more than the rest of the walk.
        if no_filter or not _ANY_FILTER_PIECE(path):
            return None
        if any(path == i or fnmatch.fnmatchcase(path, i) for i in included):
            return None
        return next((p for p in DEFAULT_FILTER if fnmatch.fnmatchcase(path, p)), None)

    # Depth first, each directory read through a descriptor opened in its parent's and checked against
    # the lstat that selected it (DirectoryChain): a directory swapped for a symbolic link after its
    # lstat is left out as unreadable, never followed.
    directories = DirectoryChain(source, {})
    pending: list = [(source, "/", None)]  # (path here, path in the image, the walk's lstat)
    try:
        while pending:
            directory, image_dir, seen = pending.pop()
            try:
                with os.scandir(directories.open(image_dir, seen)) as scan:
                    children = sorted(scan, key=lambda e: e.name)
            except OSError as exc:
                yield Skipped(image_dir, LEFT_OUT_UNREADABLE, exc.strerror or str(exc))
                continue
            # The directory's descriptor stays open while its entries are looked at (the chain moves
            # on at the next directory only): DirEntry.stat is an fstatat in it.
            # image_dir is normalised and a directory entry's name holds no '/', '.' or '..' of its own.
            parent = image_dir.rstrip("/")
            here = directory if directory.endswith("/") else directory + "/"
            for child in children:
                path = f"{parent}/{child.name}"
                try:
                    st = child.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed since the directory was read
                # Files are recognised by device and inode: cheaper than resolving every path, and
                # immune to the different spellings (symlinks, ..) one file can have.
                file_id = (st.st_dev, st.st_ino)
                if file_id in own:
                    continue
                pattern = filtered_by(path)
                item = rules.item_for(path, st) if rules.items else None
                caller = caller_pattern(path)
                if path in excluded and path not in kept_empty:
                    yield Skipped(path, LEFT_OUT_EXCLUSION, path)
                elif file_id == image_id:
                    yield Skipped(path, LEFT_OUT_IMAGE_FILE, path)
                elif "\n" in child.name:
                    yield Skipped(path, LEFT_OUT_NEWLINE, repr(child.name))
                elif stat.S_ISSOCK(st.st_mode):
                    yield Skipped(path, LEFT_OUT_SOCKET, path)
                elif caller is not None:
                    yield Skipped(path, LEFT_OUT_PATTERN, caller_patterns[caller])
                elif item is not None and item.treatment == HYGIENE_LEAVE_OUT:
                    yield Skipped(path, LEFT_OUT_HYGIENE, item.name)
                elif item is not None and item.treatment == HYGIENE_EMPTY_FILE:
                    yield Emptied(path, here + child.name, st, item.name)
                elif item is not None:  # HYGIENE_EMPTY_DIR
                    yield Selected(path, here + child.name, st)
                    yield Skipped(path + "/*", LEFT_OUT_HYGIENE, item.name)
                elif pattern is not None:
                    yield Skipped(path, LEFT_OUT_FILTER, pattern)
                else:
                    yield Selected(path, here + child.name, st)
                    if not stat.S_ISDIR(st.st_mode):
                        continue
                    # Mount points and always-excluded directories stay, empty: the system mounts
                    # something there at boot.
                    if path in ALWAYS_EXCLUDED:
                        yield Skipped(path + "/*", LEFT_OUT_ALWAYS, path)
                    elif path in mounts:
                        yield Skipped(path + "/*", LEFT_OUT_NON_LOCAL, mounts[path])
                    else:
                        pending.append((here + child.name, path, st))
    finally:
        directories.close()


# ---------------------------------------------------------------------------------------------
# The volume's filesystem: type, UUID and label to carry over
# ---------------------------------------------------------------------------------------------


def _mount_of(path: str) -> tuple[str, str, str]:
    """(device, major:minor, filesystem type) of the mount holding path, from mountinfo."""
    target = os.path.realpath(path)
    best = ("", "", "", "")
    with open("/proc/self/mountinfo", errors="surrogateescape") as table:
        for line in table:
            left, _, right = line.partition(" - ")
            fields = left.split()
            point = _unescape_mount_point(fields[4])
            fstype, device = [*right.split(), "", ""][:2]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, device, fields[2], fstype)
    return best[1], best[2], best[3]


def _superblock_identity(device: str, fstype: str) -> tuple[str, str]:
    """(uuid, label) read from an ext2/3/4 or XFS superblock ('' where unknown)."""
    try:
        with open(device, "rb") as disk:
            head = disk.read(2048)
    except OSError:
        return "", ""

    def uuid_text(raw: bytes) -> str:
        h = raw.hex()
        return "-".join((h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]))

    if fstype.startswith("ext") and head[1024 + 0x38 : 1024 + 0x3A] == b"\x53\xef":
        sb = head[1024:]
        return uuid_text(sb[0x68:0x78]), sb[0x78:0x88].split(b"\x00")[0].decode("utf-8", "replace")
    if fstype == "xfs" and head[0:4] == b"XFSB":
        return uuid_text(head[32:48]), head[108:120].split(b"\x00")[0].decode("utf-8", "replace")
    return "", ""


def _blkid_identity(device: str) -> tuple[str, str]:
    """(uuid, label) as util-linux's blkid reports them ('' where unknown)."""
    blkid = shutil.which("blkid") or shutil.which("blkid", path="/usr/sbin:/sbin")
    if blkid is None:
        return "", ""
    done = subprocess.run([blkid, "-o", "export", device], stdout=subprocess.PIPE, check=False)
    values = dict(
        line.split("=", 1) for line in done.stdout.decode("utf-8", "replace").splitlines() if "=" in line
    )
    return values.get("UUID", ""), values.get("LABEL", "")


def volume_filesystem(volume: str) -> dict[str, str]:
    """The type, UUID and label of the filesystem the volume lives on."""
    device, numbers, fstype = _mount_of(volume)
    # Some kernels name the root device /dev/root, which does not exist; udev's by-number link does.
    candidates = [d for d in (device, "/dev/block/" + numbers) if d.startswith("/dev/") and os.path.exists(d)]
    for candidate in candidates:
        uuid, label = _superblock_identity(candidate, fstype)
        if not uuid:
            uuid, label = _blkid_identity(candidate)
        if uuid:
            return {"type": fstype, "uuid": uuid, "label": label}
    return {"type": fstype, "uuid": "", "label": ""}


# ---------------------------------------------------------------------------------------------
# Tools on the node: mke2fs and libcrypto
# ---------------------------------------------------------------------------------------------


def find_tool(name: str) -> str:
    """Absolute path of an e2fsprogs program (they often live in sbin, outside PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise NodeError(f"{name} is not installed; install e2fsprogs (apt-get/dnf install e2fsprogs)")
    return found


def mke2fs_version() -> str:
    """The installed mke2fs version, checked to be new enough for `mke2fs -d`."""
    result = subprocess.run(
        [find_tool("mke2fs"), "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    found = re.search(rb"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", result.stdout)
    if not found:
        raise NodeError("mke2fs -V printed no version; reinstall e2fsprogs (>= 1.43)")
    version = found.group(0)[len(b"mke2fs ") :].decode()
    if (int(found.group(1)), int(found.group(2))) < MIN_MKE2FS:
        raise NodeError(
            f"mke2fs is version {version}; building an image needs e2fsprogs >= 1.43 (mke2fs -d); "
            "upgrade e2fsprogs"
        )
    return version


def load_libcrypto() -> tuple[Any, str]:
    """OpenSSL's libcrypto and the name it was found under."""
    names = [ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so.10"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.EVP_EncryptInit_ex  # noqa: B018 - the AES functions this program needs
        except (OSError, AttributeError):
            continue
        return lib, name
    raise NodeError(
        f"OpenSSL's libcrypto was not found (tried {', '.join(n for n in names if n)}); "
        "install openssl (libssl3 or openssl-libs)"
    )


class Aes128Cbc:
    """AES-128-CBC with PKCS#7 padding through libcrypto's EVP API (the key stays in memory)."""

    def __init__(self, lib: Any, key: bytes, iv: bytes) -> None:
        if len(key) != 16 or len(iv) != 16:
            raise NodeError("key and iv must each be 32 hex digits (16 bytes); fix the request")
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_aes_128_cbc.restype = ctypes.c_void_p
        lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_char_p] * 2
        lib.EVP_EncryptUpdate.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.EVP_EncryptFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = lib.EVP_CIPHER_CTX_new()
        if not self._ctx:
            raise NodeError("libcrypto could not allocate a cipher context (out of memory?)")
        # Buffers we can wipe afterwards, unlike Python's immutable bytes.
        self._key = ctypes.create_string_buffer(key, 16)
        self._iv = ctypes.create_string_buffer(iv, 16)
        if lib.EVP_EncryptInit_ex(self._ctx, lib.EVP_aes_128_cbc(), None, self._key, self._iv) != 1:
            self.close()
            raise NodeError("libcrypto refused to start AES-128-CBC; check the openssl installation")

    def update(self, data: bytes) -> bytes:
        """Encrypt data; returns whole cipher blocks (the rest waits for more data)."""
        out = ctypes.create_string_buffer(len(data) + 16)
        written = ctypes.c_int(0)
        if self._lib.EVP_EncryptUpdate(self._ctx, out, ctypes.byref(written), data, len(data)) != 1:
            raise NodeError("AES encryption failed in libcrypto")
        return out.raw[: written.value]

    def finish(self) -> bytes:
        """The padded last block."""
        out = ctypes.create_string_buffer(32)
        written = ctypes.c_int(0)
        if self._lib.EVP_EncryptFinal_ex(self._ctx, out, ctypes.byref(written)) != 1:
            raise NodeError("AES encryption failed in libcrypto")
        return out.raw[: written.value]

    def close(self) -> None:
        """Free the context (libcrypto clears it) and wipe our copies of key and IV."""
        if self._ctx:
            self._lib.EVP_CIPHER_CTX_free(self._ctx)
            self._ctx = None
        ctypes.memset(self._key, 0, 16)
        ctypes.memset(self._iv, 0, 16)


# ---------------------------------------------------------------------------------------------
# The image: a staging tree of hard links, then `mke2fs -d`
# ---------------------------------------------------------------------------------------------

BLOCK_SIZE = 4096
INODE_SIZE = 256


def _journal_bytes(size: int) -> int:
    """The journal mke2fs makes for a filesystem of this size (ext2fs_default_journal_size)."""
    blocks = size // BLOCK_SIZE
    for limit, journal_blocks in ((32768, 1024), (262144, 4096), (524288, 8192), (4194304, 16384)):
        if blocks < limit:
            return journal_blocks * BLOCK_SIZE
    return 32768 * BLOCK_SIZE


def inode_count(entries: int, size_mb: int) -> int:
    """Inodes to ask mke2fs for: the entries with room to grow, at least mke2fs's own ratio."""
    return max(entries + entries // 4 + 64, size_mb * MiB // 16384)


def estimate_size_mb(allocated: int, entries: int) -> int:
    """A filesystem size (MB) that holds this much data and these many inodes, with headroom."""
    inodes = entries + entries // 4 + 64
    # Metadata (bitmaps, descriptors, extent blocks) is a few percent; 5% is reserved for root.
    payload = allocated * 1.05 + inodes * INODE_SIZE + 8 * MiB
    size = payload / 0.92
    size += _journal_bytes(int(size))
    return max(16, math.ceil(size / MiB))


# mke2fs -d (e2fsprogs 1.47) looks up every file with more than one link in the list of those it
# has already seen, one entry at a time, so a staging tree of n hard links costs it about n*n/2
# comparisons: measured, 50,000 linked files added 0.7 s to mke2fs, 100,000 added 4 s and 200,000
# added 22 s. Copying a small file into staging instead costs about 0.1 ms, which is what one more
# link costs mke2fs at about 130,000 links. So past STAGING_LINKS links the smallest files are
# copied, though never more than a COPIED_SHARE of the data: the time then grows linearly.
STAGING_LINKS = 100000
COPIED_SHARE = 8


def size_class(size: int) -> int:
    """The k for which a file of size bytes is at most 2**k bytes long (0 for empty files)."""
    return max(0, (size - 1).bit_length())


class VolumeSize(NamedTuple):
    """What an image of the volume needs: bytes of data, entries, bytes to copy into staging.

    copy_up_to: files of at most this many bytes are copied into staging, not linked (-1: none).
    """

    allocated: int
    entries: int
    copied: int
    copy_up_to: int = -1


class SizeTally:
    """Adds up what selected entries need (hard-linked files counted once)."""

    def __init__(self, staging_dev: int) -> None:
        self._staging_dev = staging_dev
        self._seen: set = set()
        self._allocated = self._entries = self._copied = 0
        # Files staging would link, by size_class: how many, and their bytes on disk.
        self._linkable: dict[int, list[int]] = {}

    def add_empty(self) -> None:
        """Count one entry that goes into the image empty (see Emptied)."""
        self._entries += 1

    def add(self, st: os.stat_result) -> None:
        """Count one selected entry, by its lstat."""
        self._entries += 1
        if stat.S_ISDIR(st.st_mode):
            self._allocated += BLOCK_SIZE
        elif (st.st_dev, st.st_ino) not in self._seen:
            self._seen.add((st.st_dev, st.st_ino))
            self._allocated += st.st_blocks * 512
            if st.st_dev != self._staging_dev and stat.S_ISREG(st.st_mode):
                self._copied += st.st_blocks * 512
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                counted = self._linkable.setdefault(size_class(st.st_size), [0, 0])
                counted[0] += 1
                counted[1] += st.st_blocks * 512

    def size(self, links: int | None = None) -> VolumeSize:
        """The total so far; with links, the files to copy so that at most that many are linked."""
        if links is None:
            return VolumeSize(self._allocated, self._entries, self._copied)
        excess = sum(count for count, _ in self._linkable.values()) - links
        copy_up_to, copied, share = -1, self._copied, 0
        for k in sorted(self._linkable):
            count, allocated = self._linkable[k]
            if excess <= 0 or share + allocated > self._allocated // COPIED_SHARE:
                break
            excess -= count
            share += allocated
            copy_up_to = 1 << k
        copied += share
        return VolumeSize(self._allocated, self._entries, copied, copy_up_to)


def measure_selection(
    entries: Iterable[Selected | Skipped], staging_dev: int, links: int | None = None
) -> VolumeSize:
    """Add up what the selected entries need (hard-linked files counted once); see SizeTally.size."""
    tally = SizeTally(staging_dev)
    for entry in entries:
        if isinstance(entry, Selected):
            tally.add(entry.st)
        elif isinstance(entry, Emptied):
            tally.add_empty()
    return tally.size(links)


def _copy_xattrs(source: str | int, target: str) -> None:
    """Copy extended attributes (SELinux labels, capabilities), as far as we may.

    source: a path (its last component not followed) or an open descriptor.
    """
    follow = {} if isinstance(source, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(source, **follow)
    except OSError:
        return
    for name in names:
        try:
            value = os.getxattr(source, name, **follow)
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError:
            pass  # e.g. a namespace this filesystem or user cannot write


def copy_sparse(source: str | os.PathLike | int, target: str | os.PathLike, size: int) -> None:
    """Copy a regular file's data regions only, so that holes stay holes (source: a path or descriptor)."""
    src = source if isinstance(source, int) else os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for offset, length in data_regions(src, size):
                end = offset + length
                while offset < end:
                    try:
                        copied = os.copy_file_range(src, dst, end - offset, offset, offset)
                    except (AttributeError, OSError):  # an old kernel or C library
                        data = os.pread(src, min(end - offset, MiB), offset)
                        copied = os.pwrite(dst, data, offset) if data else 0
                    if copied == 0:
                        break  # the file shrank while being copied
                    offset += copied
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    finally:
        if src is not source:
            os.close(src)


def _set_owner_mode_times(target: str, st: os.stat_result, xattr_source: str | int | None) -> None:
    """Give a recreated entry the source's owner, mode, times and extended attributes (if a source)."""
    is_link = stat.S_ISLNK(st.st_mode)
    if os.geteuid() == 0:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(target, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits
    if xattr_source is not None:
        _copy_xattrs(xattr_source, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _in_directory(dir_fd: int, name: str) -> str:
    """A path to name in the directory open at dir_fd: resolved through the descriptor, name not followed."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def stage_entry(
    entry: Selected, target: str, staging_dev: int, first_copy: dict, copy_up_to: int = -1, *, dir_fd: int
) -> None:
    """Recreate one selected entry at target: a hard link where possible, else a copy.

    dir_fd: the entry's directory, opened as the walk saw it (DirectoryChain); the entry is reached
    through it only, and linked or copied only if it is the file the walk saw (device and inode).
    Single-linked regular files of at most copy_up_to bytes are copied (see STAGING_LINKS).
    """
    st = entry.st
    name = entry.path.rpartition("/")[2]
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(target, 0o700)  # owner, mode and times are set after its contents
        _copy_xattrs(_in_directory(dir_fd, name), target)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=dir_fd), target)
        _set_owner_mode_times(target, st, _in_directory(dir_fd, name))
        return
    key = (st.st_dev, st.st_ino)
    if key in first_copy:
        os.link(first_copy[key], target)  # a hard link on another filesystem stays one
        return
    small = st.st_nlink == 1 and st.st_size <= copy_up_to and stat.S_ISREG(st.st_mode)
    if st.st_dev == staging_dev and not small:
        try:
            # Same filesystem: a hard link costs only metadata and keeps owner, mode and times.
            os.link(name, target, src_dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            # Copy instead: an immutable file, protected_hardlinks when not root, a bind mount
            # of the same filesystem (EXDEV), a file with the most links ext4 allows.
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.EXDEV, errno.EMLINK):
                raise
        else:
            linked = os.lstat(target)
            if (linked.st_dev, linked.st_ino) == key:
                return
            os.unlink(target)  # another file took the name since the walk
            raise OSError(errno.ESTALE, "replaced since the volume was walked", entry.source)
    if stat.S_ISREG(st.st_mode):
        source = open_checked(name, st, dir_fd, os.O_RDONLY)
        try:
            copy_sparse(source, target, st.st_size)
            _set_owner_mode_times(target, st, source)
        finally:
            os.close(source)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(target, 0o600)
        _set_owner_mode_times(target, st, _in_directory(dir_fd, name))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(target, 0o600 | stat.S_IFMT(st.st_mode), st.st_rdev)
        _set_owner_mode_times(target, st, _in_directory(dir_fd, name))
    else:
        return
    if st.st_nlink > 1:
        first_copy[key] = target


def make_empty_file(target: str, entry: Emptied, xattr_source: str | int | None) -> None:
    """Create target as an empty regular file with the owner, mode and times of entry's file."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    _set_owner_mode_times(target, entry.st, xattr_source)


def _volume_of(entry: Selected | Emptied) -> str:
    """The volume an entry of its walk lies in: its path here, less its path in the image."""
    return entry.source[: len(entry.source) - len(entry.path)] or "/"


def stage_volume(
    entries: Iterable[Selected | Skipped | Emptied],
    staging: str,
    left_out: list,
    tally: SizeTally | None = None,
    copy_up_to: int = -1,
) -> int:
    """Fill staging with the selected entries; return how many made it (tally adds them up)."""
    staging_dev = os.lstat(staging).st_dev
    first_copy: dict = {}
    directories = []
    failed_dirs: list = []
    staged = 0
    # Each entry is reached through its directory's verified descriptor; a directory comes before
    # its contents, so its lstat is known by then.
    seen: dict = {}
    opened: DirectoryChain | None = None
    try:
        for entry in entries:
            if isinstance(entry, Skipped):
                left_out.append(entry)
                continue
            if any(entry.path.startswith(d + "/") for d in failed_dirs):
                continue
            if opened is None:
                opened = DirectoryChain(_volume_of(entry), seen)
            target = staging + entry.path  # entry.path is absolute and normalised
            try:
                dir_fd = opened.open(entry.path.rpartition("/")[0] or "/")
                if isinstance(entry, Emptied):
                    left_out.append(Skipped(entry.path, LEFT_OUT_EMPTIED, entry.rule))
                    make_empty_file(target, entry, _in_directory(dir_fd, entry.path.rpartition("/")[2]))
                    if tally is not None:
                        tally.add_empty()
                    staged += 1
                    continue
                stage_entry(entry, target, staging_dev, first_copy, copy_up_to, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # removed since it was listed
            except OSError as exc:
                left_out.append(Skipped(entry.path, LEFT_OUT_UNREADABLE, exc.strerror or str(exc)))
                if stat.S_ISDIR(entry.st.st_mode):
                    failed_dirs.append(entry.path)
                continue
            if stat.S_ISDIR(entry.st.st_mode):
                directories.append((target, entry))
                seen[entry.path] = entry.st
            if tally is not None:
                tally.add(entry.st)
            staged += 1
            if staged % 20000 == 0:
                say(f"staged {staged} entries")
    finally:
        if opened is not None:
            opened.close()
    # Adding entries changed the directories' times; set them last, deepest first (their extended
    # attributes were copied when they were made).
    for target, entry in reversed(directories):
        _set_owner_mode_times(target, entry.st, None)
    return staged


def run_mke2fs(
    staging: str,
    image: str,
    size_mb: int,
    entries: int,
    volume_fs: dict,
    offset: int = 0,
    ahead: DeflatedAhead | None = None,
) -> str:
    """Build the ext4 image from staging (at offset in the file); return mke2fs's complaint, or ''.

    ahead, if given, deflates what mke2fs has written while it runs.
    """
    argv = [find_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", str(BLOCK_SIZE)]
    argv += ["-N", str(inode_count(entries, size_mb))]
    if offset:
        argv += ["-E", f"offset={offset}"]
    if volume_fs.get("uuid"):
        argv += ["-U", volume_fs["uuid"]]
    if volume_fs.get("label"):
        argv += ["-L", volume_fs["label"][:16]]  # ext4 labels hold 16 bytes
    argv += ["-d", staging, image, f"{size_mb}M"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        if ahead is not None:
            ahead.start(image)
        try:
            output = process.communicate()[0]
        except BaseException:
            process.kill()  # Ctrl-C: the image is removed, mke2fs must not go on writing it
            raise
        finally:
            if ahead is not None:
                ahead.stop()
    if process.returncode == 0:
        return ""
    return "; ".join(line.strip() for line in output.decode("utf-8", "replace").splitlines())


def path_in_volume(path: str, volume: str) -> str | None:
    """Where path is in the image, if it lies in the volume (symbolic links resolved)."""
    inside, root = os.path.realpath(path), os.path.realpath(volume).rstrip("/")
    if inside == root or inside.startswith(root + "/"):
        return image_path_of(inside[len(root) :])
    return None


def staging_parent(volume: str, destination_dir: str) -> str:
    """Where to make the staging tree: on the volume's own filesystem, so hard links work."""
    if os.lstat(destination_dir).st_dev == os.lstat(volume).st_dev:
        return destination_dir
    return volume


# ---------------------------------------------------------------------------------------------
# The volume as mke2fs should see it, without a staging tree: bind mounts only this program sees
# ---------------------------------------------------------------------------------------------
#
# A staging tree costs a link per file to make and again to remove, and mke2fs -d looks each file of
# more than one link up in a list (STAGING_LINKS): measured on ~60,000 files, 1.1 s to stage, 1.5 s of
# lookups and 1.1 s to remove, in a bundle of about 15 s on two cores. As root, the program can show
# mke2fs the volume itself instead: a read-only bind mount of it in a mount namespace of the program's
# own, which no other process sees and which vanishes with the program. Only the directories whose
# contents differ from the volume's (an entry left out, a directory kept empty, GRUB's modules) are
# covered by a tmpfs holding the selected entries, each bound in read-only (the file or directory the
# walk saw: opened through its directory's verified descriptor and checked by device and inode, see
# DirectoryChain). The volume is bound without what is mounted under it, so every mount point the walk
# went into is bound in at its place (see plan_view).
#
# The staging tree is a snapshot of the walk; the view is live. So that a file created after the walk
# (one a filter would have left out) cannot slip into the image, directories changed shortly before
# the walk are covered too, and the others are checked unchanged once mke2fs is done; if one changed,
# the image is made again from a staging tree.

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x1, 0x2
VIEW_MOUNTS = 20000  # past this many mounts a staging tree is the cheaper way
QUIET_NS = 2 * 10**9  # a directory changed this shortly before the walk may still be changing


class Shadow(NamedTuple):
    """A directory of the view that shows only the selected entries (none: kept empty)."""

    path: str
    source: str
    st: os.stat_result
    children: list  # of Selected
    writable: bool = False  # this build adds to it (GRUB's modules); else mounted read-only
    kept_empty: tuple = ()  # names of child directories that another Shadow covers, made empty here


class VolumeView(NamedTuple):
    """What to mount so that the volume shows mke2fs only the selection, and what to check after.

    shadows: parents before their contents; binds: mount points under the volume (a local
    filesystem, or a bind mount of a directory or file); watched: source path -> (mtime, ctime) in ns of each
    directory shown as it is, which must not change until mke2fs is done; left_out: as the walk
    said (see Skipped).
    """

    shadows: list
    binds: list
    watched: dict
    mounts: int
    size: VolumeSize  # of the selection shown
    left_out: list
    directories: dict  # image path -> the walk's lstat of each directory shown, to open them as seen


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _components(path: str) -> tuple:
    return tuple(p for p in path.split("/") if p)


def _mounts_of(shadow: Shadow) -> int:
    return 1 + sum(
        1
        for c in shadow.children
        if isinstance(c, Selected) and (stat.S_ISDIR(c.st.st_mode) or stat.S_ISREG(c.st.st_mode))
    )


def plan_view(
    entries: Iterable[Selected | Skipped | Emptied],
    volume: str,
    tally: SizeTally,
    frozen: Iterable[str] = (),
    replaced: Iterable[str] = (),
) -> VolumeView:
    """Plan the view of the selection from a walk of the volume, adding it up in tally too.

    frozen: directories shown as the walk saw them (covered, not watched), e.g. destination_dir;
    replaced: paths left out of the view, which the build makes itself (GRUB's module directory).
    """
    started = time.time_ns()  # the walk is a generator: it starts now
    left_out: list = []
    root = os.lstat(volume)
    replaced = {image_path_of(p) for p in replaced}
    writable = {posixpath.dirname(p) for p in replaced}
    frozen = {image_path_of(p) for p in frozen} | writable
    directories = {"/": Selected("/", volume, root)}  # every directory shown, by its path
    kept_empty: set = set()
    shadows: list = []
    binds: list = []
    batch: list = []  # one directory's entries: the walk yields them one after another
    state = {"parent": None, "left": False, "mounts": 1}
    # The view binds the volume without what is mounted under it, and the walk went into every mount:
    # each mount point the walk selected is bound in at its place, so that mke2fs reads what the walk
    # saw, as from a staging tree. That of another filesystem shows as another device; a bind mount of
    # the volume's own (a directory, or a single file) only in the mount table. A bind-mounted file is
    # imaged as the file mounted there, which is what the system, the walk and the filters see.
    mounted = mount_points(volume)

    def close_batch() -> None:
        parent = state["parent"]
        if parent is None or parent in kept_empty:
            return
        where = directories[parent]
        if state["left"] or parent in frozen or where.st.st_ctime_ns >= started - QUIET_NS:
            shown = [e for e in batch if e.path not in replaced and e.path not in kept_empty]
            empty = tuple(posixpath.basename(e.path) for e in batch if e.path in kept_empty)
            shadows.append(Shadow(parent, where.source, where.st, shown, parent in writable, empty))
            state["mounts"] += _mounts_of(shadows[-1])
        else:
            elsewhere = [
                e
                for e in batch
                if (e.st.st_dev != where.st.st_dev or e.path in mounted) and e.path not in kept_empty
            ]
            binds.extend(elsewhere)
            state["mounts"] += len(elsewhere)
        if state["mounts"] > VIEW_MOUNTS:
            shadows[:] = binds[:] = []  # a staging tree it will be: keep the counting, not the plan

    for entry in entries:
        if isinstance(entry, Skipped) and (entry.path.endswith("/*") or entry.reason == LEFT_OUT_UNREADABLE):
            # A directory kept empty: always-excluded, a non-local mount, or one that cannot be read.
            left_out.append(entry)
            path = entry.path[:-2] if entry.path.endswith("/*") else entry.path
            if path in directories:
                kept_empty.add(path)
                shadows.append(Shadow(path, directories[path].source, directories[path].st, []))
                state["mounts"] += 1
            continue
        parent = entry.path.rpartition("/")[0] or "/"  # as posixpath.dirname, faster
        if parent != state["parent"]:
            close_batch()
            state["parent"], state["left"] = parent, False
            batch.clear()
        if isinstance(entry, Skipped):
            left_out.append(entry)
            state["left"] = True
            continue
        if isinstance(entry, Emptied):
            left_out.append(Skipped(entry.path, LEFT_OUT_EMPTIED, entry.rule))
            state["left"] = True  # the directory is covered: the empty file is made in the cover
            tally.add_empty()
            batch.append(entry)
            continue
        tally.add(entry.st)
        batch.append(entry)
        if stat.S_ISDIR(entry.st.st_mode):
            directories[entry.path] = entry
    close_batch()
    # Directories the walk found empty have no entries to close a batch with.
    covered = {s.path for s in shadows}
    for path in sorted(frozen - covered - kept_empty):
        if path in directories:
            shadows.append(Shadow(path, directories[path].source, directories[path].st, [], path in writable))
            state["mounts"] += 1
    covered = {s.path for s in shadows}

    def outside_replaced(path: str) -> bool:
        return not any(path == r or path.startswith(r + "/") for r in replaced)

    shadows = [s for s in shadows if outside_replaced(s.path)]
    binds = [b for b in binds if outside_replaced(b.path)]
    watched = {
        d.source: (d.st.st_mtime_ns, d.st.st_ctime_ns)
        for path, d in directories.items()
        if path not in covered and outside_replaced(path)
    }
    # Nothing is copied for a view: only the data and the entries count.
    seen = {path: d.st for path, d in directories.items()}
    return VolumeView(
        shadows, binds, watched, state["mounts"], tally.size()._replace(copied=0), left_out, seen
    )


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: Any, source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if libc.mount(raw(source), raw(target), raw(kind), ctypes.c_ulong(flags), raw(data or None)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def _bind_read_only(libc: Any, entry: Selected, target: str, opened: DirectoryChain) -> None:
    """Bind the very file or directory the walk saw (by device and inode) at target, read-only.

    It is opened in its directory's verified descriptor (opened), so that no symbolic link swapped in
    for it or for a directory above it leads elsewhere.
    """
    if entry.path == "/":
        _mount(libc, f"/proc/self/fd/{opened.open('/')}", target, None, MS_BIND)
    else:
        parent, _, name = entry.path.rpartition("/")
        flags = os.O_PATH | (os.O_DIRECTORY if stat.S_ISDIR(entry.st.st_mode) else 0)
        fd = open_checked(name, entry.st, opened.open(parent or "/"), flags)
        try:
            _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND)
        finally:
            os.close(fd)
    _mount(libc, None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _cover(libc: Any, shadow: Shadow, target: str, opened: DirectoryChain) -> None:
    """Cover target with a tmpfs showing the shadow's entries: bound in, or made like a staging tree."""
    _mount(libc, "tmpfs", target, "tmpfs", 0, "mode=0700")
    for child in shadow.children:
        path = os.path.join(target, posixpath.basename(child.path))
        if isinstance(child, Emptied):
            name = posixpath.basename(child.path)
            make_empty_file(path, child, _in_directory(opened.open(shadow.path), name))
        elif stat.S_ISDIR(child.st.st_mode):
            os.mkdir(path, 0o700)
            _bind_read_only(libc, child, path, opened)
        elif stat.S_ISREG(child.st.st_mode):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _bind_read_only(libc, child, path, opened)
        else:  # symbolic links, devices, FIFOs: recreated
            stage_entry(child, path, -1, {}, dir_fd=opened.open(shadow.path))
    for name in shadow.kept_empty:
        os.mkdir(os.path.join(target, name), 0o700)
    _set_owner_mode_times(target, shadow.st, opened.open(shadow.path))
    if not shadow.writable:
        _mount(libc, None, target, None, MS_REMOUNT | MS_RDONLY)


def mount_view(view: str, volume: str, plan: VolumeView) -> None:
    """In a mount namespace of this program's own, show the planned selection of volume at view.

    OSError if the node does not allow it (not root, a container without CAP_SYS_ADMIN).
    """
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare: {os.strerror(code)}")
    # Private, so that no mount made here propagates back to the node's own mount table.
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    # Every entry is opened through its directory's verified descriptor (see DirectoryChain).
    opened = DirectoryChain(volume, plan.directories)
    try:
        _bind_read_only(libc, Selected("/", volume, plan.directories["/"]), view, opened)
        # Outer mounts first, so that none covers one made inside it; at one path, bind then cover.
        # In the order of a depth-first walk, so that each directory is opened once.
        steps = [(_components(b.path), 0, b) for b in plan.binds]
        steps += [(_components(s.path), 1, s) for s in plan.shadows]
        for _, _, step in sorted(steps, key=lambda s: s[:2]):
            target = view + step.path if step.path != "/" else view
            if isinstance(step, Shadow):
                _cover(libc, step, target, opened)
            else:
                _bind_read_only(libc, step, target, opened)
    finally:
        opened.close()


def unmount_view(view: str) -> None:
    """Take the view and everything mounted in it away (the directory itself stays)."""
    libc = _libc()
    # A covered root is two mounts on one point: each detach takes the top one and all inside it.
    while libc.umount2(os.fsencode(view), MNT_DETACH) == 0:
        pass
    code = ctypes.get_errno()
    # EINVAL: nothing (more) is mounted there; EPERM: this program may not mount, so it did not.
    if code not in (errno.EINVAL, errno.ENOENT, errno.EPERM):
        raise OSError(code, os.strerror(code), view)


def changed_directories(watched: dict) -> list[str]:
    """The watched directories whose entries may have changed since the walk."""
    changed = []
    for source, times in watched.items():
        try:
            st = os.lstat(source)
        except OSError:
            changed.append(source)
            continue
        if (st.st_mtime_ns, st.st_ctime_ns) != times:
            changed.append(source)
    return changed


class ImageBuild(NamedTuple):
    """What build_image made, and when its two steps ended (see moment())."""

    path: str
    size_mb: int
    entries: int
    left_out: list
    staged: tuple[float, float]
    built: tuple[float, float]


def make_image(
    source: str,
    image: str,
    volume: str,
    size_mb: int | None,
    size: VolumeSize,
    volume_fs: dict,
    grub: Grub | None,
    ahead: DeflatedAhead | None,
) -> int:
    """mke2fs -d source into image, and with grub the disk around it; return the filesystem's MB.

    An estimated size grows rather than fail; ahead is as run_mke2fs takes it.
    """
    wanted = size_mb or estimate_size_mb(size.allocated, size.entries)
    offset = PARTITION_START if grub else 0
    for _attempt in range(1 if size_mb else 3):
        say(f"building a {wanted} MB ext4 image of {size.entries} entries")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image)  # mke2fs writes into an existing file at an offset
        # Made here, 0600, rather than by mke2fs with whatever mode the umask leaves: it holds the
        # volume's secrets.
        os.close(create_private_file(image))
        error = run_mke2fs(source, image, wanted, size.entries, volume_fs, offset, ahead)
        if not error or size_mb:
            break
        say(f"mke2fs needs more than {wanted} MB ({error}); trying a larger image")
        wanted = math.ceil(wanted * 1.5)
    if error:
        raise NodeError(
            f"mke2fs could not build a {wanted} MB image of {volume}: {error}; set a larger "
            "image_size_mb or exclude more"
        )
    if grub is not None:
        say(f"installing GRUB {grub.version} for BIOS boot (MBR, core image before the partition)")
        write_boot_loader(image, grub, volume_fs["uuid"], os.path.dirname(image))
    return wanted


def add_grub_modules(grub: Grub, root: str, size: VolumeSize) -> VolumeSize:
    """Install GRUB's modules under root (the tree mke2fs reads); return size with them counted.

    Modules they replace stay counted: a few MB over.
    """
    install_grub_modules(grub, root)
    tally = SizeTally(-1)
    for entry in walk_volume(root + image_path_of(grub.prefix, GRUB_PLATFORM), (), (), True):
        if isinstance(entry, Selected):
            tally.add(entry.st)
    added = tally.size()
    return size._replace(allocated=size.allocated + added.allocated, entries=size.entries + added.entries)


def with_added_files(root: str, added: list[AddedFile], size: VolumeSize) -> VolumeSize:
    """Write the added files under root (see add_image_files); return size with them counted."""
    add_image_files(root, added)
    return size._replace(entries=size.entries + len(added))


def image_through_view(
    volume: str,
    image: str,
    view: VolumeView,
    *,
    size_mb: int | None,
    volume_fs: dict,
    grub: Grub | None,
    ahead: DeflatedAhead | None,
    added: Iterable[AddedFile] = (),
) -> ImageBuild | None:
    """Make the image from a private view of the volume (see plan_view); None if that cannot be done.

    None (with the reason said) when the node does not allow the mounts, or when a directory shown
    as it is changed while mke2fs read it: then the caller stages a tree instead.
    """
    started = time.monotonic()
    mount_point = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=os.path.dirname(image))
    try:
        try:
            say(f"showing mke2fs the volume {volume} through a private view ({view.mounts} mounts)")
            mount_view(mount_point, volume, view)
            size = add_grub_modules(grub, mount_point, view.size) if grub is not None else view.size
            size = with_added_files(mount_point, added, size)
        except OSError as exc:
            say(f"amidsl-node: the volume cannot be shown through mounts ({exc}); staging a tree instead")
            return None
        staged = moment()
        wanted = make_image(mount_point, image, volume, size_mb, size, volume_fs, grub, ahead)
        changed = changed_directories(view.watched)
        if changed:
            say(
                f"amidsl-node: {len(changed)} directories changed while mke2fs read them (first "
                f"{changed[0]}), so the image might hold entries the walk did not select; imaging again "
                "from a staging tree"
            )
            return None
    finally:
        # rmdir only once nothing is mounted on it: never remove anything through the view. Should
        # unmounting fail, the mounts are this program's own and vanish with it.
        with contextlib.suppress(OSError):
            unmount_view(mount_point)
            os.rmdir(mount_point)
    built = moment()
    say(f"built the image in {built[0] - started:.1f} s")
    return ImageBuild(image, wanted, size.entries, sorted(view.left_out, key=lambda s: s.path), staged, built)


def build_image(
    volume: str,
    image: str,
    *,
    exclusions: Iterable[str],
    includes: Iterable[str],
    no_filter: bool,
    size_mb: int | None,
    volume_fs: dict,
    cleanup: Cleanup,
    grub: Grub | None = None,
    ahead: DeflatedAhead | None = None,
    copy_up_to: int = -1,
    view: VolumeView | None = None,
    hygiene: Iterable[HygieneItem] = (),
    exclude_patterns: Iterable[str] = (),
    added: Iterable[AddedFile] = (),
) -> ImageBuild:
    """Make an ext4 image file of the volume, without mounting anything of the node's.

    With a view (see plan_view), mke2fs reads the volume through it if the node allows; else from a
    staging tree of hard links. With grub, the image is a whole disk: an MBR, GRUB's core image in
    the gap after it, and the filesystem as the one partition, at PARTITION_START (volume_fs must
    then carry a UUID). ahead, if given, deflates what mke2fs has written while it runs. Files of at
    most copy_up_to bytes are copied into the staging tree rather than linked (see STAGING_LINKS).
    hygiene and exclude_patterns are as walk_volume takes them (the view was planned with the same);
    added: files the build adds to the image (their parents must be real directories in the volume).
    """
    cleanup.add(image)
    added = list(added)
    if view is not None:
        built = image_through_view(
            volume, image, view, size_mb=size_mb, volume_fs=volume_fs, grub=grub, ahead=ahead, added=added
        )
        if built is not None:
            return built
    # The image's directory is this run's private work directory. On another filesystem than the
    # volume's, the staging tree goes on the volume (hard links need it), in a private directory of its
    # own: the tree's root takes the volume's mode, and copies in it may be of files only root can reach.
    work_dir = os.path.dirname(image)
    private = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=staging_parent(volume, work_dir))
    cleanup.add(private)
    check_private_directory(private)
    staging = os.path.join(private, "root")
    os.mkdir(staging, 0o700)
    own = [(os.lstat(p).st_dev, os.lstat(p).st_ino) for p in (private, work_dir)]
    started = time.monotonic()
    left_out: list = []
    try:
        say(f"staging the volume {volume} in {staging}")
        selection = walk_volume(
            volume,
            exclusions,
            includes,
            no_filter,
            own_ids=own,
            hygiene=hygiene,
            exclude_patterns=exclude_patterns,
        )
        tally = SizeTally(-1)
        stage_volume(selection, staging, left_out, tally, copy_up_to)
        size = tally.size()
        if grub is not None:
            size = add_grub_modules(grub, staging, size)
        size = with_added_files(staging, added, size)
        _set_owner_mode_times(staging, os.lstat(volume), volume)
        staged = moment()
        wanted = make_image(staging, image, volume, size_mb, size, volume_fs, grub, ahead)
    except BaseException:
        cleanup.remove(private)
        raise
    # The image no longer needs the staging tree; removing it overlaps the bundling.
    cleanup.remove_in_background(private)
    built = moment()
    say(f"built the image in {built[0] - started:.1f} s")
    left_out.sort(key=lambda s: s.path)
    return ImageBuild(image, wanted, size.entries, left_out, staged, built)


# ---------------------------------------------------------------------------------------------
# HVM: a whole disk, an MBR partition table, GRUB 2 for BIOS; checks that the image can boot
# ---------------------------------------------------------------------------------------------

HVM = "hvm"
PARAVIRTUAL = "paravirtual"
VIRTUALIZATION_TYPES = (HVM, PARAVIRTUAL)
SECTOR = 512
# The root partition starts at 1 MiB (sector 2048), as partitioning tools leave it; the gap before it
# holds GRUB's core image, where grub-install embeds it on an MBR disk.
PARTITION_START = MiB
LINUX_PARTITION = 0x83
GRUB_PLATFORM = "i386-pc"
# What grub-install embeds in the core image for an ext2/3/4 root on an MBR disk; the rest is loaded
# from the modules copied into the image's GRUB directory.
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid")
GRUB_FILES = ("kernel.img", "boot.img", "diskboot.img", "lzma_decompress.img", "moddep.lst")
# Fields grub-bios-setup writes (GRUB's include/grub/i386/pc/boot.h and util/setup.c).
BOOT_KERNEL_SECTOR = 0x5C  # boot.img: 64-bit LBA of the core image's first sector
BOOT_DRIVE_CHECK = 0x66  # boot.img: a jump skipped (two NOPs) on hard disks, for BIOSes passing a bad drive
BOOT_CODE_END = 0x1B8  # the disk signature, then the partition table, follow the boot code
PARTITION_TABLE = 0x1BE
BLOCKLIST = SECTOR - 12  # diskboot.img (the core image's first sector) ends with {start, len, segment}
CORE_SEGMENT = 0x820  # where diskboot loads the rest of the core image (GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20)
VIRTUAL_FS_TYPES = frozenset(
    {
        "proc",
        "sysfs",
        "devpts",
        "tmpfs",
        "devtmpfs",
        "swap",
        "none",
        "securityfs",
        "debugfs",
        "cgroup",
        "cgroup2",
        "mqueue",
        "hugetlbfs",
        "efivarfs",
        "binfmt_misc",
        "pstore",
        "bpf",
        "tracefs",
        "configfs",
    }
)
GRUB_PACKAGES = "grub-pc-bin (Debian, Ubuntu) or grub2-pc-modules and grub2-tools (RHEL, Rocky, Amazon Linux)"


class Grub(NamedTuple):
    """The node's GRUB 2 for BIOS: grub-mkimage, its i386-pc directory, the image's GRUB directory."""

    mkimage: str
    modules: str
    prefix: str  # in the image: /boot/grub, or /boot/grub2 where the volume uses that
    version: str


def grub_prefix(volume: str) -> str:
    """GRUB's directory in the image: /boot/grub, or /boot/grub2 where the volume uses that."""
    boot = os.path.join(volume, "boot")
    uses_grub2 = os.path.isdir(os.path.join(boot, "grub2")) and not os.path.isdir(os.path.join(boot, "grub"))
    return "/boot/grub2" if uses_grub2 else "/boot/grub"


def find_grub(volume: str) -> Grub | None:
    """The volume's GRUB 2 BIOS files and the node's grub-mkimage, or None where either is missing."""
    modules = os.path.join(volume, "usr/lib/grub", GRUB_PLATFORM)
    names = ("grub-mkimage", "grub2-mkimage")
    mkimage = next(
        (p for p in (shutil.which(n) or shutil.which(n, path="/usr/sbin:/sbin") for n in names) if p), None
    )
    if mkimage is None or not all(os.path.isfile(os.path.join(modules, f)) for f in GRUB_FILES):
        return None
    done = subprocess.run(
        [mkimage, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    version = done.stdout.decode("utf-8", "replace").strip().rsplit(" ", 1)[-1]
    return Grub(mkimage, modules, grub_prefix(volume), version)


def no_grub_message(volume: str) -> str:
    """Why an hvm image cannot be made without GRUB, and the fix."""
    return (
        f"an hvm image boots through GRUB 2 for BIOS, but grub-mkimage or "
        f"{image_path_of(volume, 'usr/lib/grub', GRUB_PLATFORM)} ({', '.join(GRUB_FILES)}) is missing on "
        f'the node; install {GRUB_PACKAGES}, or set virtualization_type = "paravirtual"'
    )


def install_grub_modules(grub: Grub, staging: str) -> None:
    """Put the node's GRUB modules in the image's GRUB directory, as grub-install does.

    The core image is made from the same directory, so the modules GRUB loads at boot match it.
    """
    directory = staging
    for part in [*grub.prefix.strip("/").split("/"), GRUB_PLATFORM]:
        directory = os.path.join(directory, part)
        if os.path.islink(directory):
            # Writing through it would write outside the staging tree, maybe into the node's own files.
            raise NodeError(
                f"{image_path_of(directory[len(staging) :])} is a symbolic link in the volume; GRUB's "
                "directory must be a real directory for an hvm image"
            )
        if part == GRUB_PLATFORM and os.path.isdir(directory):
            shutil.rmtree(directory)  # an older grub-install's modules (copies or links in staging)
        if not os.path.isdir(directory):
            os.mkdir(directory)
            os.chmod(directory, 0o755)
    for name in sorted(os.listdir(grub.modules)):
        if name.endswith((".mod", ".lst")) or name == "boot.img":
            target = os.path.join(directory, name)
            shutil.copyfile(os.path.join(grub.modules, name), target)
            os.chmod(target, 0o644)


def make_core_image(grub: Grub, uuid: str, workdir: str) -> bytes:
    """GRUB's core image: finds the root filesystem by UUID and loads normal.mod from there."""
    scratch = tempfile.mkdtemp(prefix=f"{GRUB_SCRATCH_PREFIX}{os.getpid()}-", dir=workdir)
    config = os.path.join(scratch, "early.cfg")
    output = os.path.join(scratch, "core.img")
    with open(config, "w") as f:
        # What grub-install embeds: the boot disk is hd0 under BIOS, the search makes sure.
        f.write(f"search.fs_uuid {uuid} root hd0,msdos1\nset prefix=($root)'{grub.prefix}'\n")
    argv = [grub.mkimage, "-O", GRUB_PLATFORM, "-d", grub.modules, "-c", config]
    argv += ["-p", f"(hd0,msdos1){grub.prefix}", "-o", output, *GRUB_CORE_MODULES]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            problem = done.stdout.decode("utf-8", "replace").strip()
            raise NodeError(f"grub-mkimage failed ({problem}); reinstall {GRUB_PACKAGES}")
        with open(output, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _chs(lba: int) -> bytes:
    """An MBR cylinder/head/sector address (255 heads, 63 sectors), saturating as tools do."""
    cylinder, rest = divmod(lba, 255 * 63)
    if cylinder > 1023:
        return b"\xfe\xff\xff"
    head, sector = divmod(rest, 63)
    return bytes([head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF])


def partition_entry(start: int, sectors: int, kind: int = LINUX_PARTITION, bootable: bool = True) -> bytes:
    """One 16-byte MBR partition entry (start and length in sectors)."""
    return (
        bytes([0x80 if bootable else 0])
        + _chs(start)
        + bytes([kind])
        + _chs(start + sectors - 1)
        + start.to_bytes(4, "little")
        + sectors.to_bytes(4, "little")
    )


def master_boot_record(boot_code: bytes, disk_id: bytes, entries: list[bytes]) -> bytes:
    """Sector 0: boot code, disk signature, up to four partition entries, 0x55AA."""
    record = bytearray(boot_code[:BOOT_CODE_END].ljust(BOOT_CODE_END, b"\x00"))
    record += disk_id + b"\x00\x00" + b"".join(entries).ljust(64, b"\x00") + b"\x55\xaa"
    return bytes(record)


def grub_boot_sectors(
    boot_img: bytes, core_img: bytes, disk_id: bytes, fs_sectors: int
) -> tuple[bytes, bytes]:
    """The MBR and the core image as grub-bios-setup writes them, the core image at sector 1."""
    boot = bytearray(boot_img[:SECTOR])
    boot[BOOT_KERNEL_SECTOR : BOOT_KERNEL_SECTOR + 8] = (1).to_bytes(8, "little")
    boot[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    core = bytearray(core_img.ljust(-(-len(core_img) // SECTOR) * SECTOR, b"\x00"))
    sectors = len(core) // SECTOR
    gap = PARTITION_START // SECTOR - 1
    if sectors > gap:
        raise NodeError(f"GRUB's core image has {sectors} sectors, more than the {gap} before the partition")
    # diskboot reads the rest of the core image, which follows it on disk.
    core[BLOCKLIST : BLOCKLIST + 12] = (
        (2).to_bytes(8, "little") + (sectors - 1).to_bytes(2, "little") + CORE_SEGMENT.to_bytes(2, "little")
    )
    start = PARTITION_START // SECTOR
    record = master_boot_record(bytes(boot), disk_id, [partition_entry(start, fs_sectors)])
    return record, bytes(core)


def write_boot_loader(disk: str, grub: Grub, uuid: str, workdir: str) -> None:
    """Make disk (a filesystem at PARTITION_START) a bootable MBR disk with GRUB 2 for BIOS."""
    fs_sectors = (os.path.getsize(disk) - PARTITION_START) // SECTOR
    with open(os.path.join(grub.modules, "boot.img"), "rb") as f:
        boot_img = f.read()
    core_img = make_core_image(grub, uuid, workdir)
    record, core = grub_boot_sectors(boot_img, core_img, bytes.fromhex(uuid.replace("-", ""))[:4], fs_sectors)
    fd = os.open(disk, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.pwrite(fd, record, 0)
        os.pwrite(fd, core, SECTOR)
    finally:
        os.close(fd)


class Partition(NamedTuple):
    """An MBR partition table entry."""

    number: int
    bootable: bool
    kind: int
    start: int  # in sectors
    sectors: int


def read_partition_table(first_sector: bytes) -> list[Partition] | None:
    """The partitions of an MBR, or None when the sector is no MBR (e.g. a bare filesystem)."""
    if len(first_sector) < SECTOR or first_sector[510:512] != b"\x55\xaa":
        return None
    found = []
    for number in range(1, 5):
        entry = first_sector[PARTITION_TABLE + 16 * (number - 1) : PARTITION_TABLE + 16 * number]
        status, kind = entry[0], entry[4]
        if status not in (0, 0x80):
            return None
        sectors = int.from_bytes(entry[12:16], "little")
        if kind and sectors:
            found.append(
                Partition(number, status == 0x80, kind, int.from_bytes(entry[8:12], "little"), sectors)
            )
    return found


def boot_loader_state(disk_head: bytes) -> str:
    """What boots the disk, judged from its first MiB: GRUB 2 (and where its core image is), or not."""
    if len(disk_head) < 2 * SECTOR or disk_head[510:512] != b"\x55\xaa":
        return "no boot sector"
    if b"GRUB \x00" not in disk_head[:SECTOR]:
        return "boot code in the MBR is not GRUB 2's"
    kernel_sector = int.from_bytes(disk_head[BOOT_KERNEL_SECTOR : BOOT_KERNEL_SECTOR + 8], "little")
    core = disk_head[kernel_sector * SECTOR : (kernel_sector + 1) * SECTOR]
    if len(core) < SECTOR or b"loading" not in core:
        return f"GRUB 2 boot code, but no GRUB core image at sector {kernel_sector}"
    length = int.from_bytes(core[BLOCKLIST + 8 : BLOCKLIST + 10], "little") + 1
    return f"GRUB 2 for BIOS: boot code in the MBR, core image at sector {kernel_sector} ({length} sectors)"


def fstab_entries(volume: str) -> list[list[str]]:
    """The volume's /etc/fstab entries (spec, mount point, type, options), comments left out."""
    try:
        with open(os.path.join(volume, "etc/fstab"), errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3:
            entries.append([*fields[:4], "defaults"][:4])
    return entries


def volume_identity(volume: str) -> dict[str, str]:
    """The type, UUID and label the image's root filesystem gets.

    A volume that is its filesystem's mount point keeps that filesystem's UUID and label. A tree
    that is not (a chroot), or one whose device cannot be read, takes them from its own fstab's
    root entry, which is what its boot configuration names.
    """
    found = volume_filesystem(volume)
    if not os.path.ismount(volume):
        found = {"type": found["type"], "uuid": "", "label": ""}
    for spec, point, *_ in fstab_entries(volume):
        if point == "/":
            name, _, value = spec.partition("=")
            if name == "UUID" and not found["uuid"]:
                found["uuid"] = value.lower()
            if name == "LABEL" and not found["label"]:
                found["label"] = value
    return found


def boot_problems(
    volume: str,
    virtualization_type: str,
    identity: dict,
    grub: Grub | None,
    left_out: Callable[[str], bool] = lambda path: False,
) -> tuple[list, list]:
    """(errors, warnings) about whether the image will boot, each naming the fix.

    left_out(image path): whether the caller's exclusions leave it out of the image, which then boots
    no better than a volume without it."""
    errors, warnings = [], []
    boot = os.path.join(volume, "boot")
    on_node = os.listdir(boot) if os.path.isdir(boot) else []
    names = [name for name in on_node if not left_out(f"/boot/{name}")]
    kernels = [n for n in names if n.startswith(KERNEL_NAMES)]
    if not kernels:
        left = sorted(n for n in on_node if n.startswith(KERNEL_NAMES))
        if left:
            text = (
                f"the image would hold no kernel (vmlinuz-*): /boot on the node has {left[0]}, but the "
                "exclusions or exclude_patterns leave it out, so the image cannot boot; remove the one "
                "that matches it"
            )
        else:
            text = (
                f"{image_path_of(volume, 'boot')} on the node holds no kernel (vmlinuz-*), so the image "
                "cannot boot; install the distribution's kernel package (e.g. linux-image-amd64, kernel)"
            )
        (errors if virtualization_type == HVM else warnings).append(text)
    elif not any(n.startswith(("initrd", "initramfs")) for n in names):
        warnings.append(
            "/boot holds a kernel but no initramfs (initrd.img-*, initramfs-*); unless the kernel has "
            "its disk and ext4 drivers built in, boot stops; run update-initramfs -c -k all or dracut"
        )
    if virtualization_type == HVM:
        config = os.path.join(volume, grub.prefix.strip("/"), "grub.cfg") if grub else ""
        if grub is None:
            errors.append(no_grub_message(volume))
        elif not os.path.isfile(config) or left_out(image_path_of(grub.prefix, "grub.cfg")):
            warnings.append(
                f"there is no {grub.prefix}/grub.cfg, so GRUB stops at its prompt; run update-grub "
                f"(or grub2-mkconfig -o {grub.prefix}/grub.cfg) on the node"
            )
        else:
            warnings += kernel_root_problems(config, grub.prefix, identity)
    elif kernels and (
        not os.path.isfile(os.path.join(boot, "grub/menu.lst")) or left_out("/boot/grub/menu.lst")
    ):
        warnings.append(
            "a paravirtual image boots through pv-grub, which reads /boot/grub/menu.lst, and the volume has "
            "none; write one naming the kernel and initramfs (root=UUID=...), or build an hvm image"
        )
    fstype = identity.get("type", "")
    if fstype and fstype not in ("ext2", "ext3", "ext4"):
        warnings.append(
            f"the volume's filesystem is {fstype}, but the image's is ext4 (with the same UUID and label): "
            f"fstab entries and kernel command lines naming {fstype} will fail; use ext4 or auto there, and "
            "make sure the initramfs has the ext4 driver"
        )
    for spec, point, kind, options in fstab_entries(volume):
        if kind in VIRTUAL_FS_TYPES or "noauto" in options.split(","):
            continue
        name, _, value = spec.partition("=")
        if point == "/":
            wanted = {"UUID": identity.get("uuid", "").lower(), "LABEL": identity.get("label", "")}
            if name in wanted and (value.lower() if name == "UUID" else value) != wanted[name]:
                warnings.append(
                    f"/etc/fstab mounts / from {spec}, but the image's root filesystem has "
                    f"UUID={identity.get('uuid') or '(new)'} LABEL={identity.get('label') or '(none)'}; "
                    "name the root by the UUID or label the image carries"
                )
            elif name not in wanted:
                warnings.append(
                    f"/etc/fstab mounts / from {spec}, a name that may differ on the instance; "
                    f"use UUID={identity.get('uuid') or '<uuid>'} instead"
                )
        elif "nofail" not in options.split(","):
            warnings.append(
                f"/etc/fstab mounts {spec} on {point}, a filesystem the image does not have (its files "
                f"are copied into the root filesystem); boot will wait for it; add nofail to its "
                "options or remove the line"
            )
    return errors, warnings


# What an EBS-backed image needs on today's (Nitro) instance types: the root volume is an NVMe device,
# so the kernel must reach it before the root is mounted (built in, or a module in the initramfs), and
# the network is ENA (built in, or a module the system loads after boot). (name, module, in initramfs)
NITRO_DRIVERS = (
    ("nvme", "drivers/nvme/host/nvme.ko", True),
    ("ena", "drivers/net/ethernet/amazon/ena/ena.ko", False),
)
# The programs that list an initramfs: initramfs-tools' (Debian, Ubuntu) and dracut's (RHEL, Fedora, Amazon
# Linux), each with how it names one.
INITRAMFS_LISTERS = (("lsinitramfs", "initrd.img-{}"), ("lsinitrd", "initramfs-{}.img"))


def _version_key(version: str) -> list:
    """A kernel version's sort key: numbers as numbers (6.1.0-28 after 6.1.0-9)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", version)]


def _module_file(modules: str, path: str) -> bool:
    return any(
        os.path.isfile(os.path.join(modules, "kernel", path + ext)) for ext in ("", ".xz", ".zst", ".gz")
    )


def _initramfs_holds(volume: str, version: str, module: str) -> bool | None:
    """Whether the kernel's initramfs in the volume holds the module; None when no lister can tell."""
    for lister, name in INITRAMFS_LISTERS:
        image = os.path.join(volume, "boot", name.format(version))
        if shutil.which(lister) is None or not os.path.isfile(image):
            continue
        listed = subprocess.run([lister, image], capture_output=True, text=True, check=False)
        if listed.returncode == 0:
            return f"/{module}" in listed.stdout
    return None


def nitro_problems(volume: str) -> tuple[list, list]:
    """(errors, warnings) about whether the newest kernel in the volume boots and networks on Nitro types."""
    boot = os.path.join(volume, "boot")
    names = os.listdir(boot) if os.path.isdir(boot) else []
    versions = sorted((n[len("vmlinuz-") :] for n in names if n.startswith("vmlinuz-")), key=_version_key)
    if not versions:
        return [], []  # boot_problems says there is no kernel
    version = versions[-1]
    modules = next(
        (
            m
            for m in (os.path.join(volume, d, version) for d in ("lib/modules", "usr/lib/modules"))
            if os.path.isdir(m)
        ),
        "",
    )
    builtin = set()
    if modules and os.path.isfile(os.path.join(modules, "modules.builtin")):
        with open(os.path.join(modules, "modules.builtin"), encoding="utf-8", errors="replace") as listed:
            builtin = {line.strip() for line in listed}
    errors, warnings = [], []
    for name, path, early in NITRO_DRIVERS:
        if f"kernel/{path}" in builtin:
            continue
        if not modules or not _module_file(modules, path):
            need = "their NVMe root volume" if early else "ENA networking"
            errors.append(
                f"kernel {version} has no {name} driver (neither built in nor a module in /lib/modules), "
                f"which today's instance types need for {need}; install a kernel that has it (e.g. "
                "linux-image-amd64 or linux-image-cloud-amd64, kernel)"
            )
            continue
        if not early:
            continue
        held = _initramfs_holds(volume, version, path)
        fix = (
            f"add {name} to /etc/initramfs-tools/modules and run update-initramfs -u -k {version} (or "
            f"dracut --add-drivers {name} -f /boot/initramfs-{version}.img {version})"
        )
        if held is False:
            errors.append(
                f"the initramfs of kernel {version} does not hold the {name} module, so an NVMe root is "
                f"not found at boot; {fix}"
            )
        elif held is None:
            warnings.append(
                f"could not list the initramfs of kernel {version} (no lsinitramfs or lsinitrd): make sure "
                f"it holds the {name} module; {fix}"
            )
    return errors, warnings


def kernel_root_problems(config: str, prefix: str, identity: dict) -> list[str]:
    """Warnings about the root= of grub.cfg's kernel command lines that the image will not resolve."""
    with open(config, errors="replace") as f:
        text = f.read()
    problems = []
    for name, value in sorted(set(re.findall(r"\broot=(UUID|PARTUUID|LABEL)=([^\s\"']+)", text))):
        if name == "PARTUUID":
            problems.append(
                f"{prefix}/grub.cfg boots with root=PARTUUID={value}, a partition id the image's new disk "
                "does not have; use root=UUID= (on Ubuntu remove /etc/default/grub.d/40-force-partuuid.cfg) "
                "and run update-grub"
            )
        elif (value.lower() if name == "UUID" else value) != (
            identity.get("uuid", "").lower() if name == "UUID" else identity.get("label", "")
        ):
            problems.append(
                f"{prefix}/grub.cfg boots with root={name}={value}, but the image's root filesystem has "
                f"UUID={identity.get('uuid') or '(new)'} LABEL={identity.get('label') or '(none)'}; run "
                "update-grub on the node"
            )
    return problems


def new_uuid() -> str:
    """A random (version 4) UUID, for a root filesystem whose UUID is unknown."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return "-".join((h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]))


# ---------------------------------------------------------------------------------------------
# The bundle stream: GNU tar -> SHA-1 -> parallel gzip -> AES-128-CBC -> parts
# ---------------------------------------------------------------------------------------------

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default blocking factor pads the archive to 10240 bytes
READ_CHUNK = MiB
GNU_MAGIC = b"ustar  \x00"
SPARSE_IN_HEADER = 4  # sparse entries in the main header
SPARSE_PER_EXTENSION = 21  # sparse entries in each extension block


class DataRegion(NamedTuple):
    """A stretch of a file that holds data (everything outside regions reads as zeros)."""

    offset: int
    length: int


def data_regions(fd: int, size: int) -> list[DataRegion]:
    """An open file's data regions via SEEK_DATA/SEEK_HOLE (the whole file if unsupported)."""
    regions = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            regions.append(DataRegion(start, end - start))
            offset = end
    except OSError:
        # A filesystem without hole reporting: treat the file as all data, like tar does.
        return [DataRegion(0, size)] if size else []
    return regions


def tar_number(value: int, width: int) -> bytes:
    """A tar numeric field: octal digits and a NUL, or GNU base-256 when octal is too small."""
    if value < 8 ** (width - 1):
        return b"%0*o\x00" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def tar_header(name: bytes, mode: int, size: int, mtime: int, typeflag: bytes, sparse: bytes = b"") -> bytes:
    """A 512-byte old-GNU header block (owner root); sparse fills bytes 386..494."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = tar_number(mode, 8)
    block[108:116] = tar_number(0, 8)
    block[116:124] = tar_number(0, 8)
    block[124:136] = tar_number(size, 12)
    block[136:148] = tar_number(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = GNU_MAGIC
    block[265:269] = b"root"
    block[297:301] = b"root"
    block[386 : 386 + len(sparse)] = sparse
    checksum = sum(block)
    block[148:156] = b"%06o\x00 " % checksum
    return bytes(block)


def tar_sparse_headers(name: bytes, mode: int, mtime: int, size: int, regions: list) -> list[bytes]:
    """The 'S' header plus extension blocks describing a sparse file's map."""
    entries = [tar_number(offset, 12) + tar_number(length, 12) for offset, length in regions]
    first, rest = entries[:SPARSE_IN_HEADER], entries[SPARSE_IN_HEADER:]
    stored = sum(length for _, length in regions)
    sparse = b"".join(first).ljust(96, b"\x00") + (b"\x01" if rest else b"\x00") + tar_number(size, 12)
    blocks = [tar_header(name, mode, stored, mtime, b"S", sparse)]
    while rest:
        chunk, rest = rest[:SPARSE_PER_EXTENSION], rest[SPARSE_PER_EXTENSION:]
        extension = b"".join(chunk).ljust(504, b"\x00") + (b"\x01" if rest else b"\x00")
        blocks.append(extension.ljust(BLOCK, b"\x00"))
    return blocks


RELEASE_STEP = 16 * MiB


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free a stretch of a file's blocks, its size kept; False where the filesystem cannot."""
    libc = _libc()
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offset, length) == 0


def tar_one_file(path: str, member_name: str, release: bool = False) -> Iterator[bytes]:
    """Yield a GNU tar archive holding path as member_name, as `tar -c -S --owner 0 --group 0`.

    release: free the file's blocks behind the reading (a temporary file of our own): removing a
    large file at the end waits on the filesystem, while here that wait overlaps the compressing.
    """
    name = member_name.encode("utf-8")
    if not name or len(name) >= 100 or b"/" in name:
        raise ValueError(f"tar member name {member_name!r} must be a plain name under 100 bytes")
    fd = os.open(path, os.O_RDWR if release else os.O_RDONLY)
    released = 0
    try:
        st = os.fstat(fd)
        size, mode, mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
        regions = data_regions(fd, size)
        if size == 0 or regions == [(0, size)]:
            headers = [tar_header(name, mode, size, mtime, b"0")]
            regions = [(0, size)] if size else []
        else:
            listed = regions
            if not regions or regions[-1][0] + regions[-1][1] < size:
                # GNU tar marks a trailing hole with a zero-length entry at the file's end.
                listed = [*regions, (size, 0)]
            headers = tar_sparse_headers(name, mode, mtime, size, listed)
        yield from headers
        stored = 0
        for offset, length in regions:
            end = offset + length
            while offset < end:
                # Reads end on the image's READ_CHUNK boundaries, so that the compressor's chunks
                # are the same stretches of the image that DeflatedAhead deflated.
                data = os.pread(fd, min(READ_CHUNK - offset % READ_CHUNK, end - offset), offset)
                if not data:
                    raise OSError(f"{path} shrank while being read (at byte {offset})")
                offset += len(data)
                stored += len(data)
                yield data
                if release and offset - released >= RELEASE_STEP:
                    release = punch_hole(fd, released, offset - released)
                    released = offset
    finally:
        os.close(fd)
    data_padding = -stored % BLOCK
    archive_size = len(headers) * BLOCK + stored + data_padding + 2 * BLOCK
    # Two zero blocks end the archive; GNU tar then fills the last 10240-byte record.
    yield b"\x00" * (data_padding + 2 * BLOCK + (-archive_size % RECORD))


def tar_size(path: str) -> int:
    """The stored (data) bytes tar_one_file will read: for progress figures."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return sum(length for _, length in data_regions(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


GZIP_CHUNK = MiB
# Measured against `gzip -9` on an image of ~900 MB of Python installations (and on a tar of a
# system's /usr/bin, /usr/lib, /usr/share/doc and /etc): zlib level 4 makes 1.026x (1.031x) its
# output, level 3 1.070x (1.060x) with 8% less CPU, level 2 about 1.10x, level 1 1.15x. Level 3 keeps
# the parts within 1.10x, and deflating is most of a bundle's CPU time; the request's "level" may
# trade size for speed either way.
COMPRESS_LEVEL = 3
DICTIONARY = 32 * 1024  # deflate's window: each chunk may refer back this far into the last
OWN_CHUNK = 64 * 1024  # a write this large starts a chunk of its own


def _deflate_chunk(data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    """Raw deflate of one chunk, primed with the previous chunk's tail, ending on a byte boundary."""
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


AHEAD_MARGIN = 2 * MiB  # how far behind the end of what mke2fs has written DeflatedAhead keeps


class DeflatedAhead:
    """Chunks of the image deflated while mke2fs is still making it, found again by their content.

    mke2fs runs on one core. Meanwhile a thread deflates the stretches of the image mke2fs has
    written, as the bundle will chunk them: READ_CHUNK-aligned, primed with the 32 KiB before
    them, ended with a sync flush. It keeps the result in a file beside the image, under the
    SHA-256 of dictionary and chunk. When bundling, a chunk whose dictionary and bytes hash the
    same is taken from there; whatever mke2fs changed afterwards (inode tables, directories,
    bitmaps) hashes differently and is deflated again. It only ever saves work: any failure here
    just leaves chunks to be deflated when bundling.
    """

    def __init__(self, path: str, level: int, budget: int, cleanup: Cleanup) -> None:
        self.level, self._budget = level, budget
        self._path = path
        cleanup.add(path)
        self._file = create_private_file(path, os.O_RDWR)
        self._end = 0
        # (lengths, first and last bytes) -> [(SHA-256, offset, length)]: only chunks that could
        # match are hashed.
        self._index: dict[tuple, list[tuple[bytes, int, int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.made = self.used = 0

    @staticmethod
    def _quick_key(dictionary: bytes, chunk: bytes) -> tuple:
        return (len(dictionary), len(chunk), chunk[:64], chunk[-64:])

    @staticmethod
    def _digest(dictionary: bytes, chunk: bytes) -> bytes:
        digest = hashlib.sha256(dictionary)
        digest.update(chunk)
        return digest.digest()

    def start(self, image: str) -> None:
        """Start deflating the image's written stretches in a thread, until stop()."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._deflate_written, args=(image,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after the chunk in hand) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _deflate_written(self, image: str) -> None:
        done: set[int] = set()
        fd = -1
        # Only a core mke2fs leaves idle is meant for this: yield to it on a busy node.
        with contextlib.suppress(OSError, AttributeError):
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + 10))
        try:
            while not self._stop.is_set() and self._end < self._budget:
                if fd < 0:
                    with contextlib.suppress(FileNotFoundError):
                        fd = os.open(image, os.O_RDONLY)
                ready = self._written_chunks(fd, done) if fd >= 0 else []
                if not ready:
                    self._stop.wait(0.05)  # mke2fs has not written far enough yet
                for index in ready:
                    if self._stop.is_set() or self._end >= self._budget:
                        break
                    done.add(index)
                    start = index * READ_CHUNK
                    data = os.pread(fd, DICTIONARY + READ_CHUNK, start - DICTIONARY)
                    dictionary, chunk = data[:DICTIONARY], data[DICTIONARY:]
                    if len(chunk) == READ_CHUNK:
                        self._keep(dictionary, chunk, _deflate_chunk(chunk, dictionary, self.level, False))
        except OSError:
            pass  # e.g. a full disk for our file: the bundle deflates these chunks itself
        finally:
            if fd >= 0:
                os.close(fd)

    @staticmethod
    def _written_chunks(fd: int, done: set[int]) -> list[int]:
        """The chunks not yet deflated that lie, with their dictionaries, in written stretches.

        A stretch ends where mke2fs is writing; chunks within AHEAD_MARGIN of that end wait. The
        file's stretches are listed once for all of them: SEEK_DATA and SEEK_HOLE share the file's
        lock with mke2fs's writes, and asking per chunk was seen to halve mke2fs's speed.
        """
        ready = []
        for offset, length in data_regions(fd, os.fstat(fd).st_size):
            first = -(-(offset + DICTIONARY) // READ_CHUNK)
            ready += [
                i for i in range(first, (offset + length - AHEAD_MARGIN) // READ_CHUNK) if i not in done
            ]
        return ready

    def _keep(self, dictionary: bytes, chunk: bytes, deflated: bytes) -> None:
        os.pwrite(self._file, deflated, self._end)
        entry = (self._digest(dictionary, chunk), self._end, len(deflated))
        self._index.setdefault(self._quick_key(dictionary, chunk), []).append(entry)
        self._end += len(deflated)
        self.made += 1

    def take(self, dictionary: bytes, chunk: bytes) -> bytes | None:
        """The chunk deflated with this dictionary, if it was deflated ahead (thread-safe)."""
        candidates = self._index.get(self._quick_key(dictionary, chunk))
        if not candidates:
            return None
        digest = self._digest(dictionary, chunk)
        for found, offset, length in candidates:
            if found == digest:
                with self._lock:
                    self.used += 1
                return os.pread(self._file, length, offset)
        return None

    def close(self, cleanup: Cleanup) -> None:
        """Stop, and remove the file of deflated chunks."""
        self.stop()
        if self._file >= 0:
            os.close(self._file)
            self._file = -1
        cleanup.remove(self._path)


class ParallelGzip:
    """One gzip member compressed by several threads, as pigz does (zlib releases the GIL).

    Each chunk is deflated on its own, primed with the 32 KiB before it and ended with a sync
    flush, so the pieces concatenate into one deflate stream; only the last ends it. A write of
    at least OWN_CHUNK bytes starts a chunk of its own, so that chunks follow the caller's reads
    (tar_one_file's end on the image's READ_CHUNK boundaries, which is what lets `ahead`, chunks
    deflated while the image was being made, be found again). A writer thread hands the pieces to
    sink in order, so that neither the caller (reading and hashing) nor the workers wait while the
    sink encrypts and writes.
    """

    def __init__(
        self,
        sink: Callable[[bytes], None],
        level: int,
        workers: int,
        chunk_size: int = GZIP_CHUNK,
        ahead: DeflatedAhead | None = None,
    ) -> None:
        self._sink, self._level, self._chunk_size = sink, level, chunk_size
        self._own_chunk = min(chunk_size, OWN_CHUNK)
        self._ahead = ahead
        # Imported here, not at the top: it loads logging, of no use to amidsl's controller, which
        # imports this program for its constants.
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        # Bounds memory to a few chunks per worker: submitting waits while the writer is behind.
        self._in_flight: queue.Queue = queue.Queue(maxsize=2 * workers + 2)
        self._error: BaseException | None = None
        self._stopped = False
        self._buffer = bytearray()
        self._held: bytes | None = None  # the newest chunk: only at close do we know it is last
        self._dictionary = b""
        self._crc = 0
        self._length = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        # Magic, deflate, no flags, no mtime, extra flags, OS = Unix.
        sink(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 3]))
        self._writer = threading.Thread(target=self._write_in_order, daemon=True)
        self._writer.start()

    def _write_in_order(self) -> None:
        """The writer thread: each compressed piece to sink, in order, until the None at the end."""
        while not self._stopped:
            try:
                # A timeout, so that abandon() never has to reach the queue: a signal may have
                # interrupted the caller while it held the queue's lock.
                item = self._in_flight.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            future, chunk = item
            # The gzip trailer's CRC-32 and length, here rather than in write(): this thread mostly
            # waits, while the caller's thread is the one that reads and hashes the whole image.
            self._crc = zlib.crc32(chunk, self._crc)
            self._length += len(chunk)
            try:
                piece = future.result()
                if self._error is None:
                    self._sink(piece)
            except BaseException as exc:  # kept for close(); the loop must drain the queue
                self._error = self._error or exc

    def write(self, data: bytes) -> None:
        """Compress data (in the background, in order)."""
        if len(data) >= self._own_chunk:
            if self._buffer:
                self._push(bytes(self._buffer))
                self._buffer = bytearray()
            if len(data) == self._chunk_size:
                self._push(bytes(data))  # the usual case (tar reads whole chunks): no copying around
                return
            for start in range(0, len(data), self._chunk_size):
                self._push(bytes(data[start : start + self._chunk_size]))
            return
        self._buffer += data
        while len(self._buffer) >= self._chunk_size:
            chunk = bytes(self._buffer[: self._chunk_size])
            del self._buffer[: self._chunk_size]
            self._push(chunk)

    def _push(self, chunk: bytes) -> None:
        if self._held is not None:
            self._submit(self._held, last=False)
        self._held = chunk

    def _submit(self, chunk: bytes, last: bool) -> None:
        future = self._pool.submit(self._deflate, chunk, self._dictionary, last)
        if len(chunk) >= DICTIONARY:
            self._dictionary = chunk[-DICTIONARY:]
        else:
            self._dictionary = (self._dictionary + chunk)[-DICTIONARY:]
        self._in_flight.put((future, chunk))

    def _deflate(self, chunk: bytes, dictionary: bytes, last: bool) -> bytes:
        """A worker's job: the chunk deflated ahead of time if it is there, else deflated now."""
        if self._ahead is not None and not last:
            found = self._ahead.take(dictionary, chunk)
            if found is not None:
                return found
        return _deflate_chunk(chunk, dictionary, self._level, last)

    def close(self) -> None:
        """Compress what is left, end the deflate stream and write the CRC-32 and length."""
        if self._buffer:
            self._push(bytes(self._buffer))
            self._buffer = bytearray()
        self._submit(self._held or b"", last=True)
        self._held = None
        self._in_flight.put(None)
        self._writer.join()
        self._pool.shutdown()
        if self._error is not None:
            raise self._error
        self._sink(self._crc.to_bytes(4, "little") + (self._length & 0xFFFFFFFF).to_bytes(4, "little"))

    def abandon(self) -> None:
        """Stop after a failure: the writer ends (after the piece in hand) and queued work is dropped."""
        self._stopped = True
        self._writer.join()
        self._pool.shutdown()


def part_filename(prefix: str, index: int, count: int) -> str:
    """`<prefix>.part.<i>` with i zero-padded to the digit count of the number of parts."""
    return f"{prefix}.part.{index:0{len(str(count))}d}"


class PartWriter:
    """Splits a byte stream into part files of part_size bytes, with SHA-1 and MD5 of each.

    The parts are written in work_dir, a private directory of this run on directory's filesystem, and
    renamed into directory when all are done: a rename replaces whatever has the final name (a stale
    part, a planted symbolic link) and never writes through it.
    """

    def __init__(self, directory: str, work_dir: str, part_size: int, cleanup: Cleanup) -> None:
        self._directory, self._work_dir, self._part_size = directory, work_dir, part_size
        self._cleanup = cleanup
        self.parts: list[dict] = []  # filename (temporary until renamed), size, sha1, md5
        self._file: Any = None
        self._name = ""  # of the part being written, in work_dir
        self._sha1, self._md5 = hashlib.sha1(), hashlib.md5()
        self._written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._file is None:
                self._name = f"part.{len(self.parts)}"
                path = os.path.join(self._work_dir, self._name)
                self._cleanup.add(path)
                self._file = os.fdopen(create_private_file(path), "wb")  # closed in _close_part
            chunk = view[: self._part_size - self._written]
            self._file.write(chunk)
            self._sha1.update(chunk)
            self._md5.update(chunk)
            self._written += len(chunk)
            view = view[len(chunk) :]
            if self._written == self._part_size:
                self._close_part()

    def _close_part(self) -> None:
        self._file.close()
        self.parts.append(
            {
                "filename": self._name,
                "size": self._written,
                "sha1": self._sha1.hexdigest(),
                "md5": base64.b64encode(self._md5.digest()).decode("ascii"),
            }
        )
        self._file, self._written = None, 0
        self._sha1, self._md5 = hashlib.sha1(), hashlib.md5()

    def finish(self, prefix: str) -> list[dict]:
        """Close the last part and rename every part to its final `<prefix>.part.<i>` name."""
        if self._file is not None:
            self._close_part()
        # Parts of an earlier bundle with the same prefix would be mistaken for this bundle's.
        stale = re.compile(re.escape(prefix) + r"\.part\.\d+")
        for old in os.listdir(self._directory):
            if stale.fullmatch(old):
                os.unlink(os.path.join(self._directory, old))
        for index, part in enumerate(self.parts):
            temp = os.path.join(self._work_dir, part["filename"])
            part["filename"] = part_filename(prefix, index, len(self.parts))
            os.replace(temp, os.path.join(self._directory, part["filename"]))
            self._cleanup.forget(temp)
        return self.parts


class EncryptingSink:
    """Encrypts what the compressor writes and splits it into parts.

    A compressor may call write() from its own output thread, where an exception would kill
    that thread and leave the compressor waiting forever. So a failure (a full disk, say) is
    kept in `error`, later data is dropped, and finish() raises it in the caller's thread.
    """

    def __init__(self, encryptor: Any, parts: PartWriter) -> None:
        self._encryptor, self._parts = encryptor, parts
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._parts.write(self._encryptor.update(bytes(data)))
            except Exception as exc:
                self.error = exc
        return len(data)

    def finish(self) -> None:
        """Raise a failure kept from write(), else write the padded last cipher block."""
        if self.error is not None:
            raise self.error
        self._parts.write(self._encryptor.finish())


def bundle_stream(
    image: str | os.PathLike,
    member_name: str,
    compress: Any,
    sink: EncryptingSink,
    progress: Progress | None = None,
    release: bool = False,
) -> str:
    """Tar the image into compress, which writes one gzip member to sink; return the tar's SHA-1.

    compress is anything with write(bytes) and close() (ParallelGzip here; the controller may
    use a faster one). release: free the image's blocks once read (see tar_one_file).
    """
    digest = hashlib.sha1()
    for chunk in tar_one_file(str(image), member_name, release):
        if sink.error is not None:
            break
        digest.update(chunk)
        compress.write(chunk)
        if progress is not None:
            progress.add(len(chunk))
    compress.close()
    sink.finish()
    return digest.hexdigest()


def bundle_image_file(
    image: str,
    directory: str,
    prefix: str,
    encryptor: Any,
    *,
    part_size: int,
    level: int,
    workers: int,
    cleanup: Cleanup,
    ahead: DeflatedAhead | None = None,
) -> tuple[str, list[dict]]:
    """Stream the image into encrypted parts in directory: (image digest, parts).

    The parts are written beside the image, in this run's private work directory, then moved.
    """
    parts = PartWriter(directory, os.path.dirname(image), part_size, cleanup)
    sink = EncryptingSink(encryptor, parts)
    gzip = ParallelGzip(sink.write, level, workers, ahead=ahead)
    progress = Progress("bundled", tar_size(image))
    try:
        # The image is this program's own and is removed next: its blocks are freed as it is read.
        digest = bundle_stream(image, prefix, gzip, sink, progress, release=True)
    except BaseException:
        gzip.abandon()
        raise
    progress.report()
    return digest, parts.finish(prefix)


# ---------------------------------------------------------------------------------------------
# This run's own files: new, 0600, in a private directory, so no other user of the node reads them
# ---------------------------------------------------------------------------------------------
#
# The image holds the volume's secrets (/etc/shadow, private keys) and destination_dir is often /tmp.
# A file created where other users can write could be a symbolic link one of them planted, and one
# readable for a moment could be opened then and read later: so main() sets the umask to 077 (mke2fs
# and grub-mkimage inherit it), every file is created new and 0600, and all of them but the finished
# parts stay in a 0700 directory the run makes for itself.


def create_private_file(path: str, flags: int = os.O_WRONLY) -> int:
    """Create path, 0600, and open it with flags; fail if anything (a symbolic link too) is there."""
    return os.open(path, flags | PRIVATE_FILE_FLAGS, 0o600)


def check_private_directory(path: str) -> None:
    """NodeError unless path is a real directory, ours, that no other user may enter."""
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise NodeError(
            f"{path} was to be a private directory of this run but is not (mode "
            f"{stat.filemode(found.st_mode)}, owner {found.st_uid}); remove it and bundle again"
        )


def make_work_dir(parent: str, prefix: str) -> str:
    """A new directory in parent (0700) for this run's files, named with prefix and pid for cleanup."""
    # mkdtemp makes a new directory of a random name: never one already there, never through a link.
    work_dir = tempfile.mkdtemp(prefix=f".{prefix}.work.{os.getpid()}-", dir=parent)
    check_private_directory(work_dir)
    return work_dir


# ---------------------------------------------------------------------------------------------
# Cleanup of half-made files, on success, failure, Ctrl-C and SIGTERM
# ---------------------------------------------------------------------------------------------


class Cleanup:
    """Paths this run created and must remove unless they become the result."""

    def __init__(self) -> None:
        self._paths: list[str] = []
        self._removing: list[tuple[str, threading.Thread]] = []

    def add(self, path: str) -> None:
        self._paths.append(path)

    def forget(self, path: str) -> None:
        if path in self._paths:
            self._paths.remove(path)

    def remove(self, path: str) -> None:
        """Remove one path now (a tree is removed without following symlinks)."""
        self.forget(path)
        remove_path(path)

    def remove_in_background(self, path: str) -> None:
        """Start removing a tree in a thread; it stays listed until wait() or remove_all().

        Removing directories mostly waits on the filesystem's journal (seconds for a big tree on
        a busy disk), time the bundling can use.
        """
        remover = threading.Thread(target=shutil.rmtree, args=(path, True), daemon=True)
        remover.start()
        self._removing.append((path, remover))

    def wait(self) -> None:
        """Wait for the background removals to end."""
        while self._removing:
            path, remover = self._removing.pop()
            remover.join()
            if not os.path.lexists(path):
                self.forget(path)

    def remove_all(self) -> None:
        self.wait()
        for path in reversed(list(self._paths)):
            self.remove(path)


def remove_path(path: str) -> None:
    """Remove a file, or a tree without following symlinks; a path already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _run_file_names(prefix: str) -> list[re.Pattern]:
    """What a run leaves when it cannot clean up (SIGKILL, a power cut): each name has its pid."""
    escaped = re.escape(prefix)
    return [
        re.compile(rf"\.{escaped}\.work\.(\d+)-.+"),
        # What earlier versions of this program made in destination_dir itself.
        re.compile(rf"\.{escaped}\.image\.(\d+)"),
        re.compile(rf"\.{escaped}\.ahead\.(\d+)"),
        re.compile(rf"\.{escaped}\.part\.(\d+)\.tmp\d+"),
        re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-.+"),
        re.compile(re.escape(GRUB_SCRATCH_PREFIX) + r"(\d+)-.+"),
    ]


def run_is_alive(pid: int) -> bool:
    """Whether pid is a running amidsl node program (this one included); a reused pid is not."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"amidsl_node" in cmdline.read()  # empty for a zombie: that run has ended
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc: a pid that exists may still be a run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_dead_runs(destination: str, prefix: str, volume: str) -> tuple[list[str], set[int]]:
    """Remove the temporary files and staging trees of earlier runs that died; keep a live run's.

    Returns the paths removed and the pids of the other runs still going, and says each path removed
    (and each one kept) on standard error.
    """
    names = _run_file_names(prefix)
    removed, going = [], set()
    # A staging tree is in destination_dir, or in the volume when that is another filesystem.
    for directory in dict.fromkeys([destination, volume]):
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in entries:
            found = next(filter(None, (n.fullmatch(name) for n in names)), None)
            if found is None:
                continue
            path, pid = os.path.join(directory, name), int(found.group(1))
            if run_is_alive(pid):
                say(f"amidsl-node: kept {path}: the run with pid {pid} is still going")
                going.add(pid)
                continue
            remove_path(path)
            removed.append(path)
            say(f"amidsl-node: removed {path}, left by a run (pid {pid}) that ended without cleaning up")
    return removed, going - {os.getpid()}


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def command_cleanup(request: dict) -> dict:
    """Remove what runs that died left in destination_dir (and staging trees in the volume)."""
    volume = _field(request, "volume", str)
    destination = _field(request, "destination_dir", str)
    if not os.path.isdir(destination):
        return {"removed": []}  # never made: nothing can be in it
    if not os.path.isdir(volume):
        volume = destination  # a volume gone since: only destination_dir to look in
    return {"removed": remove_dead_runs(destination, _prefix(request), volume)[0]}


def moment() -> tuple[float, float]:
    """Now, as (wall-clock seconds, CPU seconds of this program and its finished children)."""
    used = os.times()
    return time.monotonic(), used.user + used.system + used.children_user + used.children_system


def _field(request: dict, name: str, kind: type, default: Any = None) -> Any:
    value = request.get(name, default)
    if value is None and default is None and name not in request:
        raise NodeError(f"the request has no {name!r}; the caller must send it")
    if value is not None and not isinstance(value, kind):
        raise NodeError(f"the request's {name!r} must be a {kind.__name__}, got {type(value).__name__!r}")
    return value


def _directory(request: dict, name: str) -> str:
    path = _field(request, name, str)
    if not os.path.isabs(path) or not os.path.isdir(path):
        raise NodeError(f"{name} {path} is not an existing absolute directory; create it or fix {name!r}")
    return path


def _free_bytes(directory: str) -> int:
    vfs = os.statvfs(directory)
    return vfs.f_bavail * vfs.f_frsize


def needed_bytes(size: VolumeSize, staging_in_destination: bool, output: str = OUTPUT_PARTS) -> int:
    """Free space destination_dir needs: the image, maybe copies, and for parts the parts and chunks
    deflated ahead (a disk kept whole for EBS has neither).

    The parts are counted at half the data: operating-system trees compress about 3:1, and a
    disk that still fills up fails cleanly later.
    """
    image = estimate_size_mb(size.allocated, size.entries) * MiB
    copies = size.copied if staging_in_destination else 0
    if output == OUTPUT_DISK:
        return image + copies
    return image + size.allocated // 2 + ahead_budget(size) + copies


def check_free_space(
    volume: str, destination: str, size: VolumeSize, staging_dev: int, output: str = OUTPUT_PARTS
) -> None:
    """NodeError, with the figures, when destination_dir (or the staging tree's disk) is too small."""
    needed = needed_bytes(size, staging_dev == os.lstat(destination).st_dev, output)
    free = _free_bytes(destination)
    if free < needed:
        data = size.allocated // MiB
        if output == OUTPUT_DISK:
            what = f"imaging {volume} into a disk needs about {needed // MiB} MB (a disk of {data} MB of "
            what += "data, kept whole for the EBS snapshot until the upload)"
        else:
            what = f"bundling {volume} needs about {needed // MiB} MB (an image of {data} MB of data plus "
            what += "the parts)"
        raise NodeError(
            f"destination_dir {destination} has {free // MiB} MB free but {what}; free some space or "
            "choose another destination_dir"
        )
    staging_volume = staging_parent(volume, destination)
    if staging_volume != destination and _free_bytes(staging_volume) < size.copied:
        raise NodeError(
            f"the staging tree in {staging_volume} needs {size.copied // MiB} MB for copies of files "
            f"on other filesystems but only {_free_bytes(staging_volume) // MiB} MB are free; free "
            "some space, or choose a destination_dir on the volume's own filesystem"
        )


def ahead_budget(size: VolumeSize) -> int:
    """The most bytes DeflatedAhead may keep: a quarter of the data (about half the parts)."""
    return size.allocated // 4


def _virtualization_type(request: dict) -> str:
    found = _field(request, "virtualization_type", str, PARAVIRTUAL)
    if found not in VIRTUALIZATION_TYPES:
        raise NodeError(f"virtualization_type {found!r} is not one of {', '.join(VIRTUALIZATION_TYPES)}")
    return found


def _too_large(volume: str, size: VolumeSize, virtualization_type: str) -> str:
    """Why the image would exceed the instance-store limit, or ''."""
    disk_mb = estimate_size_mb(size.allocated, size.entries) + (1 if virtualization_type == HVM else 0)
    if disk_mb <= MAX_IMAGE_MB:
        return ""
    return (
        f"the volume {volume} holds {size.allocated // MiB} MB to image (an image of about {disk_mb} MB), "
        f"more than the {MAX_IMAGE_MB} MB an S3-backed AMI may have; exclude more"
    )


def check_boot(
    volume: str,
    virtualization_type: str,
    size: VolumeSize,
    output: str = "parts",
    left_out: Callable[[str], bool] = lambda path: False,
) -> tuple[dict, Grub | None, list]:
    """The image's root identity, the node's GRUB and the warnings; NodeError if it cannot boot.

    A disk for EBS (output "disk") has no 10 GB instance-store limit, and must boot on Nitro types.
    left_out: as for boot_problems.
    """
    identity = volume_identity(volume)
    grub = find_grub(volume) if virtualization_type == HVM else None
    errors, warnings = boot_problems(volume, virtualization_type, identity, grub, left_out)
    too_large = _too_large(volume, size, virtualization_type) if output == OUTPUT_PARTS else ""
    if too_large:
        errors.append(too_large)
    if output == OUTPUT_DISK:
        nitro_errors, nitro_warnings = nitro_problems(volume)
        errors += nitro_errors
        warnings += nitro_warnings
    for warning in warnings:
        say(f"amidsl-node: warning: {warning}")
    if errors:
        raise NodeError("; and ".join(errors))
    return identity, grub, warnings


def _selection(request: dict) -> tuple[list, list, list[HygieneItem]]:
    """The request's includes, exclude_patterns and hygiene items to apply (all but hygiene_keep)."""
    return (
        _field(request, "includes", list, list(DEFAULT_INCLUDES)),
        _field(request, "exclude_patterns", list, []),
        hygiene_items(_field(request, "hygiene_keep", list, [])),
    )


def command_check(request: dict) -> dict:
    """Report what the node has for a native build, failing on anything missing (space included)."""
    volume = _directory(request, "volume")
    destination = _directory(request, "destination_dir")
    virtualization_type = _virtualization_type(request)
    exclusions = _field(request, "exclude", list, [])
    includes, exclude_patterns, items = _selection(request)
    _, soname = load_libcrypto()
    mke2fs = mke2fs_version()
    selection = walk_volume(
        volume, exclusions, includes, False, hygiene=items, exclude_patterns=exclude_patterns
    )
    staging_dev = os.lstat(staging_parent(volume, destination)).st_dev
    # Counted as bundle counts it (small files copied past STAGING_LINKS), so that check refuses
    # whatever space bundle would.
    size = measure_selection(selection, staging_dev, STAGING_LINKS)
    output = _output(request, virtualization_type)
    left_out = caller_leaves_out(exclusions, exclude_patterns)
    identity, grub, warnings = check_boot(volume, virtualization_type, size, output, left_out)
    host_keys, login, hygiene_warnings = check_hygiene(volume, items)
    check_free_space(volume, destination, size, staging_dev, output)
    return {
        "python": ".".join(str(n) for n in sys.version_info[:3]),
        "mke2fs": mke2fs,
        "libcrypto": soname,
        "free_bytes": _free_bytes(destination),
        "volume_bytes": size.allocated,
        "volume_fs": identity,
        "virtualization_type": virtualization_type,
        "grub": grub.version if grub else None,
        "warnings": warnings + hygiene_warnings,
        "host_keys": host_keys[0],
        "login_key": login,
    }


def check_hygiene(
    volume: str, items: list[HygieneItem]
) -> tuple[tuple[str, list[AddedFile]], str, list[str]]:
    """How instances get SSH host keys (and files to add for it), their login key, and warnings."""
    host_keys = plan_host_keys(volume, items)
    login = login_key_source(volume, items)
    warnings = [] if login else [NO_LOGIN_KEY]
    if host_keys[0].startswith("none"):
        warnings.append(f"SSH host keys: {host_keys[0]}")
    for warning in warnings:
        say(f"amidsl-node: warning: {warning}")
    return host_keys, login, warnings


def _output(request: dict, virtualization_type: str) -> str:
    """What the bundle makes: encrypted parts (an S3 bundle) or the disk whole (for an EBS snapshot)."""
    output = _field(request, "output", str, OUTPUT_PARTS)
    if output not in (OUTPUT_PARTS, OUTPUT_DISK):
        raise NodeError(f"output {output!r} is not one of {OUTPUT_PARTS}, {OUTPUT_DISK}")
    if output == OUTPUT_DISK and virtualization_type != HVM:
        raise NodeError(f"output {OUTPUT_DISK!r} is a bootable disk: it needs virtualization_type {HVM!r}")
    return output


def _prefix(request: dict) -> str:
    prefix = _field(request, "prefix", str, "image")
    if not prefix or "/" in prefix or prefix in (".", "..") or len(prefix.encode()) >= 100:
        raise NodeError(f"prefix {prefix!r} must be a plain file name shorter than 100 bytes")
    return prefix


def _key_bytes(request: dict, name: str) -> bytes:
    text = _field(request, name, str)
    if not re.fullmatch(r"[0-9a-fA-F]{32}", text):
        raise NodeError(f"the request's {name!r} must be 32 hex digits (16 bytes)")
    return bytes.fromhex(text)


def command_bundle(request: dict, cleanup: Cleanup) -> dict:
    """Image the volume and bundle the image into encrypted parts in destination_dir."""
    started = moment()
    volume = _directory(request, "volume")
    destination = _directory(request, "destination_dir")
    prefix = _prefix(request)
    # Before the space check, as they may hold much of it. Two bundles of one prefix in one place
    # would replace each other's parts.
    going = remove_dead_runs(destination, prefix, volume)[1]
    if going:
        pid = min(going)
        raise NodeError(
            f"another bundle of {prefix} (pid {pid}) is running in {destination}; wait for it to end "
            f"or stop it (kill -INT {pid}), then bundle again"
        )
    exclusions = _field(request, "exclude", list, [])
    includes, exclude_patterns, items = _selection(request)
    no_filter = not _field(request, "filter", bool, True)
    size_mb = request.get("image_size_mb")
    virtualization_type = _virtualization_type(request)
    output = _output(request, virtualization_type)
    if output == OUTPUT_DISK:
        largest, what = MAX_DISK_MB, "a disk for an EBS snapshot"
    else:
        largest, what = MAX_IMAGE_MB, "an S3-backed AMI image"
    if size_mb is not None and (not isinstance(size_mb, int) or not 1 <= size_mb <= largest):
        raise NodeError(f"image_size_mb is {size_mb!r}; {what} must be 1..{largest} MB")
    if size_mb is not None and virtualization_type == HVM:
        if size_mb < MIN_HVM_IMAGE_MB:
            raise NodeError(
                f"image_size_mb is {size_mb}; an hvm disk image needs at least {MIN_HVM_IMAGE_MB} MB"
            )
        size_mb -= PARTITION_START // MiB  # the disk holds the partition table and GRUB before it
    part_size = _field(request, "part_size", int, PART_SIZE)
    if part_size < 1:
        raise NodeError(f"part_size must be positive, got {part_size}")
    workers = _field(request, "workers", int, 0) or len(os.sched_getaffinity(0))
    staging = _field(request, "staging", str, "auto")
    if staging not in ("auto", "links"):
        raise NodeError(f"staging {staging!r} is not one of auto, links")
    level = _field(request, "level", int, COMPRESS_LEVEL)
    # A disk for EBS is neither compressed nor encrypted here: its blocks go out as they are.
    key = _key_bytes(request, "key") if output == OUTPUT_PARTS else b""
    iv = _key_bytes(request, "iv") if output == OUTPUT_PARTS else b""
    lib, _ = load_libcrypto()
    mke2fs_version()

    # Check the space before doing anything (a metadata-only walk, which also plans the view: only
    # root may mount).
    staging_dev = os.lstat(staging_parent(volume, destination)).st_dev
    selection = walk_volume(
        volume, exclusions, includes, no_filter, hygiene=items, exclude_patterns=exclude_patterns
    )
    host_keys, login, hygiene_warnings = check_hygiene(volume, items)
    view: VolumeView | None = None
    if staging == "auto" and os.geteuid() == 0:
        tally = SizeTally(staging_dev)
        view = plan_view(
            selection,
            volume,
            tally,
            # What this run makes in destination_dir must not show through the view.
            frozen=[p for p in [path_in_volume(destination, volume)] if p],
            replaced=[f.path for f in host_keys[1]]
            + ([image_path_of(grub_prefix(volume), GRUB_PLATFORM)] if virtualization_type == HVM else []),
        )
        # Counted for a staging tree (the fallback), which may need more room than the view.
        size = tally.size(STAGING_LINKS)
        if view.mounts > VIEW_MOUNTS:
            say(f"showing the volume would take {view.mounts} mounts (over {VIEW_MOUNTS}): staging a tree")
            view = None
    else:
        size = measure_selection(selection, staging_dev, STAGING_LINKS)
    left_out = caller_leaves_out(exclusions, exclude_patterns)
    identity, grub, warnings = check_boot(volume, virtualization_type, size, output, left_out)
    if virtualization_type == HVM and not identity["uuid"]:
        identity = {**identity, "uuid": new_uuid()}  # GRUB's core image finds the root by it
    check_free_space(volume, destination, size, staging_dev, output)

    volume_fs = identity
    checked = moment()
    # Removed last: by then it is empty, the image, chunks and staging tree gone, the parts moved out.
    work_dir = make_work_dir(destination, prefix)
    cleanup.add(work_dir)
    image_path = os.path.join(work_dir, "image")
    budget = ahead_budget(size) if output == OUTPUT_PARTS else 0  # a disk is not deflated
    ahead = DeflatedAhead(os.path.join(work_dir, "deflated-ahead"), level, budget, cleanup)
    built = build_image(
        volume,
        image_path,
        exclusions=exclusions,
        includes=includes,
        no_filter=no_filter,
        size_mb=size_mb,
        volume_fs=volume_fs,
        cleanup=cleanup,
        grub=grub,
        ahead=ahead,
        copy_up_to=size.copy_up_to,
        view=view,
        hygiene=items,
        exclude_patterns=exclude_patterns,
        added=host_keys[1],
    )
    report = {
        "prefix": prefix,
        "volume_fs": volume_fs,
        "virtualization_type": virtualization_type,
        "grub": grub.version if grub else None,
        "warnings": warnings + hygiene_warnings,
        "left_out": [[s.path, s.reason] for s in built.left_out[:LEFT_OUT_REPORTED]],
        "hygiene": hygiene_report(built.left_out, items),
        "host_keys": host_keys[0],
        "login_key": login,
        "added": [f.path for f in host_keys[1]],
    }
    if output == OUTPUT_DISK:
        ahead.close(cleanup)
        return {**report, **keep_disk(image_path, destination, prefix), "output": OUTPUT_DISK}
    encryptor = Aes128Cbc(lib, key, iv)
    try:
        digest, parts = bundle_image_file(
            image_path,
            destination,
            prefix,
            encryptor,
            part_size=part_size,
            level=level,
            workers=workers,
            cleanup=cleanup,
            ahead=ahead,
        )
    finally:
        encryptor.close()
        ahead.close(cleanup)
    bundled = moment()
    image_size = os.lstat(image_path).st_size
    cleanup.remove(image_path)
    cleanup.wait()  # for the staging tree's removal
    marks = {
        "check": checked,
        "stage": built.staged,
        "mke2fs": built.built,
        "bundle": bundled,
        "remove": moment(),
    }
    since, wall, cpu = started, {}, {}
    for step, mark in marks.items():
        wall[step], cpu[step] = round(mark[0] - since[0], 3), round(mark[1] - since[1], 3)
        since = mark
    return {
        **report,
        "image_size": image_size,
        "digest": digest,
        "bundled_size": sum(p["size"] for p in parts),
        "parts": parts,
        "seconds": wall,
        "cpu_seconds": cpu,
        "deflated_ahead": {"made": ahead.made, "used": ahead.used},
    }


# ---------------------------------------------------------------------------------------------
# An EBS-backed image: the disk kept whole, its blocks streamed to the controller
# ---------------------------------------------------------------------------------------------

# The EBS direct APIs' block: every PutSnapshotBlock carries exactly this many bytes.
EBS_BLOCK_SIZE = 512 * 1024
GiB = 1024 * MiB
# After the last block: an index no disk has, then the JSON result line.
END_OF_BLOCKS = 2**64 - 1


def disk_blocks(fd: int, size: int, block_size: int = EBS_BLOCK_SIZE) -> Iterator[tuple[int, bytes]]:
    """The disk's blocks that hold something other than zeros: (index, data), in index order.

    Only the data regions are read (SEEK_DATA); a block the file's end cuts short is padded with
    zeros, as a volume reads past a disk's end.
    """
    zero = bytes(block_size)
    done = -1
    for region in data_regions(fd, size):
        first = region.offset // block_size
        last = (region.offset + region.length - 1) // block_size
        for index in range(max(first, done + 1), last + 1):
            data = os.pread(fd, block_size, index * block_size)
            data += bytes(block_size - len(data))
            done = index
            if data != zero:
                yield index, data


def keep_disk(image_path: str, destination: str, prefix: str) -> dict:
    """Move the built disk to destination_dir/<prefix>.disk and say what its blocks are.

    `blocks` is how many blocks hold data (CompleteSnapshot's ChangedBlocksCount) and `checksum` the
    EBS direct APIs' LINEAR aggregate: SHA-256 over the blocks' SHA-256 digests in index order.
    """
    st = os.lstat(image_path)
    size = st.st_size
    linear, count = hashlib.sha256(), 0
    fd = os.open(image_path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for _, data in disk_blocks(fd, size):
            linear.update(hashlib.sha256(data).digest())
            count += 1
    finally:
        os.close(fd)
    disk = os.path.join(destination, f"{prefix}.disk")
    os.rename(image_path, disk)  # in the same directory tree: a planted link there is replaced
    return {
        "disk": disk,
        "image_size": size,
        # What the disk takes on the node's disk (a sparse file: its holes take nothing); written once.
        "allocated": st.st_blocks * 512,
        "volume_size_gib": max(1, -(-size // GiB)),
        "block_size": EBS_BLOCK_SIZE,
        "blocks": count,
        "checksum": base64.b64encode(linear.digest()).decode("ascii"),
    }


def command_blocks(request: dict, out: Any) -> dict:
    """Write the disk's blocks that hold data to `out` as frames: an 8-byte big-endian index, then
    the block; then END_OF_BLOCKS. The controller uploads them (no AWS credential on the node)."""
    disk = _field(request, "disk", str)
    start = _field(request, "start", int, 0)  # a resumed upload skips the blocks before it
    fd = os.open(disk, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise NodeError(f"{disk} is not a disk this program kept (a regular file of its own user)")
        sent = 0
        for index, data in disk_blocks(fd, st.st_size):
            if index >= start:
                out.write(index.to_bytes(8, "big") + data)
                sent += 1
        out.write(END_OF_BLOCKS.to_bytes(8, "big"))
        out.flush()
    finally:
        os.close(fd)
    return {"disk": disk, "sent": sent, "block_size": EBS_BLOCK_SIZE}


class Upload(NamedTuple):
    """How one part's upload ended: 'uploaded', 'expired' or 'failed' (with status, reason)."""

    filename: str
    outcome: str
    status: int = 0
    reason: str = ""


def _s3_error(body: bytes) -> str:
    """'Code: Message' from an S3 error document, or the start of the body."""
    code = re.search(rb"<Code>(.*?)</Code>", body)
    message = re.search(rb"<Message>(.*?)</Message>", body)
    if code or message:
        return ": ".join(m.group(1).decode("utf-8", "replace") for m in (code, message) if m)
    return body[:200].decode("utf-8", "replace").strip()


def _check_part(path: str, data: bytes, part: dict) -> None:
    if "size" in part and len(data) != part["size"]:
        raise NodeError(f"part {path} is {len(data)} bytes, not {part['size']}; bundle again")
    if "sha1" in part and hashlib.sha1(data).hexdigest() != part["sha1"]:
        raise NodeError(f"part {path} does not match its SHA-1 digest; bundle again")


def put_part(directory: str, part: dict, retries: int, pause: float = 1.0) -> Upload:
    """PUT one part to its presigned URL, retrying server errors and broken connections."""
    # Imported here: urllib.request pulls in http and ssl, which bundling does not need.
    import urllib.error
    import urllib.request

    filename = part["filename"]
    path = os.path.join(directory, filename)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
        data = f.read()
    _check_part(path, data, part)
    headers = dict(part.get("headers") or {})
    headers["Content-Length"] = str(len(data))
    headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")
    # urllib would otherwise label the body as a submitted form.
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/octet-stream"
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            # Exponential backoff with jitter, so that parallel uploads do not retry in step.
            time.sleep(min(pause * 2 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2))
        request = urllib.request.Request(part["url"], data=data, headers=headers, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
            return Upload(filename, "uploaded")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            reason = _s3_error(body) or str(exc.reason)
            if exc.code == 403 and b"Request has expired" in body:
                return Upload(filename, "expired", 403, reason)
            if exc.code < 500 and exc.code not in (408, 429):
                return Upload(filename, "failed", exc.code, reason)
            problem = f"HTTP {exc.code} {reason}"
        except (urllib.error.URLError, OSError) as exc:
            # URLError's text is its reason (never the URL, which carries the signature).
            problem = str(getattr(exc, "reason", None) or exc.strerror or type(exc).__name__)
        say(f"upload of {filename}: {problem} (attempt {attempt + 1} of {retries + 1})")
    return Upload(filename, "failed", 0, f"gave up after {retries + 1} attempts: {problem}")


def _is_regular_file(path: str) -> bool:
    """Whether path is a regular file itself: a symbolic link may point at anything on the node."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def command_upload(request: dict) -> tuple[dict, int]:
    """Upload the parts in parallel; exit 3 when presigned URLs expired, 1 on other failures."""
    destination = _directory(request, "destination_dir")
    parts = _field(request, "parts", list)
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("filename"), str) or "url" not in part:
            raise NodeError("each of the request's parts needs a filename and a url")
        if "/" in part["filename"] or not _is_regular_file(os.path.join(destination, part["filename"])):
            raise NodeError(f"part {part['filename']} is not a regular file in {destination}; bundle first")
    concurrency = max(1, _field(request, "concurrency", int, 4))
    retries = max(0, _field(request, "retries", int, 5))
    pause = float(request.get("retry_pause", 1.0))
    outcomes = []
    import concurrent.futures  # see ParallelGzip

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(put_part, destination, p, retries, pause) for p in parts]
        try:
            for future in concurrent.futures.as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                if outcome.outcome == "uploaded":
                    say(f"uploaded {outcome.filename} ({len(outcomes)} of {len(parts)})")
        except BaseException:
            # Ctrl-C or a bad part: start nothing new; PUTs already under way finish first.
            for future in futures:
                future.cancel()
            raise
    order = {p["filename"]: i for i, p in enumerate(parts)}
    outcomes.sort(key=lambda o: order[o.filename])
    result = {
        "uploaded": [o.filename for o in outcomes if o.outcome == "uploaded"],
        "failed": [
            {"filename": o.filename, "status": o.status, "reason": o.reason}
            for o in outcomes
            if o.outcome == "failed"
        ],
        "expired": [o.filename for o in outcomes if o.outcome == "expired"],
    }
    if result["failed"]:
        first = result["failed"][0]
        status = f"HTTP {first['status']}: " if first["status"] else ""
        say(
            f"amidsl-node: error: part {first['filename']} could not be uploaded ({status}"
            f"{first['reason']}); check the bucket's policy and ACL settings"
        )
        return result, 1
    if result["expired"]:
        say(
            f"amidsl-node: error: the upload URLs of {len(result['expired'])} parts expired; "
            "presign them again"
        )
        return result, 3
    return result, 0


# What a stopped run leaves, by command (said on its last line; the controller relies on the wording).
STOPPED = {
    "check": "had nothing to remove",
    "cleanup": "had nothing of its own to remove",
    "bundle": "removed the partial image, staging tree and parts",
    "upload": "left the parts in destination_dir",
    "blocks": "left the disk in destination_dir",
}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str]) -> int:
    """Run one subcommand on the JSON request from standard input."""
    commands = ("check", "bundle", "upload", "cleanup", "blocks")
    # Nothing this program or its children (mke2fs, grub-mkimage) create is for other users.
    os.umask(0o077)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    cleanup = Cleanup()
    try:
        if len(argv) != 2 or argv[1] not in commands:
            raise NodeError(f"usage: python3 amidsl_node.py {{{'|'.join(commands)}}} < request.json")
        # First, so that whoever ran it can stop this run (and only it) with `kill -INT <pid>`.
        say(f"amidsl-node: {argv[1]} runs as pid {os.getpid()}")
        try:
            request = json.loads(sys.stdin.read())
        except ValueError as exc:
            raise NodeError(
                f"standard input is not one JSON object ({exc}); send the request as JSON"
            ) from None
        if not isinstance(request, dict):
            raise NodeError("standard input must be one JSON object, the request")
        status = 0
        if argv[1] == "check":
            result = command_check(request)
        elif argv[1] == "bundle":
            result = command_bundle(request, cleanup)
        elif argv[1] == "cleanup":
            result = command_cleanup(request)
        elif argv[1] == "blocks":
            result = command_blocks(request, sys.stdout.buffer)
        else:
            result, status = command_upload(request)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return status
    except NodeError as exc:
        say(f"amidsl-node: error: {exc}")
        return 1
    except OSError as exc:
        where = f" at {exc.filename}" if exc.filename else ""
        say(f"amidsl-node: error: {exc.strerror or exc}{where}; check free space and permissions")
        return 1
    except KeyboardInterrupt:
        say(f"amidsl-node: interrupted; {STOPPED.get(argv[-1], STOPPED['check'])}")
        return 130
    except Terminated:
        say(f"amidsl-node: terminated; {STOPPED.get(argv[-1], STOPPED['check'])}")
        return 143
    finally:
        # Removing a large staging tree takes a moment; do not let a second signal cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.remove_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
