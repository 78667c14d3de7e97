"""The ami-tools strategy: Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does it.

Deviations from the crate (its known defects, fixed here): ec2-bundle-vol always gets `-d`, `-p` and
`--batch`; the exclusions always hold install_dir, credential_dir, destination_dir and amidsl's node
state dir; AWS credentials reach ec2-upload-bundle only as run-time references; the upload names the
region and the optional session token; RegisterImage passes the architecture and optional
virtualization type, kernel, ramdisk and block device mappings.
"""

from __future__ import annotations

import dataclasses

from amidsl.model.actions import (
    Action,
    Directory,
    EnvSecret,
    Exec,
    ExistingPaths,
    InstallPackages,
    InstallRuby,
    PathsMatching,
    PlanWarning,
    RemoteDirectory,
    RemoteFile,
    Remove,
    RunnerValue,
    StagedFile,
    Value,
)
from amidsl.node.amidsl_node import (
    HOST_KEY_GENERATORS,
    HYGIENE_EMPTY_DIR,
    HYGIENE_EMPTY_FILE,
    HYGIENE_LEAVE_OUT,
)
from amidsl.settings import NODE_STATE_DIR, AmiSettings
from amidsl.strategies import bundle_files
from amidsl.strategies.bundle_files import image_file
from amidsl.strategies.hygiene import applied_items
from amidsl.strategies.register import ami_register, instance_types_note
from amidsl.strategies.strategy import FailureAdvice, Strategy

ACCESS_KEY = EnvSecret("AMIDSL_ACCESS_KEY", "the AWS access key id")
SECRET_KEY = EnvSecret("AMIDSL_SECRET_KEY", "the AWS secret access key")
# Never passed to ec2-upload-bundle: it drops the token under SigV4 (temporary keys are refused instead).
SESSION_TOKEN = EnvSecret("AMIDSL_SESSION_TOKEN", "the AWS session token (temporary credentials)")
PRIVATE_KEY_FILE = "AMIDSL_PRIVATE_KEY_FILE"
# Set by a live build from `[live] endpoint_url`; ec2-upload-bundle's --url is the region's S3 otherwise.
S3_URL_VARIABLE = "AMIDSL_S3_URL"
INSTALL_SOURCE_FILE = "AMIDSL_INSTALL_SOURCE_FILE"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the tools need on the node besides Ruby: unzip and curl to fetch them, rsync for
# ec2-bundle-vol's copy of the volume, and the build dependencies ruby-build needs.
TOOL_PACKAGES_APT = ("ca-certificates", "curl", "unzip", "rsync")
TOOL_PACKAGES_RPM = TOOL_PACKAGES_APT
RUBY_BUILD_APT = (
    "git",
    "gcc",
    "make",
    "libssl-dev",
    "zlib1g-dev",
    "libreadline-dev",
    "libyaml-dev",
    "libffi-dev",
)
RUBY_BUILD_RPM = (
    "git",
    "gcc",
    "make",
    "openssl-devel",
    "zlib-devel",
    "readline-devel",
    "libyaml-devel",
    "libffi-devel",
)

# The distribution Rubies ec2-ami-tools 1.5 run on (Debian 12: 3.1; Ubuntu 22.04: 3.0); from 3.2 on
# (Ubuntu 24.04, Debian 13, Amazon Linux 2023) File.exists? is gone and the tools die.
DISTRIBUTION_RUBIES = ("3.1", "3.0")
# Run before the tools: a Ruby they cannot load on (3.2 removed File.exists?) stops the build with a
# message instead of a NoMethodError in the middle of ec2-bundle-vol.
RUBY_CHECK = (
    'v = Gem::Version.new(RUBY_VERSION); puts "Ruby #{RUBY_VERSION}"; '
    'abort "Ruby #{RUBY_VERSION} cannot run ec2-ami-tools 1.5: they need Ruby 2.7, 3.0 or 3.1" '
    'if v >= Gem::Version.new("3.2")'
)
RBENV_URL = "https://github.com/rbenv/rbenv.git"
RUBY_BUILD_URL = "https://github.com/rbenv/ruby-build.git"


def rbenv_root(s: AmiSettings) -> str:
    """Where the crate's rbenv lives: inside install_dir, so the image excludes it."""
    return f"{s.install_dir}/.rbenv"


def ruby_link(s: AmiSettings) -> str:
    """The `ruby` the tools run: a link in install_dir to the Ruby chosen on the node."""
    return f"{s.install_dir}/ruby/bin/ruby"


