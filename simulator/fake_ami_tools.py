"""The simulated ec2-ami-tools: their archive, and strict models of ec2-bundle-vol and ec2-upload-bundle.

The models behave as the real tools 1.5.3 were measured to behave (AMI-TOOLS-BEHAVIOUR in the design
notes), not as a plan would like them to: options are parsed strictly, every `-e`/`-i` path must exist,
the image file is left behind (and a rerun then fails), the image is 10240 MB unless `-s` says otherwise,
`--inherit` (the default) fails on Ruby 3 and under IMDSv2, `-r arm64` is not supported, the upload
knows only ten regions without `--url`, and drops a session token under SigV4. The copy of the volume
follows rsync's rules (see `select_for_image`), and the bundle itself is made with amidsl's bundle code.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from amidsl.bundle import (
    ALWAYS_EXCLUDED,
    DEFAULT_FILTER,
    BlockDeviceMapping,
    BundleError,
    ImageError,
    ImageReport,
    LeftOut,
    Reason,
    build_image,
    bundle_image,
    read_manifest,
)
from amidsl.bundle.e2fs import debugfs
from amidsl.iterate import zip_strict
from simulator.node import BASE_COMMANDS, CommandResult, FakeNode, RunContext
from simulator.packages import model_script, provided_commands
from simulator.programs import fail, ok, ruby_version

AMI_TOOLS_VERSION = "1.5.3"
EC2_CERT_IN_TOOLS = "etc/ec2/amitools/cert-ec2.pem"
UPLOAD_ATTEMPTS = 5  # what ec2-upload-bundle --retry allows each object
DEFAULT_IMAGE_MB = 10240  # ec2-bundle-vol's image size without -s (a sparse file)
PARAMETER_ERROR = 1  # the exit status of a refused option or option value (assumed: not measured)
INHERIT_FAILED = 12
IMAGE_FILE_EXISTS = 254
BAD_URI = 254
BUCKET_IN_OTHER_REGION = 10

# Options each tool parses: name -> takes a value. Short forms map to their long names.
BUNDLE_VOL_OPTIONS = {
    "--privatekey": True,
    "--cert": True,
    "--user": True,
    "--destination": True,
    "--ec2cert": True,
    "--arch": True,
    "--productcodes": True,
    "--block-device-mapping": True,
    "--exclude": True,
    "--prefix": True,
    "--size": True,
    "--include": True,
    "--volume": True,
    "--fstab": True,
    "--partition": True,
    "--script": True,
    "--kernel": True,
    "--ramdisk": True,
    "--no-filter": False,
    "--generate-fstab": False,
    "--inherit": False,
    "--no-inherit": False,
    "--batch": False,
    "--debug": False,
    "--help": False,
    "--manual": False,
    "--version": False,
}
BUNDLE_VOL_SHORT = {
    "-k": "--privatekey",
    "-c": "--cert",
    "-u": "--user",
    "-d": "--destination",
    "-r": "--arch",
    "-B": "--block-device-mapping",
    "-e": "--exclude",
    "-p": "--prefix",
    "-s": "--size",
    "-i": "--include",
    "-v": "--volume",
    "-P": "--partition",
    "-S": "--script",
    "-h": "--help",
}
UPLOAD_OPTIONS = {
    "--bucket": True,
    "--manifest": True,
    "--access-key": True,
    "--secret-key": True,
    "--delegation-token": True,
    "--region": True,
    "--url": True,
    "--sigv": True,
    "--acl": True,
    "--part": True,
    "--location": True,
    "--directory": True,
    "--retry": False,
    "--skipmanifest": False,
    "--batch": False,
    "--debug": False,
    "--help": False,
    "--manual": False,
    "--version": False,
}
UPLOAD_SHORT = {
    "-b": "--bucket",
    "-m": "--manifest",
    "-a": "--access-key",
    "-s": "--secret-key",
    "-t": "--delegation-token",
    "-d": "--directory",
    "-h": "--help",
}

# The regions ec2-upload-bundle 1.5.3 has an S3 endpoint for; any other needs --url.
UPLOAD_REGIONS = frozenset(
    {
        "us-east-1",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "sa-east-1",
        "us-gov-west-1",
        "cn-north-1",
    }
)
BUNDLE_ARCHITECTURES = ("i386", "x86_64")

# What ec2-bundle-vol leaves out besides ALWAYS_EXCLUDED and DEFAULT_FILTER (shared with the native
# build): mounts of other than these filesystem types (tmpfs counts as local for the tool).
LOCAL_FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "jfs", "reiserfs", "tmpfs"})
DEV_NODES = (("console", 5, 1), ("null", 1, 3), ("tty", 5, 0), ("zero", 1, 5))
PARTITION_TOOLS = ("dmsetup", "kpartx", "losetup")
PARTITIONED_DISK_TOOLS = ("parted", "sgdisk")
NEEDED_TOOLS = ("rsync", "losetup", "mount", "modprobe")
STANDARD_ROOT_DEVICE = re.compile(r"/dev/(xvd|sd)[a-z]+[0-9]*")


def ami_tools_zip(ec2_cert_pem: str, version: str = AMI_TOOLS_VERSION) -> bytes:
    """The tools archive as Amazon ships it: a versioned top folder holding bin/, lib/ and etc/."""
    top = f"ec2-ami-tools-{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("ec2-bundle-vol", "ec2-upload-bundle", "ec2-ami-tools-version"):
            body = f'ruby -I "$EC2_AMITOOL_HOME/lib" "$EC2_AMITOOL_HOME/lib/ec2/amitools/{name}.rb" "$@"\n'
            info = zipfile.ZipInfo(f"{top}/bin/{name}")
            info.external_attr = 0o100755 << 16
            archive.writestr(info, model_script(name, body))
        archive.writestr(f"{top}/lib/ec2/amitools/version.rb", f"VERSION = '{version}'\n" * 200)
        archive.writestr(f"{top}/{EC2_CERT_IN_TOOLS}", ec2_cert_pem)
    return buffer.getvalue()


class ParameterError(Exception):
    """An option or option value the tool refuses (it prints the message and stops)."""


def parse_options(argv: list[str], options: Mapping[str, bool], short: Mapping[str, str]) -> dict[str, str]:
    """The tool's strict option parsing: long names -> value ("" for flags); a repeat replaces."""
    found: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        name, given = word, None
        if word.startswith("--") and "=" in word:
            name, given = word.split("=", 1)
        name = short.get(name, name)
        if name not in options:
            if not word.startswith("-"):
                raise ParameterError(f"unexpected argument '{word}'")
            raise ParameterError(f"invalid option: {word}")
        if options[name]:
            value = given if given is not None else next(words, None)
            if value is None:
                raise ParameterError(f"missing argument: {word}")
            found[name] = value
        else:
            found[name] = ""
    return found


