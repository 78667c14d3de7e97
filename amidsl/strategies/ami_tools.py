"""The ami-tools strategy: Amazon's ec2-ami-tools (and Ruby) on the node, as pallet's ami-crate does it.

Deviations from the crate (its known defects, fixed here): ec2-bundle-vol always gets `-d`, `-p` and
`--batch`; the exclusions always hold install_dir, credential_dir, destination_dir and amidsl's node
state dir; AWS credentials reach ec2-upload-bundle only as run-time references; the upload names the
region and the optional session token; RegisterImage passes the architecture and optional
virtualization type, kernel, ramdisk and block device mappings.
"""

from __future__ import annotations

from amidsl.actions import (
    Action,
    AwsCall,
    Directory,
    EnvSecret,
    Exec,
    InstallPackages,
    OptionalArg,
    PlanWarning,
    RemoteDirectory,
    RemoteFile,
    Remove,
    StagedFile,
    UpdateSettings,
)
from amidsl.settings import AmiSettings

ACCESS_KEY = EnvSecret("AMIDSL_ACCESS_KEY", "the AWS access key id")
SECRET_KEY = EnvSecret("AMIDSL_SECRET_KEY", "the AWS secret access key")
SESSION_TOKEN = EnvSecret("AMIDSL_SESSION_TOKEN", "the AWS session token (temporary credentials)")
PRIVATE_KEY_FILE = "AMIDSL_PRIVATE_KEY_FILE"
INSTALL_SOURCE_FILE = "AMIDSL_INSTALL_SOURCE_FILE"
# Settings only this strategy reads (Ruby, the tools' own files on the node, ec2-bundle-vol's
# --inherit); a native build's previews and scripts leave them out.
OWN_SETTINGS = frozenset(
    {
        "install_strategy",
        "install_ruby",
        "ruby_version",
        "credential_dir",
        "private_key_path",
        "certificate_path",
        "manifest_path",
        "inherit",
    }
)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the tools need on the node besides Ruby: unzip and curl to fetch them, rsync for
# ec2-bundle-vol's copy of the volume, and the build dependencies ruby-build needs.
TOOL_PACKAGES_APT = ("ca-certificates", "curl", "unzip", "rsync")
TOOL_PACKAGES_RPM = ("ca-certificates", "curl", "unzip", "rsync")
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

RBENV_URL = "https://github.com/rbenv/rbenv.git"
RUBY_BUILD_URL = "https://github.com/rbenv/ruby-build.git"


def rbenv_root(s: AmiSettings) -> str:
    """Where the crate's rbenv lives: inside install_dir, so the image excludes it."""
    return f"{s.install_dir}/.rbenv"


