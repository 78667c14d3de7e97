"""The settings table: one row per setting, the one place that says what a setting is.

Each row names its reader (type check), default, choices, whether it is required or secret, which
strategies read it and its line in the settings reference (docs/settings.md). From the rows come the
fields of AmiSettings (in row order, which is the order previews show them), the keys a user may give,
`REQUIRED`, `SECRET_KEYS` and `FREE_TEXT_KEYS`, the preview's choice of settings per strategy and the
reference itself (amidsl/settings/reference.py). Rules across settings are in rules.py.

A row's default may be computed from other settings (`default_from`): each setting is read once, on
first use, so the order of rows need not follow who depends on whom.
"""

from __future__ import annotations

from amidsl.iterate import zip_strict
from amidsl.node.amidsl_node import DEFAULT_INCLUDES, HYGIENE_NAMES
from amidsl.settings import checks, credentials, readers, rules
from amidsl.settings.constants import (
    AMI_TOOLS_URL,
    ARCHITECTURES,
    BACKINGS,
    BOOT_MODES,
    BUNDLERS,
    DEFAULT_IMAGE_WAIT_SECONDS,
    DEFAULT_RUBY_VERSION,
    DEFAULT_UPLOAD_CONCURRENCY,
    EBS,
    IMDS_SUPPORT,
    INSTALL_STRATEGIES,
    INSTANCE_STORE,
    MAX_EBS_DISK_MB,
    MAX_IMAGE_SIZE_MB,
    MAX_IMAGE_TAGS,
    MAX_OBJECT_TAGS,
    MAX_UPLOAD_CONCURRENCY,
    PARTITIONS,
    SRIOV_NET_SUPPORT,
    UPLOAD_CREDENTIALS,
    VIRTUALIZATION_TYPES,
)
from amidsl.settings.paths import NODE_STATE_DIR
from amidsl.settings.reading import Reading
from amidsl.settings.schema import Setting, Source

NATIVE, AMI_TOOLS = BUNDLERS
# What depends on the strategy (the value of `bundler`), keyed by its choices.
STRATEGY_RULES: dict[str, tuple[rules.Rule, ...]] = {
    NATIVE: (rules.native_limits,),
    AMI_TOOLS: (rules.ami_tools_limits, rules.ami_tools_image_limits),
}
# A native build makes a whole disk with GRUB, which EC2 boots as HVM; ec2-bundle-vol's image has no
# virtualization type of its own (RegisterImage then takes EC2's default).
DEFAULT_VIRTUALIZATION: dict[str, str | None] = {NATIVE: "hvm", AMI_TOOLS: None}

# One setting per image hygiene item keeps it: keep_ssh_host_keys = true, ...
HYGIENE_KEEP_KEYS = tuple(f"keep_{name}" for name in HYGIENE_NAMES)


# -- readers and defaults made of other settings ----------------------------------------------------


def _exclusions(r: Reading, row: Setting) -> tuple[str, ...]:
    """The user's exclusions after everything amidsl puts on the node (the crate's defect, fixed)."""
    extra = r.value("extra_exclusions")
    given = readers.path_list(r, row)
    mandatory = (
        r.value("install_dir"),
        r.value("credential_dir"),
        r.value("destination_dir"),
        NODE_STATE_DIR,
    )
    return tuple(dict.fromkeys(mandatory + given + extra))


def _strategy_from_install_ruby(r: Reading) -> str:
    # The user's own flag: its row checks its type (anything but false keeps the default).
    return "auto" if r.given.get("install_ruby", True) is not False else "none"


def _ruby_installed(r: Reading, row: Setting) -> bool:
    """install_ruby: the crate's flag, finished as whether install installs a Ruby at all."""
    readers.flag(r, row)
    return r.value("install_strategy") != "none"


def _virtualization_type(r: Reading, row: Setting) -> str | None:
    value = readers.read_text(r, row.name)
    if value is not None and value not in row.choices:
        r.problem(row.name, f"{value!r} is not one of {', '.join(row.choices)}", "use paravirtual or hvm")
    return value if value is not None else r.default(row)


def _includes(r: Reading, row: Setting) -> tuple[str, ...]:
    return tuple(dict.fromkeys(DEFAULT_INCLUDES + readers.pattern_list(r, row)))


def _hygiene_keep(r: Reading, row: Setting) -> tuple[str, ...]:
    return tuple(name for name, key in zip_strict(HYGIENE_NAMES, HYGIENE_KEEP_KEYS) if r.value(key))


