"""Every amidsl command and its options, defined once.

Both front ends are built from this table: the `amidsl` command (argparse, amidsl/cli/main.py) and the
`inv` tasks of a checkout (amidsl/cli/invoke.py). Each command names the function that runs it
("module:function"), imported only when that command runs, so `amidsl plan` never loads boto3, moto
or paramiko. The function takes every option as a keyword argument.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from amidsl.settings.constants import ARCHITECTURES, BUNDLERS

USAGE_ERROR = 2  # bad options or settings: nothing was done
FAILED = 1  # the work itself failed (a build, a simulated build)
INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


@dataclass(frozen=True)
class Option:
    """One command-line option; its kind follows from the default.

    False: a flag; (): repeatable, collected into a list; an int: an integer; anything else: a string.
    """

    name: str  # the keyword argument; the flag is --name with dashes
    help: str
    default: object = None
    short: str | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    required: bool = False
    positional: bool = False  # given as a plain word (amidsl completion bash), not as --name
    # "module:NAME" of the tuple of values shell completion offers where the command itself checks the
    # value (it is defined where it is checked, imported only to write a completion script).
    values: str | None = None
    # "module:function" checking a given value before the command runs: (flag, value) -> Problem or None.
    check: str | None = None

    @property
    def flag(self) -> str:
        """The long option, e.g. --on-error."""
        return "--" + self.name.replace("_", "-")

    def problem_with(self, value: str) -> str:
        """What the option's check finds wrong with a given value, with the fix; "" when it is fine."""
        if not self.check:
            return ""
        module, _, function = self.check.partition(":")
        problem = getattr(importlib.import_module(module), function)(self.flag, value)
        return f"{problem.message}; {problem.fix}" if problem is not None else ""


@dataclass(frozen=True)
class CliCommand:
    """One amidsl command: its name, one-line summary, the function that runs it and its options."""

    name: str
    summary: str
    target: str
    options: tuple[Option, ...]

    @property
    def description(self) -> str:
        """The summary as a sentence, for help texts."""
        return self.summary[0].upper() + self.summary[1:] + "."

    def call(self, options: dict[str, object]) -> None:
        """Run the command's function with these options (an unset repeatable option is an empty list)."""
        for option in self.options:
            if isinstance(option.default, tuple):
                options[option.name] = list(options[option.name] or [])  # type: ignore[call-overload]
        if FORMAT_ALIAS in self.options:  # --format json is the older spelling of --json
            chosen = options.pop("format")
            options["json"] = bool(options.get("json")) or chosen == "json"
        module, _, function = self.target.partition(":")
        getattr(importlib.import_module(module), function)(**options)


CONFIG = Option(
    "config",
    "TOML settings file; repeat to layer files, a later file's keys winning (default: $AMIDSL_CONFIG, "
    "then ./amidsl.toml, then the built-in example)",
    default=(),
    short="-c",
    metavar="FILE",
)
PHASES = "amidsl.model.plan:AMI_PHASES"
# Every command that takes --config takes --set too (amidsl/settings/layers.py says how it is read).
SET = Option(
    "set",
    "override one setting after the files (repeatable): KEY=VALUE for [ami], live.KEY=VALUE for [live]; "
    "the value as in TOML (true, 8, '[\"eu-west-1\"]'), plain text for string settings",
    default=(),
    metavar="KEY=VALUE",
)
SETTINGS_OPTIONS = (CONFIG, SET)
PHASE = Option(
    "phase",
    "phase to include (repeatable; default: all phases in order)",
    default=(),
    short="-p",
    metavar="PHASE",
    values=PHASES,
)
# -o - means standard output, as it does for most command-line tools.
STANDARD_OUTPUT = "-"
OUTPUT = Option(
    "output",
    "write to this file instead of standard output ('-' for standard output)",
    short="-o",
    metavar="FILE",
)
QUIET = Option("quiet", "no progress output: only results and errors", default=False, short="-q")
VERBOSE = Option("verbose", "also show each command as it runs", default=False, short="-v")


def json_output(schema: str) -> Option:
    """--json: the one spelling of JSON output for every command (plan's --format json is an alias)."""
    return Option(
        "json",
        f"print the result as JSON (schema {schema}) on standard output; progress goes to standard error",
        default=False,
    )