def tool_env(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """The environment the ami-tools run with (their home, and the rbenv Ruby first on PATH)."""
    env = [("EC2_AMITOOL_HOME", s.tools_dir), ("EC2_HOME", s.tools_dir)]
    if s.install_strategy == "rbenv":
        env.append(("PATH", f"{rbenv_root(s)}/versions/{s.ruby_version}/bin:{SYSTEM_PATH}"))
    return tuple(env)


def install(s: AmiSettings) -> list[Action | PlanWarning]:
    """Install the OS packages, the ami-tools into install_dir, and Ruby as the strategy says."""
    apt, rpm = TOOL_PACKAGES_APT, TOOL_PACKAGES_RPM
    if s.install_strategy == "rbenv":
        apt, rpm = apt + RUBY_BUILD_APT, rpm + RUBY_BUILD_RPM
    elif s.install_strategy == "package":
        apt, rpm = (*apt, "ruby"), (*rpm, "ruby")
    steps: list[Action | PlanWarning] = [
        PlanWarning(
            "OS packages installed by this phase stay in the image (only install_dir, "
            f"credential_dir and destination_dir are excluded): {', '.join(apt)} (apt) / "
            f"{', '.join(rpm)} (dnf, yum)"
        ),
        InstallPackages(apt=apt, rpm=rpm, description="install the packages the ami-tools need"),
        _tools_archive(s),
        Directory(s.credential_dir, mode="0700", description="create the credential directory (root only)"),
    ]
    if s.install_strategy == "package":
        steps.insert(
            0,
            PlanWarning(
                "install_strategy 'package': the distribution's ruby package stays in the image; use "
                "'rbenv' (the default) to keep Ruby inside install_dir, which the image excludes"
            ),
        )
    if s.install_strategy == "rbenv":
        root = rbenv_root(s)
        steps += [
            Exec(
                ("git", "clone", "--depth", "1", RBENV_URL, root),
                creates=root,
                description="fetch rbenv into the install directory",
            ),
            Exec(
                ("git", "clone", "--depth", "1", RUBY_BUILD_URL, f"{root}/plugins/ruby-build"),
                creates=f"{root}/plugins/ruby-build",
                description="fetch ruby-build",
            ),
            Exec(
                (f"{root}/bin/rbenv", "install", "--skip-existing", s.ruby_version),
                env=(("RBENV_ROOT", root),),
                creates=f"{root}/versions/{s.ruby_version}",
                description=f"build Ruby {s.ruby_version} with rbenv",
            ),
        ]
    return steps


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


def bundle_vol_argv(s: AmiSettings) -> tuple[str, ...]:
    """The ec2-bundle-vol command line (no secrets in it: the key is a file path)."""
    argv = [
        f"{s.tools_dir}/bin/ec2-bundle-vol",
        "-k",
        s.private_key_path,
        "-c",
        s.certificate_path,
        "-u",
        s.user_id,
        "-r",
        s.arch,
        "-e",
        ",".join(s.exclusions),
        "-d",
        s.destination_dir,
        "-p",
        s.prefix,
    ]
    if s.image_size_mb is not None:
        argv += ["-s", str(s.image_size_mb)]
    if not s.inherit:
        argv.append("--no-inherit")
    argv.append("--batch")
    return tuple(argv)


def ami_bundle(s: AmiSettings) -> list[Action]:
    """Bundle the node's volume into destination_dir, excluding everything amidsl put there."""
    return [
        Exec(
            ("mkdir", "-p", "--", s.destination_dir), description="make sure the destination directory exists"
        ),
        Exec(
            bundle_vol_argv(s),
            env=tool_env(s),
            cwd=s.install_dir,
            description="bundle the volume with ec2-bundle-vol",
        ),
    ]


def ami_upload(s: AmiSettings) -> list[Action]:
    """Upload the bundle parts and manifest to S3 with ec2-upload-bundle."""
    argv = (
        f"{s.tools_dir}/bin/ec2-upload-bundle",
        "-b",
        s.s3_location,
        "-m",
        s.manifest_path,
        "-a",
        ACCESS_KEY,
        "-s",
        SECRET_KEY,
        OptionalArg("-t", SESSION_TOKEN),
        "--region",
        s.region,
        "--retry",
        "--batch",
    )
    return [
        Exec(
            argv,
            env=tool_env(s),
            cwd=s.install_dir,
            description="upload the bundle to S3 with ec2-upload-bundle",
        )
    ]


def register_image_params(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """The RegisterImage parameters for an S3-backed image."""
    params: list[tuple[str, object]] = [
        ("Name", s.image_name),
        ("ImageLocation", s.s3_manifest_path),
    ]
    if s.image_description:
        params.append(("Description", s.image_description))
    params.append(("Architecture", s.arch))
    optional = (
        ("VirtualizationType", s.virtualization_type),
        ("KernelId", s.kernel_id),
        ("RamdiskId", s.ramdisk_id),
    )
    params += [(key, value) for key, value in optional if value is not None]
    if s.block_device_mappings:
        params.append(
            (
                "BlockDeviceMappings",
                tuple(
                    {"DeviceName": device, "VirtualName": virtual}
                    for device, virtual in s.block_device_mappings
                ),
            )
        )
    return tuple(params)


def ami_register(s: AmiSettings) -> list[Action]:
    """Register the uploaded bundle as an AMI and keep its id in the settings."""
    return [
        AwsCall(
            "ec2",
            "RegisterImage",
            register_image_params(s),
            region=s.region,
            result_name="register_image",
            description="register the image with EC2",
        ),
        UpdateSettings(
            "register_image", (("image_id", "ImageId"),), description="keep the new image id in the settings"
        ),
    ]


def cleanup(s: AmiSettings) -> list[Action]:
    """Remove the credentials, the tools and Ruby, and the bundle files from the node."""
    return [
        Remove(s.credential_dir, recursive=True, description="remove the credentials"),
        Remove(s.install_dir, recursive=True, description="remove the ami-tools and Ruby"),
        Remove(s.destination_dir, matching=f"{s.prefix}.part.*", description="remove the bundle parts"),
        Remove(s.manifest_path, description="remove the bundle manifest"),
        Remove(
            f"{s.destination_dir.rstrip('/')}/{s.prefix}",
            description="remove the image file if ec2-bundle-vol left it",
        ),
    ]


PHASE_FUNCTIONS = {
    "install": install,
    "configure": configure,
    "ami-bundle": ami_bundle,
    "ami-upload": ami_upload,
    "ami-register": ami_register,
    "cleanup": cleanup,
}


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """What an ami-tools build puts on the node, leaves in the image, and needs, for the plan preview."""
    apt = TOOL_PACKAGES_APT + (RUBY_BUILD_APT if s.install_strategy == "rbenv" else ())
    apt += ("ruby",) if s.install_strategy == "package" else ()
    return (
        (
            "on the node",
            f"ec2-ami-tools and Ruby in {s.install_dir}; the signing key and certificate in "
            f"{s.credential_dir} (removed in cleanup)",
        ),
        ("stays in the image", f"the OS packages installed: {', '.join(apt)}"),
        ("the node needs", "apt-get, dnf or yum with network access, and Ruby's build tools for rbenv"),
        (
            "secrets",
            "the signing key is written to the node; the AWS credentials reach ec2-upload-bundle at run time",
        ),
    )