def _unused_by_backing(r: Reading, row: Setting) -> tuple[str, ...]:
    """The settings given that this build's backing does not read (an EBS build's s3_bucket)."""
    return tuple(name for name, other in r.rows.items() if name in r.given and not r.backing_reads(other))


def _s3_manifest_path(r: Reading) -> str:
    parts = (r.value("s3_bucket"), r.value("s3_path"), f"{r.value('prefix')}.manifest.xml")
    return "/".join(p for p in parts if p)


def _manifest_path(r: Reading) -> str:
    return f"{r.value('destination_dir')}/{r.value('prefix')}.manifest.xml".replace("//", "/")


# -- the rows, in the order of AmiSettings' fields --------------------------------------------------

AWS_KEYS_DOC = (
    "AWS credentials; native: used on the controller only; ami-tools: the keys reach the node only at run "
    "time, and temporary credentials (a session token) are refused, because `ec2-upload-bundle` drops the "
    'token under SigV4 (use `native`, or `upload_credentials = "instance-profile"`)'
)
CREDENTIAL_SOURCES_DOC = (
    '`{ local_file = "pk.pem" }` or `{ content = "..." }` (`{ example = true }`: the built-in throwaway pair)'
)
REGISTER_DOC = "passed to RegisterImage (see below)"
KERNEL_DOC = (
    "passed to RegisterImage (a kernel or ramdisk only with `paravirtual`); native builds also write them "
    "into the manifest, ami-tools builds do not; no manifest gets a block device mapping the user did not set"
)
KEEP_DOC = (
    "`true` keeps that item of [image hygiene](#image-hygiene) in the image (the preview warns, loudly "
    "if the image is shared); ami-tools builds keep `machine_id`, `logs` and `temporary_files` anyway"
)

