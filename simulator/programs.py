"""Command models: how the programs the plans run behave on a FakeNode.

Each model takes a RunContext and returns a CommandResult with the exit status and output the real
program would give for the options amidsl passes, including its failures (missing files, unknown users,
packages that do not exist, a step run before its prerequisite).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable

from simulator.node import CommandResult, FakeNode, RunContext
from simulator.packages import PACKAGE_COMMANDS, model_script

LIBRARIES_APT = ("libssl-dev", "zlib1g-dev", "libreadline-dev", "libyaml-dev", "libffi-dev")
LIBRARIES_RPM = ("openssl-devel", "zlib-devel", "readline-devel", "libyaml-devel", "libffi-devel")
KNOWN_PACKAGES = {
    "apt-get": set(PACKAGE_COMMANDS) | set(LIBRARIES_APT),
    "dnf": set(PACKAGE_COMMANDS) | set(LIBRARIES_RPM),
    "yum": set(PACKAGE_COMMANDS) | set(LIBRARIES_RPM),
}
# The Ruby each OS family's packages hold (Debian 12: 3.1; RHEL 9: 3.0; Amazon Linux 2023: 3.2).
DISTRIBUTION_RUBY = {"debian": "3.1", "rhel": "3.0", "amazon": "3.2"}


def ok(output: str = "") -> CommandResult:
    """A successful command's result."""
    return CommandResult(0, output)


def fail(status: int, output: str) -> CommandResult:
    """A failed command's result; its message ends with a newline as a program's would."""
    return CommandResult(status, output if output.endswith("\n") else output + "\n")


def split_options(argv: list[str], with_value: Iterable[str]) -> tuple[dict[str, str | bool], list[str]]:
    """Options (those in with_value take the next word) and operands; `--` ends options."""
    takes = set(with_value)
    options: dict[str, str | bool] = {}
    operands: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            operands += list(words)
            break
        if word.startswith("-") and len(word) > 1:  # GNU style: options may follow operands
            if word in takes:
                options[word] = next(words, "")
            elif word.startswith("--") or len(word) == 2:
                options[word] = True
            else:  # bundled short flags such as -rf or -fsSL
                for letter in word[1:]:
                    options[f"-{letter}"] = True
        else:
            operands.append(word)
    return options, operands


# -- coreutils ----------------------------------------------------------------------------------


def install(ctx: RunContext) -> CommandResult:
    """`install -d DIR` or `install SRC DEST` with -m, -o and -g."""
    options, operands = split_options(ctx.argv[1:], ("-m", "-o", "-g"))
    node = ctx.node
    owner, group = str(options.get("-o", "root")), str(options.get("-g", "root"))
    for name, kind in ((owner, "user"), (group, "group")):
        if name not in node.users:
            return fail(1, f"install: invalid {kind} '{name}'")
    mode = int(str(options.get("-m", "0755")), 8)
    if options.get("-d"):
        for path in operands:
            node.make_dirs(path)
            node.host_path(path).chmod(mode)
            node.set_owner(path, (owner, group))
        return ok()
    if len(operands) != 2:
        return fail(1, "install: missing destination file operand")
    source, dest = operands
    if source == "/dev/null":
        data = b""
    elif not node.exists(source):
        return fail(1, f"install: cannot stat '{source}': No such file or directory")
    else:
        data = node.read_bytes(source)
    parent = dest.rsplit("/", 1)[0] or "/"
    if not node.is_dir(parent):
        return fail(1, f"install: cannot create regular file '{dest}': No such file or directory")
    node.write_bytes(dest, data, mode=mode, owner=(owner, group))
    return ok()


def mkdir(ctx: RunContext) -> CommandResult:
    """`mkdir [-p] DIR...`."""
    options, operands = split_options(ctx.argv[1:], ())
    for path in operands:
        if options.get("-p"):
            ctx.node.make_dirs(path)
        elif ctx.node.exists(path):
            return fail(1, f"mkdir: cannot create directory '{path}': File exists")
        else:
            ctx.node.make_dirs(path)
    return ok()