FORMAT_ALIAS = Option(
    "format", "output format (-f json is --json)", default="text", short="-f", choices=("text", "json")
)
# The faults --fault takes, each with what it does.
FAULTS = (
    "fail-put=N (the N-th S3 PUT fails once), s3-5xx=K (K PUTs answer 503), "
    "fail-part=I (S3 refuses part I for good), url-expires=N (at the N-th part PUT the presigned URLs have "
    "expired; native; these four act on an S3 bundle's upload), disk-full=DIR (the disk holding DIR is "
    "full), no-python3, old-python3=VERSION, "
    "no-mke2fs, old-mke2fs=VERSION (the node lacks the tool, or has an old one; native), "
    "reject-register=CODE, interrupt=PHASE:N (the connection drops at that node action), ctrl-c=PHASE:N "
    "(Ctrl-C during that action: a node action, the node program, or an EBS snapshot's upload once its "
    "first block is read), image-pending=N (each new image is "
    "pending for N polls), image-failed=REGION (new images there fail)"
)
FAULT_HELP = f"inject a fault (repeatable): {FAULTS}"
ON_ERROR = Option(
    "on_error",
    "cleanup (default: remove the credentials, terminate a launched node), cleanup-all "
    "(also remove what a failed upload or registration left in S3) or abort",
    default="cleanup",
    metavar="POLICY",
    values="amidsl.run.runner:ON_ERROR_POLICIES",
)
BUNDLE_MANIFEST = Option("manifest", "the bundle's manifest file (PREFIX.manifest.xml)", required=True)
# The AWS commands use the standard boto3 credential chain; secrets never go on the command line.
REGION_CHECK = "amidsl.settings.checks:region_problem"
AWS_OPTIONS = (
    Option("region", "AWS region (default: AWS_REGION, then the AWS profile's region)", check=REGION_CHECK),
    Option("profile", "AWS profile for the credentials (default: AWS_PROFILE, then the default chain)"),
    Option(
        "endpoint_url",
        "an S3/EC2-compatible endpoint instead of AWS's",
        metavar="URL",
        check="amidsl.settings.checks:endpoint_url_problem",
    ),
)
S3_BUNDLE = Option("bucket", "where the bundle is: BUCKET or BUCKET/PATH", short="-b", required=True)
S3_MANIFEST = (
    Option("manifest", "the manifest's file name under BUCKET/PATH (PREFIX.manifest.xml)", short="-m"),
    Option(
        "prefix",
        "instead of --manifest: the bundle's prefix (its manifest is PREFIX.manifest.xml)",
        short="-p",
    ),
)
CONCURRENCY = Option("concurrency", "parts transferred at once", default=4, metavar="N")
YES = Option("yes", "do not ask for a confirmation", default=False, short="-y")
DRY_RUN = Option("dry_run", "only list what would be deleted", default=False)
PARTS_DIR = Option("parts_dir", "directory holding the parts (default: the manifest's directory)")