def tool_env(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """The environment the ami-tools run with (their home, and the chosen Ruby first on PATH)."""
    # The tools' own bin/ goes on PATH as Amazon's instructions say, after the system's; with
    # install_strategy "none" the Ruby is the node's own, found there.
    first = "" if s.install_strategy == "none" else f"{ruby_link(s).rsplit('/', 1)[0]}:"
    return (
        ("EC2_AMITOOL_HOME", s.tools_dir),
        ("EC2_HOME", s.tools_dir),
        ("PATH", f"{first}{SYSTEM_PATH}:{s.tools_dir}/bin"),
    )


def _ruby_choice(s: AmiSettings) -> InstallRuby:
    """Which Ruby: the distribution's 3.1/3.0 (ec2-ami-tools 1.5 work on them with --no-inherit), else
    Ruby 2.7 built with rbenv; `inherit` needs Ruby 2.7 (Ruby 3 cannot read instance metadata)."""
    distribution = () if s.install_strategy == "rbenv" or s.inherit else DISTRIBUTION_RUBIES
    build = None if s.install_strategy == "package" else s.ruby_version
    if s.install_strategy == "rbenv":
        what = f"build Ruby {s.ruby_version} with rbenv"
    elif build is None:
        what = "install the distribution's Ruby 3.1 or 3.0"
    elif distribution:
        what = (
            f"install the distribution's Ruby 3.1 or 3.0 where it has one, else build Ruby {build} with rbenv"
        )
    else:
        what = f"build Ruby {build} with rbenv (inherit needs Ruby 2.7)"
    return InstallRuby(
        link=ruby_link(s),
        distribution_versions=distribution,
        build_version=build,
        rbenv_root=rbenv_root(s),
        rbenv_url=RBENV_URL,
        ruby_build_url=RUBY_BUILD_URL,
        build_apt=RUBY_BUILD_APT,
        build_rpm=RUBY_BUILD_RPM,
        description=what,
    )


def install(s: AmiSettings) -> list[Action | PlanWarning]:
    """Install the OS packages, the ami-tools into install_dir, and the Ruby chosen on the node."""
    steps: list[Action | PlanWarning] = [
        PlanWarning(
            "OS packages installed by this phase stay in the image (only install_dir, credential_dir "
            f"and destination_dir are excluded): {', '.join(TOOL_PACKAGES_APT)}; {_ruby_stays(s)}"
        ),
        InstallPackages(
            apt=TOOL_PACKAGES_APT,
            rpm=TOOL_PACKAGES_RPM,
            description="install the packages the ami-tools need",
        ),
        _tools_archive(s),
        Directory(s.credential_dir, mode="0700", description="create the credential directory (root only)"),
    ]
    if s.install_strategy != "none":
        steps.append(_ruby_choice(s))
    return steps


def _ruby_stays(s: AmiSettings) -> str:
    """What of Ruby stays in the image, per strategy (said loudly in the preview and the script)."""
    build = (
        f"where Ruby {s.ruby_version} is built with rbenv, ITS BUILD PACKAGES STAY IN THE IMAGE: "
        f"{', '.join(RUBY_BUILD_APT)} (apt) / {', '.join(RUBY_BUILD_RPM)} (dnf, yum); Ruby itself stays "
        "in install_dir, which the image excludes"
    )
    distribution = "where the distribution's ruby3.1 or ruby3.0 package is installed, it stays in the image"
    if s.install_strategy == "none":
        return (
            "no Ruby is installed (install_strategy 'none': the node's own ruby, which must be 2.7, 3.0 "
            "or 3.1: ami-bundle checks it)"
        )
    if s.install_strategy == "rbenv" or s.inherit:
        return build
    if s.install_strategy == "package":
        return distribution
    return f"{distribution}; {build}"


def _tools_archive(s: AmiSettings) -> RemoteDirectory:
    source = s.install_source
    staged = None
    if source.local_file is not None:
        staged = StagedFile(INSTALL_SOURCE_FILE, "the ec2-ami-tools zip archive", source.local_file)
    return RemoteDirectory(
        s.install_dir,
        url=None if staged else source.url,
        staged=staged,
        rename_glob="ec2-ami-tools-*",
        rename_to="ec2-ami-tools",
        description="unpack the ec2-ami-tools into the install directory",
    )


def configure(s: AmiSettings) -> list[Action]:
    """Write the X.509 certificate and the private key into credential_dir, root-only."""
    return [
        RemoteFile(
            s.certificate_path,
            content=s.certificate_pem,
            mode="0600",
            description="write the signing certificate",
        ),
        RemoteFile(
            s.private_key_path,
            staged=StagedFile(
                PRIVATE_KEY_FILE, "the private signing key", s.private_key_source.local_file, secret=True
            ),
            mode="0600",
            secret=True,
            description="install the private signing key",
        ),
    ]


def bundle_vol_argv(s: AmiSettings) -> tuple[Value, ...]:
    """The ec2-bundle-vol command line (no secrets in it: the key is a file path)."""
    argv: list[Value] = [
        f"{s.tools_dir}/bin/ec2-bundle-vol",
        "-k",
        s.private_key_path,
        "-c",
        s.certificate_path,
        "-u",
        s.user_id,
        "-r",
        s.arch,
        # Every -e and -i path must exist (the tool stops otherwise): the node decides which are there,
        # and finds what image hygiene, exclude_patterns and includes name (patterns the tool lacks).
        "-e",
        ExistingPaths(s.exclusions, matching=bundle_vol_matching(s)),
        "-i",
        ExistingPaths(
            (),
            matching=(PathsMatching(s.includes, BUNDLE_VOL_FS_TYPES, "includes", "keeping", say_each=False),),
        ),
        "-d",
        s.destination_dir,
        "-p",
        s.prefix,
        "--partition",
        s.partition,
    ]
    if s.image_size_mb is not None:
        argv += ["-s", str(s.image_size_mb)]
    if not s.inherit:
        argv.append("--no-inherit")
    argv.append("--batch")
    return tuple(argv)


# The filesystem types ec2-bundle-vol copies (it leaves out the other mounts): where the node looks
# for what the patterns name.
BUNDLE_VOL_FS_TYPES = ("ext2", "ext3", "ext4", "xfs", "jfs", "reiserfs", "tmpfs")
HOST_KEYS = "ssh_host_keys"
KEEPING_HOST_KEYS = (
    "keeping the SSH host keys: nothing on this node (cloud-init, sshd-keygen) makes new ones at first "
    "boot, and ec2-bundle-vol cannot add the unit that native builds add; every instance shares them. "
    'Install cloud-init, or use bundler = "native"'
)


def bundle_vol_matching(s: AmiSettings) -> tuple[PathsMatching, ...]:
    """What the node finds for ec2-bundle-vol's -e: the paths image hygiene and exclude_patterns name."""
    leave_out = [i for i in applied_items(s) if i.treatment == HYGIENE_LEAVE_OUT]
    patterns = tuple(p for i in leave_out if i.name != HOST_KEYS for p in i.patterns) + s.exclude_patterns
    matching = []
    if patterns:
        matching.append(PathsMatching(patterns, BUNDLE_VOL_FS_TYPES, "image hygiene, exclude_patterns"))
    for item in leave_out:
        if item.name == HOST_KEYS:
            # Without a generator at first boot an image without host keys is unreachable over SSH.
            generators = tuple(path for _, paths in HOST_KEY_GENERATORS for path in paths)
            matching.append(
                PathsMatching(
                    item.patterns,
                    BUNDLE_VOL_FS_TYPES,
                    f"image hygiene: {HOST_KEYS}",
                    root="/etc/ssh",
                    when_any=generators,
                    otherwise=KEEPING_HOST_KEYS,
                )
            )
    return tuple(matching)


def bundle_vol_hygiene_notes(s: AmiSettings) -> list[PlanWarning]:
    """The preview's notes on what image hygiene ec2-bundle-vol can and cannot apply."""
    applied = applied_items(s)
    left_out = [i.name for i in applied if i.treatment == HYGIENE_LEAVE_OUT]
    not_applied = [i.name for i in applied if i.treatment in (HYGIENE_EMPTY_FILE, HYGIENE_EMPTY_DIR)]
    notes = []
    if left_out:
        notes.append(
            PlanWarning(
                f"image hygiene (ec2-bundle-vol's -e): the node finds the paths of {', '.join(left_out)}"
                " and exclude_patterns on the filesystems ec2-bundle-vol copies, says each, and leaves them "
                "out; SSH host keys only when cloud-init or sshd-keygen will make new ones at first boot "
                "(else they stay, and the script says so). includes go to -i, so the CA certificates and "
                "apt's keyrings stay",
                note=True,
            )
        )
    if not_applied:
        notes.append(
            PlanWarning(
                "ec2-bundle-vol cannot empty a file or keep a directory empty, so "
                f"{', '.join(not_applied)} stay as they are on the node, except where an exclusion "
                f"leaves them out whole (destination_dir {s.destination_dir}, for one) (native builds empty "
                "/etc/machine-id and the logs and keep /tmp and /var/tmp empty): for an image others "
                'launch, use bundler = "native"'
            )
        )
    return notes


def ami_bundle(s: AmiSettings) -> list[Action | PlanWarning]:
    """Bundle the node's volume into destination_dir, excluding everything amidsl put there."""
    remove_image = Remove(image_file(s), description="remove the image file ec2-bundle-vol leaves behind")
    return [
        *bundle_vol_hygiene_notes(s),
        Exec(
            ("mkdir", "-p", "--", s.destination_dir), description="make sure the destination directory exists"
        ),
        Exec(
            ("install", "-d", "-m", "0700", "-o", "root", "-g", "root", "--", NODE_STATE_DIR),
            description="make sure amidsl's state directory exists (the image excludes it)",
        ),
        Exec(
            ("ruby", "-e", RUBY_CHECK),
            env=tool_env(s),
            description="check that the Ruby the tools run on is one they work on (2.7 to 3.1)",
        ),
        Exec(
            (f"{s.tools_dir}/bin/ec2-ami-tools-version",),
            env=tool_env(s),
            description="say which ec2-ami-tools run (this plan follows 1.5.3's measured behaviour)",
        ),
        # An image file left by an earlier run makes ec2-bundle-vol stop ("already exists").
        dataclasses.replace(remove_image, description="remove an image file an earlier run left"),
        Exec(
            bundle_vol_argv(s),
            env=tool_env(s),
            cwd=s.install_dir,
            description="bundle the volume with ec2-bundle-vol",
            # The image it writes into destination_dir (often /tmp) holds the volume's secrets: with
            # root's usual umask 022 every user of the node could read it while the tool works.
            umask="077",
        ),
        remove_image,
    ]


def s3_url(region: str) -> str:
    """The S3 endpoint of a region: ec2-upload-bundle 1.5.3 knows only ten regions without --url."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{domain}"


def s3_endpoint(s: AmiSettings) -> RunnerValue:
    """Where ec2-upload-bundle uploads: the region's S3 endpoint unless the runner names another (a live
    build's `[live] endpoint_url`: an S3-compatible or VPC endpoint)."""
    return RunnerValue(S3_URL_VARIABLE, "the S3 endpoint ec2-upload-bundle uploads to", s3_url(s.region))


def ami_upload(s: AmiSettings) -> list[Action]:
    """Upload the bundle parts and manifest to S3 with ec2-upload-bundle."""
    keys: tuple[Value, ...] = ("-a", ACCESS_KEY, "-s", SECRET_KEY) if s.upload_credentials == "keys" else ()
    argv = (
        f"{s.tools_dir}/bin/ec2-upload-bundle",
        "-b",
        s.s3_location,
        "-m",
        s.manifest_path,
        *keys,
        "--region",
        s.region,
        "--url",
        s3_endpoint(s),
        "--retry",
        "--batch",
    )
    return [
        Exec(
            argv,
            env=tool_env(s),
            cwd=s.install_dir,
            description="upload the bundle to S3 with ec2-upload-bundle"
            + ("" if keys else " (the node's instance profile credentials)"),
        )
    ]


def cleanup(s: AmiSettings) -> list[Action]:
    """Remove the credentials, the tools and Ruby, and the bundle files from the node."""
    return [
        Remove(s.credential_dir, recursive=True, description="remove the credentials"),
        Remove(s.install_dir, recursive=True, description="remove the ami-tools and Ruby"),
        bundle_files.parts_removal(s),
        Remove(s.manifest_path, description="remove the bundle manifest"),
        bundle_files.image_removal(s, "ec2-bundle-vol"),
    ]


PHASE_FUNCTIONS = {
    "install": install,
    "configure": configure,
    "ami-bundle": ami_bundle,
    "ami-upload": ami_upload,
    "ami-register": ami_register,
    "cleanup": cleanup,
}


def credential_removal(s: AmiSettings) -> Remove:
    """The action that takes the credentials off the node after a failure.

    It empties credential_dir but keeps the (root-only) directory, so that a resumed build can run
    configure again without running install first.
    """
    return Remove(s.credential_dir, contents=True, description="remove the credentials")


def after_failure(s: AmiSettings, phase: str) -> FailureAdvice:
    """After a failure in any phase: take the signing key and certificate off the node."""
    where = s.credential_dir
    return FailureAdvice(
        removal=credential_removal(s),
        # The removal checks that the directory is empty afterwards: only then is this said.
        removed=f"The credentials were removed from the node ({where}).",
        failed=f"The credentials may remain on the node in {where}: removing them failed too",
        interrupted=f"The credentials may remain on the node in {where}: their removal was interrupted.",
    )


def resume_hint(s: AmiSettings, phase: str) -> str | None:
    """None: the generic advice fits (from the failed phase, after configure if the credentials went)."""
    return None


def _partition_note(s: AmiSettings) -> str:
    if s.partition == "none":
        return (
            "--partition none: a plain filesystem image, which boots as paravirtual (through a pv-grub "
            "kernel reading /boot/grub/menu.lst); an HVM instance cannot boot it (HVM needs a partition "
            "table and a boot loader)"
        )
    return (
        f"--partition {s.partition}: needs dmsetup, kpartx, losetup, parted and sgdisk on the node, a "
        "/dev/xvd* or /dev/sd* root device (it stops on /dev/nvme* and /dev/vda roots) and legacy grub "
        "in the volume"
    )


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """What an ami-tools build puts on the node, leaves in the image, and needs, for the plan preview."""
    if s.upload_credentials == "keys":
        upload = (
            "the AWS access key and secret key reach ec2-upload-bundle at run time (-a/-s); temporary "
            "credentials (a session token) are refused: the tool drops the token under SigV4"
        )
    else:
        upload = (
            "no AWS keys reach the node: ec2-upload-bundle reads the node's instance profile credentials "
            "from instance metadata with an IMDSv1 request, so the instance must allow IMDSv1 "
            "(HttpTokens optional) and its role must be allowed to write the bucket"
        )
    return (
        (
            "on the node",
            f"ec2-ami-tools and Ruby in {s.install_dir}; the signing key and certificate in "
            f"{s.credential_dir} (removed in cleanup); the image file {image_file(s)}, a "
            f"{s.image_size_mb or 10240} MB sparse file, and the bundle parts beside it: "
            f"{s.destination_dir} needs room for the volume's data twice over (removed after the upload)",
        ),
        (
            "stays in the image",
            f"the OS packages installed: {', '.join(TOOL_PACKAGES_APT)}; {_ruby_stays(s)}",
        ),
        ("image", _partition_note(s)),
        (
            "instance metadata",
            "--inherit: ec2-bundle-vol reads it (needs Ruby 2.7 and an instance allowing IMDSv1)"
            if s.inherit
            else "--no-inherit: nothing is read from instance metadata; the manifest has no block device "
            "mapping (RegisterImage gets only those you set)",
        ),
        ("upload", upload),
        (
            "the node needs",
            "apt-get, dnf or yum with network access; rsync, losetup, mount and modprobe (a loop device)",
        ),
        (
            "tools version",
            "measured against ec2-ami-tools 1.5.3; the archive at ami_tools_url may be newer (1.5.19 or "
            "later) and may differ: the script prints the version and checks the Ruby (2.7 to 3.1) before "
            "bundling, checks on the node that every -e path exists, passes --url always and removes the "
            "image file before and after, whatever the version",
        ),
        (
            "ruby",
            "ec2-ami-tools 1.5 run on Ruby 2.7, 3.0 and 3.1 (3.2 and later cannot load them); on 3.0/3.1 a "
            "file rsync cannot copy (exit 23) stops ec2-bundle-vol, where 2.7 carries on",
        ),
        ("instance types", instance_types_note(s)),
        (
            "secrets",
            "the signing key is written to the node (removed in cleanup); "
            + (
                "the AWS keys reach ec2-upload-bundle at run time, never the script"
                if s.upload_credentials == "keys"
                else "no AWS keys reach the node"
            ),
        ),
    )


STRATEGY = Strategy(
    name="ami-tools",
    bundler="ami-tools",
    backing="instance-store",
    phases=PHASE_FUNCTIONS,
    summary=summary,
    after_failure=after_failure,
    resume_hint=resume_hint,
    credential_use="supplied at run time as {env}",
    runs_node_program=False,
    uses_bucket=True,
)