def rmdir(ctx: RunContext) -> CommandResult:
    """`rmdir [--ignore-fail-on-non-empty] DIR...`: each empty directory, in order, as GNU rmdir."""
    options, operands = split_options(ctx.argv[1:], ())
    for path in operands:
        target = ctx.node.host_path(path)
        if not target.exists() and not target.is_symlink():
            return fail(1, f"rmdir: failed to remove '{path}': No such file or directory")
        if target.is_symlink() or not target.is_dir():
            return fail(1, f"rmdir: failed to remove '{path}': Not a directory")
        if any(target.iterdir()):
            if options.get("--ignore-fail-on-non-empty"):
                continue
            return fail(1, f"rmdir: failed to remove '{path}': Directory not empty")
        target.rmdir()
    return ok()


def rm(ctx: RunContext) -> CommandResult:
    """`rm [-f] [-r] PATH...`, refusing a directory without -r as rm does."""
    options, operands = split_options(ctx.argv[1:], ())
    force, recursive = bool(options.get("-f")), bool(options.get("-r") or options.get("-R"))
    for path in operands:
        target = ctx.node.host_path(path)
        if not target.exists() and not target.is_symlink():
            if force:
                continue
            return fail(1, f"rm: cannot remove '{path}': No such file or directory")
        if target.is_dir() and not target.is_symlink() and not recursive:
            return fail(1, f"rm: cannot remove '{path}': Is a directory")
        if _holds_undeletable(ctx.node, path):
            return fail(1, f"rm: cannot remove '{ctx.node.faults.undeletable}': Operation not permitted")
        ctx.node.remove(path)
    return ok()


def _holds_undeletable(node: FakeNode, path: str) -> bool:
    stuck = node.faults.undeletable
    return stuck is not None and (stuck == path or stuck.startswith(path.rstrip("/") + "/"))


def find(ctx: RunContext) -> CommandResult:
    """`find DIR -mindepth 1 -delete`: empty a directory, dotfiles and subdirectories included."""
    args = ctx.argv[1:]
    if len(args) != 4 or args[1:] != ["-mindepth", "1", "-delete"]:
        return fail(1, f"find: the simulator models only `find DIR -mindepth 1 -delete`, not {args}")
    directory = args[0]
    if not ctx.node.is_dir(directory):
        return fail(1, f"find: '{directory}': No such file or directory")
    status = ok()
    for entry in sorted(ctx.node.host_path(directory).iterdir()):
        path = ctx.node.node_path(entry)
        if _holds_undeletable(ctx.node, path):
            status = fail(1, f"find: cannot delete '{ctx.node.faults.undeletable}': Operation not permitted")
            continue
        ctx.node.remove(path)
    return status


def mv(ctx: RunContext) -> CommandResult:
    """`mv SOURCE TARGET` (into TARGET when it is a directory); owners move along."""
    _, operands = split_options(ctx.argv[1:], ())
    if len(operands) != 2:
        return fail(1, "mv: target is not a directory")
    source, dest = operands
    node = ctx.node
    if not node.exists(source):
        return fail(1, f"mv: cannot stat '{source}': No such file or directory")
    target = f"{dest.rstrip('/')}/{source.rsplit('/', 1)[1]}" if node.is_dir(dest) else dest
    node.host_path(source).rename(node.host_path(target))
    prefix = source.rstrip("/") + "/"
    for known in [p for p in node.owners if p == source or p.startswith(prefix)]:
        node.owners[target + known[len(source) :]] = node.owners.pop(known)
    return ok()


def chown(ctx: RunContext) -> CommandResult:
    """`chown [-R] USER[:GROUP] PATH...` for users the node has."""
    options, operands = split_options(ctx.argv[1:], ())
    owner, *paths = operands
    user, _, group = owner.partition(":")
    group = group or user
    node = ctx.node
    for name in (user, group):
        if name not in node.users:
            return fail(1, f"chown: invalid user: '{owner}'")
    for path in paths:
        if not node.exists(path):
            return fail(1, f"chown: cannot access '{path}': No such file or directory")
        node.set_owner(path, (user, group))
        if options.get("-R") and node.is_dir(path):
            for child in node.host_path(path).rglob("*"):
                node.set_owner(node.node_path(child), (user, group))
    return ok()