def _start(ctx: RunContext, runs_at_load: bool) -> CommandResult | None:
    """What happens before the tool's own code runs: no Ruby, or a Ruby it cannot run on."""
    version = ruby_version(ctx)
    if version is None:
        return fail(127, f"{ctx.argv[0]}: line 3: ruby: command not found")
    if version >= (3, 2) and runs_at_load:
        # File.exists? is gone in Ruby 3.2: bundle-vol dies loading, upload on its first request.
        return fail(1, "undefined method `exists?' for File:Class (NoMethodError)")
    return None


@dataclass(frozen=True)
class Selection:
    """What the tool's copy takes into the image, and what it leaves out (with why)."""

    files: tuple[str, ...]  # node paths, parents before children
    left_out: tuple[LeftOut, ...]


def rsync_pattern_matches(pattern: str, path: str) -> bool:
    """rsync's matching of an unanchored exclude pattern: `*` never crosses `/`.

    A pattern without `/` is matched against the last path component; one with `/` against as many
    trailing components as it has.
    """
    wanted = pattern.strip("/").split("/")
    parts = path.strip("/").split("/")
    if len(parts) < len(wanted):
        return False
    tail = parts[len(parts) - len(wanted) :]
    return all(fnmatch.fnmatchcase(part, rule) for part, rule in zip_strict(tail, wanted))