COMMANDS: tuple[CliCommand, ...] = (
    CliCommand(
        "plan",
        "preview the plan: each phase's numbered actions and the commands they run",
        "amidsl.cli.plan_commands:plan",
        (
            *SETTINGS_OPTIONS,
            PHASE,
            json_output("amidsl.plan/1"),
            FORMAT_ALIAS,
            OUTPUT,
        ),
    ),
    CliCommand(
        "script",
        "render the plan as one reviewable bash script (exactly what a live build runs)",
        "amidsl.cli.plan_commands:script",
        (*SETTINGS_OPTIONS, PHASE, OUTPUT),
    ),
    CliCommand(
        "validate",
        "check the settings and report every problem (exit status 2 if there are any)",
        "amidsl.cli.plan_commands:validate",
        (
            *SETTINGS_OPTIONS,
            PHASE,
            Option("live", "also check AWS: credentials, bucket and region, image name", default=False),
        ),
    ),
    CliCommand(
        "simulate",
        "run the build on a fake node and a fake AWS region (offline; nothing outside a temp dir)",
        "amidsl.cli.simulate_commands:simulate",
        (
            *SETTINGS_OPTIONS,
            PHASE,
            ON_ERROR,
            Option("inspect", "list every file in the registered image", default=False),
            Option(
                "fault",
                FAULT_HELP,
                default=(),
                metavar="NAME=VALUE",
                values="amidsl.cli.simulate_commands:FAULT_NAMES",
            ),
            json_output("amidsl.simulate/2"),
            Option("payload_mb", "MB of program binaries on the fake node", default=4, metavar="MB"),
            Option(
                "bundler",
                "build strategy (default: the settings' bundler, else native)",
                choices=BUNDLERS,
            ),
            QUIET,
            VERBOSE,
        ),
    ),
    CliCommand(
        "build",
        "build the AMI on a real node over SSH, calling AWS with boto3",
        "amidsl.cli.build_commands:build",
        (
            Option(
                "config",
                "TOML settings file with [ami] and [live] tables; repeat to layer files",
                default=(),
                short="-c",
                metavar="FILE",
            ),
            SET,
            Option("host", "build on this node (an address or ~/.ssh/config alias; default: [live] host)"),
            Option("group", "build on a running node tagged amidsl:group=GROUP"),
            Option(
                "launch", "launch a node from the [live] launch settings, build, terminate it", default=False
            ),
            Option(
                "phase",
                "phase to run (repeatable; default: all, or all but cleanup with --launch)",
                default=(),
                short="-p",
                metavar="PHASE",
                values=PHASES,
            ),
            ON_ERROR,
            Option(
                "trust_new_host_key", "accept and remember an unknown host key (never a changed one)", False
            ),
            json_output("amidsl.build/2"),
            Option(
                "result",
                "also write the result (the --json document) to FILE, as Packer's manifest does; written "
                "when the build fails too",
                metavar="FILE",
            ),
            Option(
                "log",
                "append every line of progress, and each command, with its time to FILE",
                metavar="FILE",
            ),
            QUIET,
            VERBOSE,
        ),
    ),
    CliCommand(
        "init",
        "write a commented starter amidsl.toml (and, on request, a throwaway signing key and certificate)",
        "amidsl.cli.init_commands:init",
        (
            Option(
                "output",
                "the settings file to write ('-' for standard output)",
                default="amidsl.toml",
                short="-o",
                metavar="FILE",
            ),
            Option("force", "overwrite files that exist", default=False),
            Option(
                "signing_key",
                "also make a throwaway signing key and certificate with openssl beside the file",
                default=False,
            ),
        ),
    ),
    CliCommand(
        "bundle-image",
        "bundle an image file into encrypted 10 MiB parts and a signed manifest",
        "amidsl.cli.bundle_commands:bundle_image",
        (
            Option("image", "the image file to bundle", required=True),
            Option("cert", "PEM X.509 certificate of the user (the manifest's signer)", required=True),
            Option("privkey", "PEM RSA private key of that certificate (never printed)", required=True),
            Option("user", "12-digit AWS account number (dashes allowed)", required=True),
            Option("ec2cert", "PEM X.509 certificate of EC2 (it decrypts the bundle)", required=True),
            Option("destination", "directory for the parts and manifest (created if missing)", default="."),
            Option("prefix", "file name prefix of the parts and manifest", default="image"),
            Option("arch", "architecture", default="x86_64", choices=ARCHITECTURES),
            Option("kernel", "kernel id (aki-…) to record in the manifest"),
            Option("ramdisk", "ramdisk id (ari-…) to record in the manifest"),
            Option("product_codes", "comma-separated product codes", default=""),
            Option(
                "block_device_mapping",
                "the manifest's block device mappings, comma-separated virtual=device pairs (e.g. "
                "ami=sda1,root=/dev/sda1,ephemeral0=sdb); none without it, as with ec2-bundle-image",
                default="",
                short="-B",
                metavar="MAPS",
            ),
            Option("ancestry", "comma-separated ancestor AMI ids", default=""),
        ),
    ),
    CliCommand(
        "verify-bundle",
        "check a bundle's signature, part list, sizes and part digests",
        "amidsl.cli.bundle_commands:verify_bundle",
        (
            BUNDLE_MANIFEST,
            Option("cert", "PEM X.509 certificate of the user who signed the manifest", required=True),
            PARTS_DIR,
        ),
    ),
    CliCommand(
        "unbundle",
        "check a bundle's signature, then decrypt and unpack it, checking part and image digests",
        "amidsl.cli.bundle_commands:unbundle",
        (
            BUNDLE_MANIFEST,
            Option("privkey", "PEM RSA private key of the user (or of EC2); never printed", required=True),
            Option("destination", "directory to restore the image into", default="."),
            PARTS_DIR,
            Option("cert", "PEM X.509 certificate of the user who signed the manifest (checked first)"),
            Option("no_verify", "skip the signature check when you have no certificate", default=False),
        ),
    ),
    CliCommand(
        "image-ls",
        "list the files inside an image without mounting it (type, mode, owner, size, path)",
        "amidsl.cli.bundle_commands:image_ls",
        (Option("image", "an ext2/3/4 image file", required=True),),
    ),
    CliCommand(
        "migrate-manifest",
        "re-encrypt a bundle's key for another region's EC2 certificate; sign the manifest again",
        "amidsl.cli.bundle_commands:migrate_manifest",
        (
            BUNDLE_MANIFEST,
            Option("cert", "PEM X.509 certificate of the user who signed the manifest", required=True),
            Option("privkey", "PEM RSA private key of that certificate (never printed)", required=True),
            Option(
                "region",
                "the region the bundle moves to (it picks EC2's certificate)",
                required=True,
                check=REGION_CHECK,
            ),
            Option("ec2cert", "PEM certificate EC2 decrypts with in that region"),
            Option(
                "ec2_certificates",
                "instead of --ec2cert: a directory with the ec2-ami-tools' EC2 certificates "
                "(cert-ec2.pem, cert-ec2-gov.pem, cert-ec2-cn-north-1.pem) or that archive (zip); the "
                "region's one is checked against its pinned fingerprint",
                metavar="DIR",
            ),
            Option(
                "output",
                "write the migrated manifest here (default: replace the manifest; '-' for standard output)",
                short="-o",
            ),
            Option("kernel", "kernel id (aki-...) of the target region, replacing the manifest's"),
            Option("ramdisk", "ramdisk id (ari-...) of the target region, replacing the manifest's"),
        ),
    ),
    CliCommand(
        "upload-bundle",
        "upload a bundle to S3: parts in parallel (those already there skipped), then the manifest",
        "amidsl.cli.aws_commands:upload_bundle",
        (
            Option("bucket", "where to put the bundle: BUCKET or BUCKET/PATH", short="-b", required=True),
            Option("manifest", "the bundle's local manifest file", short="-m", required=True),
            PARTS_DIR,
            CONCURRENCY,
            Option("retries", "tries again per part after a server error or a broken connection", 5),
            Option("skip_manifest", "upload only the parts", default=False),
            *AWS_OPTIONS,
        ),
    ),
    CliCommand(
        "download-bundle",
        "download a bundle from S3 in parallel, checking each part's SHA-1 as it arrives",
        "amidsl.cli.aws_commands:download_bundle",
        (
            S3_BUNDLE,
            *S3_MANIFEST,
            Option("destination", "directory for the parts and the manifest (created if missing)", "."),
            CONCURRENCY,
            *AWS_OPTIONS,
        ),
    ),
    CliCommand(
        "delete-bundle",
        "delete exactly a bundle's parts and manifest from S3 (nothing else under its path)",
        "amidsl.cli.aws_commands:delete_bundle",
        (
            S3_BUNDLE,
            *S3_MANIFEST,
            Option(
                "partial",
                "find the parts by name (PREFIX.part.N under BUCKET/PATH), not from the manifest: for a "
                "failed upload, whose manifest was never uploaded",
                default=False,
            ),
            DRY_RUN,
            YES,
            *AWS_OPTIONS,
        ),
    ),
    CliCommand(
        "images",
        "list the images amidsl built (tag amidsl:built-by = amidsl) with their bundles or snapshots",
        "amidsl.cli.aws_commands:images",
        (json_output("amidsl.images/1"), *AWS_OPTIONS),
    ),
    CliCommand(
        "delete",
        "deregister an image and delete its bundle or snapshots, after a confirmation",
        "amidsl.cli.aws_commands:delete",
        (
            Option("image", "the image: its id (ami-...) or its name", required=True, positional=True),
            DRY_RUN,
            YES,
            *AWS_OPTIONS,
        ),
    ),
    CliCommand(
        "completion",
        'print a completion script for bash, zsh or fish (eval "$(amidsl completion bash)")',
        "amidsl.cli.completion:completion",
        (
            Option(
                "shell",
                "the shell to complete for",
                default="bash",
                choices=("bash", "zsh", "fish"),
                positional=True,
            ),
        ),
    ),
)


class CommandError(Exception):
    """A command's clean failure: the message is printed without a traceback, the process exits with code."""

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def find_command(name: str) -> CliCommand | None:
    """The command called `name`, if there is one."""
    return next((command for command in COMMANDS if command.name == name), None)