def printf(ctx: RunContext) -> CommandResult:
    """`printf %s TEXT...` and `printf '%s\\n' LINE...`: the only formats the plans use."""
    fmt, *args = ctx.argv[1:]
    if fmt == "%s\\n":
        return ok("".join(f"{arg}\n" for arg in args))
    if fmt != "%s":
        return fail(1, f"printf: the simulator models only the %s and %s\\n formats, not {fmt!r}")
    return ok("".join(args))


def runuser(ctx: RunContext) -> CommandResult:
    """`runuser -u USER -- env NAME=VALUE ... COMMAND ...`."""
    args = ctx.argv[1:]
    if len(args) < 3 or args[0] != "-u" or args[2] != "--":
        return fail(1, "runuser: the simulator models only 'runuser -u USER -- COMMAND'")
    user, command = args[1], args[3:]
    if user not in ctx.node.users:
        return fail(1, f"runuser: user {user} does not exist")
    env = dict(ctx.env)
    if command and command[0] == "env":
        command = command[1:]
        while command and "=" in command[0] and not command[0].startswith("="):
            name, _, value = command.pop(0).partition("=")
            env[name] = value
    return ctx.node.run(command, env, ctx.cwd, user)


# -- package managers, downloads, archives ------------------------------------------------------


def package_manager(ctx: RunContext) -> CommandResult:
    """apt-get update / apt-get, dnf or yum install -y -q PACKAGES."""
    manager = ctx.argv[0]
    if ctx.user != "root":
        return fail(100, f"E: Could not open lock file - {manager} needs root")
    options, operands = split_options(ctx.argv[1:], ())
    if operands[:1] == ["update"]:
        return ok("Reading package lists... Done\n")
    if operands[:1] != ["install"]:
        return fail(1, f"{manager}: the simulator models only install and update")
    if not options.get("-y"):
        return fail(1, "Do you want to continue? [Y/n] Abort.")
    wanted = operands[1:]
    unknown = [p for p in wanted if p not in known_packages(ctx.node, manager)]
    if unknown:
        if manager == "apt-get":
            return fail(100, f"E: Unable to locate package {unknown[0]}")
        return fail(1, f"Error: Unable to find a match: {' '.join(unknown)}")
    new = [p for p in wanted if p not in ctx.node.packages]
    ctx.node.packages.update(wanted)
    version = distribution_ruby(ctx.node)
    for package in new:
        if package in ("ruby", f"ruby{version}"):
            ruby_file = model_script("ruby", f"# ruby {version}\n")
            ctx.node.write_bytes(f"/usr/bin/{package}", ruby_file, mode=0o755)
    return ok("".join(f"Setting up {p} ...\n" for p in new))


def distribution_ruby(node: FakeNode) -> str:
    """The Ruby version (major.minor) the node's OS packages."""
    return node.distribution_ruby or DISTRIBUTION_RUBY[node.os_family]


def known_packages(node: FakeNode, manager: str) -> set[str]:
    """The packages a node's package manager can install (apt also has the versioned ruby3.x)."""
    versioned = {f"ruby{distribution_ruby(node)}"} if manager.startswith("apt") else set()
    return KNOWN_PACKAGES["apt-get" if manager.startswith("apt") else manager] | versioned


def apt_cache(ctx: RunContext) -> CommandResult:
    """`apt-cache show PACKAGE`: exit 100 when the package is unknown to the node's sources."""
    _, operands = split_options(ctx.argv[1:], ())
    if operands[:1] != ["show"] or len(operands) != 2:
        return fail(1, "apt-cache: the simulator models only 'apt-cache show PACKAGE'")
    if operands[1] not in known_packages(ctx.node, "apt-cache"):
        return fail(100, "E: No packages found")
    return ok(f"Package: {operands[1]}\n")