def select_for_image(
    node: FakeNode, exclusions: list[str], includes: list[str], no_filter: bool, image: str
) -> Selection:
    """ec2-bundle-vol's copy of the volume /: rsync of `/*` with its exclusions and filter."""
    mounts = node.mounts
    left_out: list[LeftOut] = []
    files: list[str] = []
    excluded = {e.rstrip("/") or "/" for e in exclusions}
    for point, kind in mounts.items():
        if kind not in LOCAL_FS_TYPES:
            excluded.add(point)

    def walk(directory: str) -> Iterator[str]:
        for name in sorted(os.listdir(node.host_path(directory))):
            if directory == "/" and name.startswith("."):
                continue  # the shell glob `/*` does not match the volume's top-level dotfiles
            yield f"{directory.rstrip('/')}/{name}"

    pending = ["/"]
    while pending:
        directory = pending.pop()
        for path in walk(directory):
            host = node.host_path(path)
            rule = next((p for p in DEFAULT_FILTER if rsync_pattern_matches(p, path)), None)
            if path == image:
                left_out.append(LeftOut(path, Reason.IMAGE_FILE, path))
            elif path in excluded and path in mounts:
                left_out.append(LeftOut(path, Reason.NON_LOCAL_MOUNT, mounts[path]))
            elif path in excluded:
                left_out.append(LeftOut(path, Reason.EXCLUSION, path))
            elif rule is not None and not no_filter and path not in includes:
                left_out.append(LeftOut(path, Reason.FILTER, rule))
            elif stat.S_ISSOCK(host.lstat().st_mode):
                left_out.append(LeftOut(path, Reason.SOCKET, path))
            else:
                files.append(path)
                if host.is_dir() and not host.is_symlink():
                    if path in ALWAYS_EXCLUDED:
                        left_out.append(LeftOut(path + "/*", Reason.ALWAYS_EXCLUDED, path))
                    else:
                        pending.append(path)
    return Selection(tuple(sorted(files)), tuple(sorted(left_out, key=lambda x: x.path)))


def _copy_selection(node: FakeNode, selection: Selection, staging: Path) -> None:
    """The copy rsync makes without -H: every hard link becomes a file of its own."""
    for path in selection.files:
        source, target = node.host_path(path), staging / path.lstrip("/")
        st = source.lstat()
        if stat.S_ISLNK(st.st_mode):
            target.symlink_to(os.readlink(source))
        elif stat.S_ISDIR(st.st_mode):
            target.mkdir(mode=0o700)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, target)
            target.chmod(stat.S_IMODE(st.st_mode))
        else:
            continue
        if os.geteuid() == 0:
            os.lchown(target, st.st_uid, st.st_gid)
    for path in ("/dev", "/proc", "/sys", "/mnt"):
        (staging / path.lstrip("/")).mkdir(exist_ok=True)
    # Directories get their modes last (deepest first): a read-only one could not be filled.
    for path in ["/", *reversed(selection.files)]:
        source, target = node.host_path(path), staging / path.lstrip("/")
        if source.is_dir() and not source.is_symlink():
            target.chmod(stat.S_IMODE(source.lstat().st_mode))


def make_image(node: FakeNode, selection: Selection, image: str, size_mb: int) -> ImageReport:
    """The image file: a filesystem of the root's type, LABEL and UUID, with /dev's four nodes."""
    _, label, uuid = node.root_filesystem  # the simulator builds ext4, the usual root type
    with tempfile.TemporaryDirectory(prefix="amidsl-bundle-vol-") as tmp:
        staging = Path(tmp) / "volume"
        staging.mkdir()
        _copy_selection(node, selection, staging)
        report = build_image(
            staging,
            node.host_path(image),
            size_mb=size_mb,
            no_filter=True,
            mke2fs_options=("-L", label, "-U", uuid),
        )
    devices = [f"mknod {name} c {major} {minor}" for name, major, minor in DEV_NODES]
    debugfs(node.host_path(image), ["cd /dev", *devices], write=True)
    return ImageReport(report.image_path, report.size_mb, report.entries, selection.left_out)