ROWS: tuple[Setting, ...] = (
    Setting(
        "image_name",
        "str",
        readers.text,
        "AMI name (3–128 letters, digits, spaces and `( ) [ ] . / - ' @ _`)",
        required=True,
        check=checks.image_name_rules,
    ),
    Setting(
        "image_description",
        "str",
        readers.text,
        "AMI description (≤ 255 characters)",
        default="",
        check=checks.description_length,
        free_text=True,
    ),
    Setting(
        "access_key",
        "str | None",
        readers.text,
        AWS_KEYS_DOC,
        shown_default="AWS credential chain",
        check=checks.access_key_id,
        secret=True,
    ),
    *(
        Setting(
            name,
            "Secret | None",
            readers.secret_text,
            AWS_KEYS_DOC,
            shown_default="AWS credential chain",
            secret=True,
        )
        for name in ("secret_key", "session_token")
    ),
    Setting(
        "region",
        "str",
        readers.text,
        "AWS region of the bucket and the image",
        required=True,
        check=checks.region_name,
    ),
    Setting(
        "user_id",
        "str | None",
        checks.account_id,
        "12-digit AWS account id (dashes are removed): the bundle's owner in its manifest; the account "
        "checked against the credentials' and `launch_permissions` (both backings)",
        required=True,
        required_for=(INSTANCE_STORE,),  # an EBS build checks it where given
    ),
    Setting(
        "user",
        "str",
        readers.text,
        "the node's admin user",
        default="root",
        check=checks.matches(
            r"[a-z_][a-z0-9_.-]*\$?", "is not a Linux user name", "give the node's admin user"
        ),
    ),
    Setting(
        "exclusions",
        "tuple[str, ...]",
        _exclusions,
        "more directories to leave out of the image",
        default=(),
    ),
    Setting(
        "extra_exclusions",
        "tuple[str, ...]",
        readers.path_list,
        "more directories to leave out of the image",
        default=(),
    ),
    Setting(
        "install_strategy",
        "str",
        readers.choice,
        "Ruby for the tools, decided on the node when install runs: `auto` installs the distribution's "
        "`ruby3.1` or `ruby3.0` package where apt has one (Debian 12, Ubuntu 22.04; it stays in the image), "
        "else builds `ruby_version` with rbenv inside install_dir (its build packages git, gcc, make and the "
        "-dev headers stay in the image: the preview and script say so); `package` takes only the "
        "distribution's 3.1/3.0 and stops without one; `rbenv` always builds; `none` uses the node's "
        "own `ruby`",
        default_from=_strategy_from_install_ruby,
        shown_default="`auto`",
        choices=INSTALL_STRATEGIES,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "install_dir",
        "str",
        readers.owned_dir,
        "where amidsl puts what it ships: the node program (native), the tools and rbenv Ruby (ami-tools); "
        "removed in cleanup",
        default="/opt/ami-tools",
    ),
    Setting(
        "install_source",
        "Source",
        readers.source(allow_url=True),
        "the tools archive: `{ url = ... }` or `{ local_file = ... }`",
        default_from=lambda r: Source(url=r.value("ami_tools_url")),
        shown_default="`{ url = ami_tools_url }`",
        check=checks.tools_archive,
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "ami_tools_url",
        "str",
        readers.text,
        "where `install_source` downloads the ec2-ami-tools archive from by default",
        default=AMI_TOOLS_URL,
        shown_default="Amazon's `ec2-ami-tools.zip`",
        check=checks.http_url,
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "install_ruby",
        "bool",
        _ruby_installed,
        '`false` is the crate\'s spelling of `install_strategy = "none"`',
        default=True,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "ruby_version",
        "str",
        readers.text,
        "Ruby that rbenv builds (ec2-ami-tools 1.5 run on Ruby 2.7, 3.0 and 3.1; from Ruby 3.2 on they do "
        "not load)",
        default=DEFAULT_RUBY_VERSION,
        check=checks.ruby_version,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "destination_dir",
        "str",
        readers.node_path,
        "where the bundle parts are written on the node",
        default="/tmp",
        check=checks.scratch_dir,
    ),
    Setting(
        "credential_dir",
        "str",
        readers.owned_dir,
        "root-only directory for the signing key and certificate",
        default_from=lambda r: f"{r.value('install_dir')}/credentials",
        shown_default="`<install_dir>/credentials`",
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "private_key_source",
        "Source | None",
        readers.source(example=True),
        CREDENTIAL_SOURCES_DOC,
        required=True,
        backings=(INSTANCE_STORE,),
        secret=True,
    ),
    Setting(
        "certificate_source",
        "Source | None",
        readers.source(example=True),
        CREDENTIAL_SOURCES_DOC,
        required=True,
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "private_key_path",
        "str",
        readers.node_path,
        "must be inside credential_dir",
        default_from=lambda r: f"{r.value('credential_dir')}/pk",
        shown_default="`<credential_dir>/pk`",
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "certificate_path",
        "str",
        readers.node_path,
        "must be inside credential_dir",
        default_from=lambda r: f"{r.value('credential_dir')}/cert",
        shown_default="`<credential_dir>/cert`",
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "arch",
        "str",
        checks.architecture,
        "`x86_64` or `i386`; `arm64` is refused with either strategy: no instance type launches an arm64 "
        "instance-store AMI (and ec2-bundle-vol does not support arm64, while native hvm images boot through "
        "GRUB for BIOS, which arm64 lacks)",
        default="x86_64",
        choices=ARCHITECTURES,
    ),
    Setting(
        "s3_bucket",
        "str | None",
        readers.text,
        "where the bundle goes",
        required=True,
        backings=(INSTANCE_STORE,),
        check=checks.bucket_name,
    ),
    Setting(
        "s3_path", "str", checks.key_prefix, "where the bundle goes", default="", backings=(INSTANCE_STORE,)
    ),
    Setting(
        "s3_manifest_path",
        "str",
        checks.only_its_default(readers.text, "ec2-upload-bundle puts the manifest"),
        "derived; may be given only with those values",
        default_from=_s3_manifest_path,
        shown_default="`<bucket>/<path>/<prefix>.manifest.xml`",
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "manifest_path",
        "str",
        checks.only_its_default(readers.node_path, "ec2-bundle-vol writes the manifest"),
        "derived; may be given only with those values",
        default_from=_manifest_path,
        shown_default="`<destination_dir>/<prefix>.manifest.xml`",
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "prefix",
        "str",
        readers.text,
        "bundle file prefix",
        default="image",
        check=checks.matches(
            r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
            "is not a safe bundle file prefix",
            "use letters, digits, '.', '_' and '-' (starting with a letter or digit)",
        ),
    ),
    Setting(
        "image_size_mb",
        "int | None",
        readers.whole_number(
            1,
            MAX_EBS_DISK_MB,
            f"a size from 1 to {MAX_EBS_DISK_MB} MB",
            f"give a whole number of MB: up to {MAX_IMAGE_SIZE_MB} for an S3 bundle, {MAX_EBS_DISK_MB} "
            "(2 TiB, what an MBR disk holds) for an EBS-backed disk",
        ),
        "the image's size: `ec2-bundle-vol -s` (≤ 10240; the tool's default is a 10240 MB sparse image); "
        "native: the disk's (by default the data with room to spare), ≤ 10240 for an S3 bundle, up to 2 "
        "TiB (an MBR disk's most) for `ebs`, where it is the root volume's size and only the blocks holding "
        "data are sent",
        shown_default="tool default / fitted",
    ),
    Setting(
        "inherit",
        "bool",
        readers.flag,
        "ami-tools: `true` lets `ec2-bundle-vol` read instance metadata (block device mappings, kernel); "
        "that fails on Ruby 3 and on instances that require IMDSv2, so it needs `install_strategy` `auto` or "
        "`rbenv` (Ruby 2.7 is then built) and an instance allowing IMDSv1; `false` passes `--no-inherit`",
        # ec2-bundle-vol's default (inherit) fails on Ruby 3 and wherever IMDSv2 is required.
        default=False,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "virtualization_type",
        "str | None",
        _virtualization_type,
        "native: `hvm` makes a bootable disk (see [Images that boot](#images-that-boot)), `paravirtual` a "
        "bare filesystem image for a pv-grub kernel; ami-tools: `hvm` needs a partitioned image, so `hvm` "
        'with `partition = "none"` is refused; passed to RegisterImage',
        default_from=lambda r: DEFAULT_VIRTUALIZATION.get(r.value("bundler")),
        shown_default="`hvm` (native), none (ami-tools)",
        choices=VIRTUALIZATION_TYPES,
    ),
    Setting("kernel_id", "str | None", readers.image_ref("aki"), KERNEL_DOC, backings=(INSTANCE_STORE,)),
    Setting("ramdisk_id", "str | None", readers.image_ref("ari"), KERNEL_DOC, backings=(INSTANCE_STORE,)),
    Setting(
        "block_device_mappings",
        "tuple[tuple[str, str], ...]",
        checks.block_device_mappings,
        KERNEL_DOC,
        default=(),
        shown_default="none",
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "certificate_pem",
        "str",
        credentials.certificate_pem,
        "the certificate, checked against the key and re-encoded",
        default="",
        given=False,
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "private_key_pem",
        "Secret | None",
        credentials.private_key_pem,
        "the signing key's text",
        given=False,
        secret=True,
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "image_id",
        "str | None",
        readers.text,
        "the registered image, given only to resume a build after `ami-register` (e.g. to run a test phase "
        "alone)",
        check=checks.matches(
            r"ami-[0-9a-f]{8}([0-9a-f]{9})?", "is not an AMI id", "give an id like ami-0123456789abcdef0"
        ),
    ),
    Setting(
        "bundler",
        "str",
        readers.choice,
        "build strategy: `native` or `ami-tools` (see above)",
        default=NATIVE,
        choices=BUNDLERS,
    ),
    Setting(
        "backing",
        "str",
        readers.choice,
        "the image's root device: `instance-store` (an S3 bundle, launched only by previous-generation Xen "
        "types) or `ebs` (native only: the node's disk goes into an EBS snapshot through the EBS direct "
        "APIs, uploaded from the controller, and the image launches on today's instance types)",
        default=INSTANCE_STORE,
        choices=BACKINGS,
    ),
    Setting(
        "snapshot_id",
        "str | None",
        readers.text,
        "the EBS snapshot an `ebs` build uploaded, given only to resume a build at `ami-register`",
        check=checks.matches(
            r"snap-[0-9a-f]{8}([0-9a-f]{9})?",
            "is not a snapshot id",
            "give an id like snap-0123456789abcdef0",
        ),
        backings=(EBS,),
    ),
    Setting(
        "encrypted",
        "bool",
        readers.flag,
        "`true` encrypts an `ebs` build's snapshot, and so the image's root volume, with `kms_key_id` or "
        "else the account's default EBS key (the AWS managed key `aws/ebs` unless the account set "
        "another); copies are encrypted with `copy_kms_key_ids` or each destination region's default EBS "
        "key. An S3 bundle is always encrypted (to EC2's key)",
        default=False,
        backings=(EBS,),
    ),
    Setting(
        "kms_key_id",
        "str | None",
        readers.text,
        "the KMS key an `encrypted` build's snapshot is encrypted with: a symmetric key's ARN in `region` "
        "(StartSnapshot takes only a key ARN); the key a shared image needs, as the AWS managed key "
        "cannot be shared",
        check=checks.matches(checks.KMS_KEY_ARN, "is not a KMS key ARN", checks.KMS_KEY_ARN_FIX),
        backings=(EBS,),
    ),
    Setting(
        "copy_kms_key_ids",
        "tuple[tuple[str, str], ...]",
        checks.kms_keys_by_region,
        "the KMS key each copy of an `encrypted` build is encrypted with, by region "
        '(`{ eu-west-1 = "arn:aws:kms:eu-west-1:..." }`, each a key of its region); a copy region without '
        "one gets that region's default EBS key. A shared image (`launch_permissions`) needs one for every "
        "copy region",
        default=(),
        shown_default="`{}`",
        backings=(EBS,),
    ),
    Setting(
        "volume",
        "str",
        readers.node_path,
        "the node's directory to image (native; ami-tools builds image the root volume)",
        default="/",
        used_by=(NATIVE,),
    ),
    Setting(
        "ec2_certificate_source",
        "Source | None",
        readers.source(),
        "EC2's certificate for the region (native): `{ local_file = ... }` or `{ content = ... }`; by "
        "default it is taken from the ec2-ami-tools archive (`install_source`/`ami_tools_url`) on the "
        "controller and pinned by its public key's SHA-256 (expired, and still what EC2 uses)",
        shown_default="from the tools archive",
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "ec2_certificate_pem",
        "str",
        credentials.ec2_certificate_pem,
        "EC2's certificate from ec2_certificate_source",
        default="",
        given=False,
        used_by=(NATIVE,),  # the controller encrypts the bundle's EC2 key copy with it
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "partition",
        "str",
        readers.choice,
        "ami-tools: `ec2-bundle-vol --partition`; `none` makes a plain filesystem image (boots as "
        "paravirtual through pv-grub; an HVM instance cannot boot it); `mbr`, `gpt` and `auto` need "
        "dmsetup, kpartx, parted, sgdisk, legacy grub in the volume and a `/dev/xvd*` or `/dev/sd*` root "
        "device (they stop on NVMe and virtio roots)",
        default="none",
        choices=PARTITIONS,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "upload_credentials",
        "str",
        readers.choice,
        "ami-tools: how `ec2-upload-bundle` gets AWS credentials: `keys` (`-a`/`-s` at run time) or "
        "`instance-profile` (no keys on the node: the tool reads the node's instance profile from instance "
        "metadata with an IMDSv1 request, so the instance must allow IMDSv1 and its role must be allowed to "
        "write the bucket; the controller's own credentials still register the image)",
        default="keys",
        choices=UPLOAD_CREDENTIALS,
        used_by=(AMI_TOOLS,),
    ),
    Setting(
        "upload_concurrency",
        "int",
        readers.whole_number(
            1,
            MAX_UPLOAD_CONCURRENCY,
            f"a number of parts from 1 to {MAX_UPLOAD_CONCURRENCY}",
            "give how many parts the node uploads at once, e.g. 4",
        ),
        "how many parts the node uploads at once (native), 1 to 16 (each one holds a 10 MiB part in memory); "
        "each part is retried with backoff",
        default=DEFAULT_UPLOAD_CONCURRENCY,
        used_by=(NATIVE,),
    ),
    Setting(
        "tags",
        "tuple[tuple[str, str], ...]",
        checks.tag_table(MAX_IMAGE_TAGS - 1, r".*"),
        "tags of the image and of each copy, besides amidsl's own `amidsl:built-by = amidsl`",
        default=(),
        shown_default="`{}`",
    ),
    Setting(
        "bundle_tags",
        "tuple[tuple[str, str], ...]",
        # S3 object tags allow fewer characters than EC2 tags.
        checks.tag_table(MAX_OBJECT_TAGS, r"[\w\s+=.:/@-]*"),
        "S3 object tags put on the manifest and exactly the parts it lists (at most 10)",
        default=(),
        shown_default="`{}`",
        backings=(INSTANCE_STORE,),
    ),
    Setting(
        "launch_permissions",
        "tuple[str, ...]",
        checks.launch_permissions,
        "who else may launch the image and its copies: 12-digit account ids, organization ARNs "
        "(`arn:aws:organizations::ACCOUNT:organization/o-...`), OU ARNs (`...:ou/o-.../ou-...`)",
        default=(),
    ),
    Setting(
        "public_image",
        "bool",
        readers.flag,
        "`true` lets every AWS account launch the image and its copies (the preview warns)",
        default=False,
    ),
    Setting(
        "copy_to_regions",
        "tuple[str, ...]",
        checks.copy_regions,
        "regions to copy the image to (CopyImage), each copy tagged, waited for and shared like the image",
        default=(),
    ),
    Setting("imds_support", "str | None", readers.optional_choice, REGISTER_DOC, choices=IMDS_SUPPORT),
    Setting("boot_mode", "str | None", checks.boot_mode, REGISTER_DOC, choices=BOOT_MODES),
    Setting("ena_support", "bool | None", readers.optional_flag, REGISTER_DOC),
    Setting(
        "sriov_net_support", "str | None", readers.optional_choice, REGISTER_DOC, choices=SRIOV_NET_SUPPORT
    ),
    Setting(
        "force_deregister",
        "bool",
        readers.flag,
        "deregister an image of the same name first (in the region and every copy region) and delete the "
        "bundle it was registered from",
        default=False,
    ),
    Setting(
        "deprecate_at",
        "str | None",
        checks.utc_time,
        "when the image and its copies become deprecated (EnableImageDeprecation), in UTC, e.g. "
        '"2027-06-30T00:00:00Z" (or a TOML datetime with a time zone)',
        check=checks.deprecation_time,
    ),
    Setting(
        "image_wait_seconds",
        "int",
        readers.whole_number(
            1,
            86400,
            "a number of seconds from 1 to 86400",
            "give how long to wait for each image to become available, e.g. 1800",
        ),
        "how long to wait for the image, and for each copy, to become available",
        default=DEFAULT_IMAGE_WAIT_SECONDS,
    ),
    # What goes into the image beyond exclusions: the filter's includes (the user's after the built-in
    # ones), the user's own exclusion patterns, and the image hygiene items kept (keep_<item> = true).
    Setting(
        "includes",
        "tuple[str, ...]",
        _includes,
        "paths or patterns the filter (`*.pem`, `*.gpg`, ...) must keep, added to the built-in ones "
        "(`/etc/ssl/certs/*.pem`, `/usr/share/keyrings/*.gpg`, `/etc/apt/trusted.gpg.d/*.gpg`, RHEL's CA "
        "bundles, OpenSSL's default `cert.pem`, certifi's `cacert.pem` ...); they never bring back what "
        "image hygiene leaves out (ami-tools: the node finds them and passes them to ec2-bundle-vol's `-i`); "
        "a pattern that matches `/` itself is refused",
        default=DEFAULT_INCLUDES,
        shown_default="CA certificates, keyrings",
        check=checks.keeps_below_the_root,
    ),
    Setting(
        "exclude_patterns",
        "tuple[str, ...]",
        readers.pattern_list,
        'paths or patterns (`*` also crosses `/`) to leave out, e.g. `["*/.env", '
        '"/srv/app/secrets/*"]`; nothing brings them back (ami-tools: the node finds them and passes them '
        "to ec2-bundle-vol's `-e`); a pattern that matches `/`, a path every image boots from or "
        "everything in one (`/usr`, `/boot/*`, `/etc/passwd` ...) is refused",
        default=(),
        check=checks.leaves_a_bootable_image,
    ),
    *(Setting(key, "bool", readers.flag, KEEP_DOC, default=False, field=False) for key in HYGIENE_KEEP_KEYS),
    Setting(
        "hygiene_keep",
        "tuple[str, ...]",
        _hygiene_keep,
        "the image hygiene items kept (from the keep_<item> settings)",
        given=False,
    ),
    Setting(
        "unused_by_backing",
        "tuple[str, ...]",
        _unused_by_backing,
        "the settings given that this build's backing does not read (no file opened, no value checked)",
        default=(),
        given=False,
    ),
)

SETTINGS = {row.name: row for row in ROWS}
# The keys a user may give (derived rows aside), for the unknown-key check and its suggestion.
USER_KEYS = tuple(sorted(row.name for row in ROWS if row.given))
REQUIRED = tuple(row.name for row in ROWS if row.required)
# Settings whose values no message shows (access_key too: a wrong value there may be the secret key).
SECRET_KEYS = frozenset(row.name for row in ROWS if row.secret and row.given)
# Settings whose value is free text: a line break is allowed there (no other control character), as
# in the inline content of a file source.
FREE_TEXT_KEYS = frozenset({"content", *(row.name for row in ROWS if row.free_text)})