def ln(ctx: RunContext) -> CommandResult:
    """`ln -sfn TARGET LINK`: a symbolic link (inside the node's root) replacing LINK."""
    options, operands = split_options(ctx.argv[1:], ())
    if not (options.get("-s") and options.get("-f") and options.get("-n")) or len(operands) != 2:
        return fail(1, "ln: the simulator models only 'ln -sfn TARGET LINK'")
    target, link = operands
    node = ctx.node
    if not node.is_dir(link.rsplit("/", 1)[0] or "/"):
        return fail(1, f"ln: failed to create symbolic link '{link}': No such file or directory")
    host = node.host_path(link)
    if host.is_symlink() or host.exists():
        host.unlink()
    # Relative to the node's root, so the link never reaches the machine running the simulator.
    host.symlink_to(os.path.relpath(node.host_path(target), host.parent))
    return ok()


def curl(ctx: RunContext) -> CommandResult:
    """`curl -fsSL --retry N -o FILE URL` from the node's network."""
    options, operands = split_options(ctx.argv[1:], ("-o", "--retry"))
    url = operands[-1] if operands else ""
    host = url.split("/")[2] if url.count("/") >= 2 else url
    if not any(known.split("/")[2] == host for known in ctx.node.network if known.count("/") >= 2):
        return fail(6, f"curl: (6) Could not resolve host: {host}")
    if url not in ctx.node.network:
        return fail(22, "curl: (22) The requested URL returned error: 404")
    data = ctx.node.network[url]
    target = str(options.get("-o", ""))
    if not target:
        return ok(data.decode("utf-8", "replace"))
    ctx.node.write_bytes(target, data)
    return ok()


def unzip(ctx: RunContext) -> CommandResult:
    """`unzip -q -o ZIP -d DIR`, keeping the members' modes."""
    options, operands = split_options(ctx.argv[1:], ("-d",))
    node = ctx.node
    archive = operands[0] if operands else ""
    if not node.exists(archive):
        return fail(9, f"unzip:  cannot find or open {archive}, {archive}.zip or {archive}.ZIP.")
    target = str(options.get("-d", ctx.cwd))
    try:
        members = zipfile.ZipFile(io.BytesIO(node.read_bytes(archive)))
    except zipfile.BadZipFile:
        return fail(9, f"End-of-central-directory signature not found in {archive}")
    with members:
        for member in members.infolist():
            path = f"{target.rstrip('/')}/{member.filename.rstrip('/')}"
            if member.is_dir():
                node.make_dirs(path)
                continue
            node.make_dirs(path.rsplit("/", 1)[0])
            mode = (member.external_attr >> 16) & 0o7777 or 0o644
            node.write_bytes(path, members.read(member), mode=mode)
    return ok()


def git(ctx: RunContext) -> CommandResult:
    """`git clone --depth 1 URL DEST` of the repositories the node's network serves."""
    _, operands = split_options(ctx.argv[1:], ("--depth",))
    if operands[:1] != ["clone"] or len(operands) != 3:
        return fail(1, "git: the simulator models only 'git clone [--depth N] URL DEST'")
    url, dest = operands[1], operands[2]
    node = ctx.node
    if node.exists(dest) and any(node.host_path(dest).iterdir()):
        return fail(128, f"fatal: destination path '{dest}' already exists and is not an empty directory.")
    repository = node.network.get(url)
    if repository is None:
        return fail(128, f"fatal: unable to access '{url}': Could not resolve host")
    node.make_dirs(dest)
    files = zipfile.ZipFile(io.BytesIO(repository))
    for member in files.infolist():
        path = f"{dest}/{member.filename}"
        node.make_dirs(path.rsplit("/", 1)[0])
        node.write_bytes(path, files.read(member), mode=(member.external_attr >> 16) & 0o7777 or 0o644)
    return ok(f"Cloning into '{dest}'...\n")