def _bundle_vol_checks(ctx: RunContext, options: dict[str, str]) -> None:
    """The option values ec2-bundle-vol refuses before it starts (ParameterError)."""
    node = ctx.node
    for name in ("--privatekey", "--cert", "--user"):
        if name not in options:
            raise ParameterError(f"missing mandatory parameter: {name}")
    for name in ("--privatekey", "--cert"):
        if not node.exists(options[name]):
            raise ParameterError(f"{name} has invalid value '{options[name]}': File does not exist.")
    if not re.fullmatch(r"\d{12}", options["--user"]):
        raise ParameterError(f"--user has invalid value '{options['--user']}': not a 12-digit account id.")
    prefix = options.get("--prefix", "image")
    if "/" in prefix:
        raise ParameterError(f"--prefix has invalid value '{prefix}'")
    size = options.get("--size")
    if size is not None and not re.fullmatch(r"\d+", size):
        raise ParameterError(f"--size has invalid value '{size}': not an integer.")
    for name in ("--exclude", "--include"):
        for path in [p for p in options.get(name, "").split(",") if p]:
            if not node.exists(path):
                raise ParameterError(f"{name} has invalid value '{path}': File or directory does not exist.")
    destination = options.get("--destination", "/tmp")
    if not node.is_dir(destination):
        raise ParameterError(f"--destination has invalid value '{destination}': Directory does not exist.")
    partition = options.get("--partition", "auto")
    if partition not in ("auto", "mbr", "gpt", "none"):
        raise ParameterError(f"--partition has invalid value '{partition}'")


def _inherit(ctx: RunContext) -> tuple[BlockDeviceMapping, ...] | CommandResult:
    """Instance metadata, read with Kernel#open: fails off EC2, on Ruby 3 and under IMDSv2."""
    node = ctx.node
    failure = fail(
        INHERIT_FAILED,
        "ERROR: Can't access instance metadata. If you are not bundling on an EC2 instance use --no-inherit.",
    )
    version = ruby_version(ctx) or (2, 7)
    if version >= (3, 0):
        return fail(
            INHERIT_FAILED,
            f"Errno::ENOENT: No such file or directory @ rb_sysopen - http://169.254.169.254/latest/meta-data/\n{failure.output}",
        )
    if not node.on_ec2 or node.imdsv2_required:
        return failure
    return (BlockDeviceMapping("ami", "sda1"), BlockDeviceMapping("root", "/dev/sda1"))


def _has_tool(node: FakeNode, name: str) -> bool:
    """Whether a program the tool runs is on the node (the simulator need not model what it does)."""
    return node.has_command(name) or name in BASE_COMMANDS or name in provided_commands(node.packages)


def _partitioning(ctx: RunContext, partition: str) -> CommandResult | None:
    """--partition auto/mbr/gpt: the device-mapper tools, a /dev/(xvd|sd) root and legacy grub."""
    node = ctx.node
    if partition == "none":
        return None
    missing = [t for t in PARTITION_TOOLS if not _has_tool(node, t)]
    if missing:
        return fail(
            1, f"ERROR: {missing[0]} is required to partition the image; install it or use --partition none"
        )
    if not STANDARD_ROOT_DEVICE.fullmatch(node.root_device):
        return fail(1, f'ERROR: Non-standard volume device "{node.root_device}"')
    missing = [t for t in PARTITIONED_DISK_TOOLS if not _has_tool(node, t)]
    if missing or not node.exists("/boot/grub/stage1"):
        return fail(1, "ERROR: a partitioned image needs parted, sgdisk and legacy grub in the volume")
    return fail(1, "ERROR: the simulator does not model partitioned images; use --partition none")


def tools_version(ctx: RunContext) -> CommandResult:
    """ec2-ami-tools-version: the version of the unpacked tools."""
    problem = _start(ctx, runs_at_load=False)
    if problem:
        return problem
    home = ctx.env.get("EC2_AMITOOL_HOME") or ctx.argv[0].rsplit("/bin/", 1)[0]
    found = re.search(rb"VERSION = '([^']+)'", ctx.node.read_bytes(f"{home}/lib/ec2/amitools/version.rb"))
    return ok(f"{found[1].decode() if found else 'unknown'}\n")


