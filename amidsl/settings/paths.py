"""Directories on the node that settings may never name for removal or exclusion."""

from __future__ import annotations

# Where amidsl keeps its own state on a node; excluded from every image like the crate's pallet dir.
NODE_STATE_DIR = "/var/lib/amidsl"

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


def is_within(path: str, directory: str) -> bool:
    """Whether path is directory or lies inside it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# Paths every image needs to boot, the image's root first. Both bundlers match exclude_patterns as
# fnmatch does, `*` crossing '/' (the node program; `find -path` for ec2-bundle-vol's -e), so one
# pattern matching one of these leaves out what no image boots without.
BOOT_PATHS = (
    "/",
    "/bin",
    "/bin/sh",
    "/boot",
    "/dev",
    "/etc",
    "/etc/passwd",
    "/lib",
    "/proc",
    "/sbin",
    "/sbin/init",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/sbin",
)


# Directories whose every entry may be what boots (a kernel, the C library, init): a pattern that matches
# any name in one (`/boot/*`, `/usr/lib/*`) leaves the directory empty. The name stands for any entry.
FILLED_BOOT_DIRS = (
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib64",
)
ANY_ENTRY = "amidsl-any-entry"