def rbenv(ctx: RunContext) -> CommandResult:
    """`rbenv install --skip-existing VERSION` with ruby-build: builds Ruby under RBENV_ROOT."""
    node = ctx.node
    root = ctx.env.get("RBENV_ROOT", "/root/.rbenv")
    _, operands = split_options(ctx.argv[1:], ())
    if operands[:1] != ["install"] or len(operands) != 2:
        return fail(1, "rbenv: the simulator models only 'rbenv install VERSION'")
    if not node.exists(f"{root}/plugins/ruby-build/bin/ruby-build"):
        return fail(1, "rbenv: no such command `install'")
    version = operands[1]
    prefix = f"{root}/versions/{version}"
    if node.exists(prefix):
        return ok()
    libraries = LIBRARIES_APT if node.os_family == "debian" else LIBRARIES_RPM
    missing = [p for p in ("gcc", "make", *libraries) if p not in node.packages]
    if missing:
        return fail(1, f"BUILD FAILED ({node.os_family} using ruby-build)\nmissing: {', '.join(missing)}")
    node.make_dirs(f"{prefix}/bin")
    node.write_bytes(f"{prefix}/bin/ruby", model_script("ruby", f"# ruby {version}\n"), mode=0o755)
    node.make_dirs(f"{prefix}/lib/ruby/{version}")
    node.write_bytes(
        f"{prefix}/lib/ruby/{version}/uri.rb", b"# stand-in for Ruby's standard library\n" * 2000
    )
    return ok(f"Installed ruby-{version} to {prefix}\n")


def ruby_version(ctx: RunContext) -> tuple[int, int] | None:
    """The (major, minor) of the first `ruby` on the command's PATH, or None without one."""
    node = ctx.node
    for folder in ctx.env.get("PATH", node.env["PATH"]).split(":"):
        path = f"{folder.rstrip('/')}/ruby"
        if folder and node.exists(path) and not node.is_dir(path):
            found = re.search(rb"# ruby (\d+)\.(\d+)", node.read_bytes(path)[:400])
            # A Ruby the simulator does not version is taken as the tools' own era's (2.7).
            return (int(found[1]), int(found[2])) if found else (2, 7)
    return None


def ruby(ctx: RunContext) -> CommandResult:
    """A Ruby interpreter: runs only amidsl's version check (`ruby -e RUBY_CHECK`); alone, nothing."""
    from amidsl.strategies.ami_tools import RUBY_CHECK

    if ctx.argv[1:] == ["-e", RUBY_CHECK]:
        major, minor = ruby_version(ctx) or (2, 7)
        if (major, minor) >= (3, 2):
            return fail(
                1, f"Ruby {major}.{minor} cannot run ec2-ami-tools 1.5: they need Ruby 2.7, 3.0 or 3.1"
            )
        return ok(f"Ruby {major}.{minor}\n")
    if len(ctx.argv) > 1:
        return fail(1, f"ruby (simulated) runs only amidsl's version check, not {ctx.argv[1:]}")
    return ok("ruby (simulated)\n")


# Run before CODE on a node whose python3 is another version: what `sys` says is that version's.
PYTHON_VERSION = (
    "import sys; sys.version = {version!r} + ' (simulated)'; "
    "sys.version_info = tuple(int(n) for n in {version!r}.split('.')) + ('final', 0)\n"
)


def python3(ctx: RunContext) -> CommandResult:
    """`python3 -I -c CODE ARG...`: the real interpreter runs CODE; ARGs that are node paths are mapped.

    On a node whose python3 is another version, CODE sees that version in `sys`."""
    if ctx.argv[1:3] != ["-I", "-c"] or len(ctx.argv) < 4:
        return fail(2, "python3 (simulated) runs only `python3 -I -c CODE ARG...`\n")
    args = [str(ctx.node.host_path(a)) if a.startswith("/") else a for a in ctx.argv[4:]]
    version = ctx.node.versions.get("python3")
    code = PYTHON_VERSION.format(version=version) + ctx.argv[3] if version else ctx.argv[3]
    done = subprocess.run([sys.executable, "-I", "-c", code, *args], capture_output=True, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", "replace").replace(str(ctx.node.root), "")
    return CommandResult(done.returncode, output)