def bundle_vol(ctx: RunContext) -> CommandResult:
    """ec2-bundle-vol, as 1.5.3 behaves: strict options, existing -e/-i paths, the image file left."""
    problem = _start(ctx, runs_at_load=True)
    if problem:
        return problem
    if ctx.user != "root":
        return fail(1, "You need to be root to run ec2-bundle-vol")
    node = ctx.node
    try:
        options = parse_options(ctx.argv[1:], BUNDLE_VOL_OPTIONS, BUNDLE_VOL_SHORT)
        _bundle_vol_checks(ctx, options)
    except ParameterError as err:
        return fail(PARAMETER_ERROR, f"ERROR: {err}")
    lines: list[str] = []
    arch = options.get("--arch", "x86_64")
    if arch not in BUNDLE_ARCHITECTURES:
        lines.append(f"Unsupported architecture [{arch}].")
        if "--batch" not in options:
            return fail(PARAMETER_ERROR, "\n".join(lines))
    mappings: tuple[BlockDeviceMapping, ...] = ()
    if "--no-inherit" not in options:
        inherited = _inherit(ctx)
        if isinstance(inherited, CommandResult):
            return inherited
        mappings = inherited
    if "--block-device-mapping" in options:
        pairs = [p.split("=", 1) for p in options["--block-device-mapping"].split(",")]
        mappings = tuple(BlockDeviceMapping(v, d) for v, d in pairs)
    missing = [tool for tool in NEEDED_TOOLS if not _has_tool(node, tool)]
    if missing:
        return fail(1, f"ERROR: {missing[0]} is required by ec2-bundle-vol: command not found")
    partition = options.get("--partition", "auto")
    problem = _partitioning(ctx, partition)
    if problem:
        return problem
    lines.append("Not partitioning boot device.")
    destination = options.get("--destination", "/tmp")
    prefix = options.get("--prefix", "image")
    image = f"{destination.rstrip('/')}/{prefix}"
    if node.exists(image):
        return fail(IMAGE_FILE_EXISTS, f"ERROR: the specified image file {image} already exists")
    if not node.loop_devices:
        return fail(1, "ERROR: could not find a free loop device (modprobe loop)")
    home = ctx.env.get("EC2_AMITOOL_HOME") or ctx.argv[0].rsplit("/bin/", 1)[0]
    ec2_cert = options.get("--ec2cert", f"{home}/{EC2_CERT_IN_TOOLS}")
    if not node.exists(ec2_cert):
        return fail(1, f"ERROR: EC2 certificate {ec2_cert} missing: is EC2_AMITOOL_HOME right?")
    if node.rsync_partial_transfer:
        # 1.5.3 runs rsync under $SAFE, which Ruby 3 dropped: the exit 23 it tolerates on 2.7 is fatal.
        if (ruby_version(ctx) or (2, 7)) >= (3, 0):
            return fail(1, "ERROR: rsync failed with exit status 23 (some files could not be transferred)")
        lines.append("NOTE: rsync reported a partial transfer (exit 23); carrying on.")
    size_mb = int(options.get("--size", DEFAULT_IMAGE_MB))
    selection = select_for_image(
        node,
        [e for e in options.get("--exclude", "").split(",") if e],
        [i for i in options.get("--include", "").split(",") if i],
        "--no-filter" in options,
        image,
    )
    try:
        node.check_space(image, 1)
        report = make_image(node, selection, image, size_mb)
        manifest = bundle_image(
            node.host_path(image),
            node.host_path(destination),
            prefix=prefix,
            user_id=options["--user"],
            user_cert_pem=node.read_bytes(options["--cert"]),
            user_private_key_pem=node.read_bytes(options["--privatekey"]),
            ec2_cert_pem=node.read_bytes(ec2_cert),
            arch=arch if arch in BUNDLE_ARCHITECTURES else "x86_64",
            block_device_mappings=mappings,
        )
    except OSError as err:
        return fail(1, f"ERROR: {err.strerror or err}")
    except (ImageError, BundleError) as err:
        # Say node paths, as the real tool would, not where the simulator keeps the node.
        return fail(1, f"ERROR: {str(err).replace(str(node.root), '')}")
    node.last_bundle_report = report
    for name in [p.filename for p in manifest.parts] + [f"{prefix}.manifest.xml", prefix]:
        node.set_owner(f"{destination.rstrip('/')}/{name}", ("root", "root"))
    lines += [
        f"Copying / into the image file {image}...",
        *(f"Excluding: {left.path} ({left.reason})" for left in report.left_out),
        f"Bundling image file {image}...",
        *(f"Created {p.filename}" for p in manifest.parts),
        "Generating digests for each part... Digests generated.",
        "Creating bundle manifest...",
        "ec2-bundle-vol complete.",
    ]
    return ok("\n".join(lines) + "\n")


def _upload_credentials(ctx: RunContext, options: dict[str, str]) -> tuple[str, str, str | None] | str:
    """The credentials the tool signs with, as S3 receives them; or the error text."""
    node = ctx.node
    if "--access-key" in options or "--secret-key" in options:
        if not options.get("--access-key") or not options.get("--secret-key"):
            return "ERROR: missing mandatory parameter: --access-key and --secret-key go together"
        token = options.get("--delegation-token") or None
        if options.get("--sigv", "4") == "4":
            token = None  # parsed, but no x-amz-security-token header is sent under SigV4
        return options["--access-key"], options["--secret-key"], token
    # No keys: the instance profile's, read from instance metadata with an IMDSv1 request.
    if not node.on_ec2 or node.instance_profile is None:
        return "ERROR: no --access-key/--secret-key given and no instance profile credentials found"
    if node.imdsv2_required:
        return "ERROR: could not read instance profile credentials from instance metadata: 401 Unauthorized"
    return node.instance_profile


def _s3_location(region: str) -> str:
    return "US" if region == "us-east-1" else region


def upload_bundle(ctx: RunContext) -> CommandResult:
    """ec2-upload-bundle, as 1.5.3 behaves: strict options, ten known regions, the token dropped."""
    problem = _start(ctx, runs_at_load=True)
    if problem:
        return problem
    node = ctx.node
    try:
        options = parse_options(ctx.argv[1:], UPLOAD_OPTIONS, UPLOAD_SHORT)
        for name in ("--bucket", "--manifest"):
            if not options.get(name):
                raise ParameterError(f"missing mandatory parameter: {name}")
    except ParameterError as err:
        return fail(PARAMETER_ERROR, f"ERROR: {err}")
    manifest_path = options["--manifest"]
    if not node.exists(manifest_path):
        return fail(1, f"ERROR: manifest {manifest_path} does not exist")
    if node.region is None:
        return fail(1, "ERROR: could not connect to S3: no network route from this node")
    credentials = _upload_credentials(ctx, options)
    if isinstance(credentials, str):
        return fail(1, credentials)
    region = options.get("--region", "us-east-1")
    if region not in UPLOAD_REGIONS and not options.get("--url"):
        return fail(BAD_URI, "ERROR: bad URI(is not URI?): nil")
    try:
        manifest = read_manifest(node.host_path(manifest_path))
    except BundleError as err:
        return fail(1, f"ERROR: {err}")
    bucket, _, key_prefix = options["--bucket"].partition("/")
    lines = []
    located = node.region.bucket_region(bucket)
    if located is None:
        lines.append("Creating bucket...")
        # The tool says nothing about Object Ownership: S3 makes the bucket with ACLs disabled.
        node.region.create_bucket(bucket, region, acls_disabled=True)
    elif located != region:
        return fail(
            BUCKET_IN_OTHER_REGION,
            f'ERROR: Bucket {bucket} already exists in "{_s3_location(located)}" '
            f'and "{region}" was specified.',
        )
    folder = options.get("--directory") or manifest_path.rsplit("/", 1)[0] or "/"
    files = [p.filename for p in manifest.parts][int(options.get("--part", "0")) :]
    if "--skipmanifest" not in options:
        files.append(manifest_path.rsplit("/", 1)[1])
    attempts = UPLOAD_ATTEMPTS if "--retry" in options else 1
    lines.append(f"Uploading bundled image parts to the S3 bucket {bucket} ...")
    paths = {name: f"{folder.rstrip('/')}/{name}" for name in files}
    missing = next((path for path in paths.values() if not node.exists(path)), None)
    if missing is not None:
        return fail(1, "\n".join([*lines, f"ERROR: part {missing} is missing"]))
    transfer = node.progress.transfer(
        "uploading", sum(node.host_path(p).stat().st_size for p in paths.values())
    )
    for name, path in paths.items():
        key = f"{key_prefix.strip('/')}/{name}" if key_prefix.strip("/") else name
        data = node.read_bytes(path)
        for attempt in range(1, attempts + 1):
            error = node.region.upload_object(bucket, key, data, region, credentials)
            if error is None:
                lines.append(f"Uploaded {name}")
                transfer.advance(len(data))
                break
            lines.append(f"Error uploading {name} (attempt {attempt}): {error}")
        else:
            return fail(1, "\n".join([*lines, f"ERROR: failed to upload {name}"]))
    transfer.finish()
    lines.append("Bundle upload completed.")
    return ok("\n".join(lines) + "\n")
