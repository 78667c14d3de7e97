"""The action model: typed, frozen dataclasses that say what a phase does. Data only, no I/O.

Every back-end (preview, bash script, simulator, live) interprets these; each dispatches on the action
type and fails loudly on a type it does not know. Values that cannot be known when a plan is made are
explicit objects: `RuntimeValue` (produced by an earlier action, e.g. the image id), `EnvSecret` (a
secret supplied by the runner at run time) and `StagedFile` (a file the runner copies to the node).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class RuntimeValue:
    """A value produced while the build runs (e.g. the image id RegisterImage returns)."""

    setting: str
    produced_by: str

    @property
    def env_var(self) -> str:
        """The shell variable that holds it in a rendered script."""
        return f"AMIDSL_{self.setting.upper()}"


@dataclass(frozen=True)
class EnvSecret:
    """A secret the runner supplies at run time through the environment; plans hold only the name."""

    env_var: str
    what: str


@dataclass(frozen=True)
class StagedFile:
    """A controller-side file the runner copies to the node; the node path arrives in `env_var`."""

    env_var: str
    what: str
    local_path: str | None = None
    secret: bool = False


@dataclass(frozen=True)
class OptionalArg:
    """`flag value` when the runner supplies the secret, nothing when it does not (a session token)."""

    flag: str
    value: EnvSecret


@dataclass(frozen=True)
class RunnerValue:
    """A plain value the runner may set at run time through the environment, else `default`, which the
    script shows (e.g. the S3 endpoint a live build's `[live] endpoint_url` replaces)."""

    env_var: str
    what: str
    default: str

    def __post_init__(self) -> None:
        # Shown in the script as "${VAR:-default}": only characters that need no quoting there.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.env_var) or not re.fullmatch(
            r"[A-Za-z0-9:/._@%+=-]+", self.default
        ):
            raise ValueError(f"RunnerValue {self.env_var!r}: a name and a default that need no quoting")


@dataclass(frozen=True)
class PathsMatching:
    """The paths under `root` that match one of `patterns` (`find -path`: `*` crosses `/`), found on
    the node when the command runs, on filesystems of the types in `fs_types` only; a directory that
    matches is taken whole. With `when_any`, only when one of those paths exists; else `otherwise` is
    said. Each path found is said as "SAYING PATH (WHY)", e.g. "leaving out /root/.ssh/id_rsa (...)",
    or, with `say_each` false, only their number ("keeping 142 paths (includes)").
    """

    patterns: tuple[str, ...]
    fs_types: tuple[str, ...]
    why: str
    saying: str = "leaving out"
    say_each: bool = True
    root: str = "/"
    when_any: tuple[str, ...] = ()
    otherwise: str = ""


@dataclass(frozen=True)
class ExistingPaths:
    """The paths among `paths` that exist on the node when the command runs, and those `matching`
    finds there, joined by `separator`.

    For a program that refuses a path that does not exist (ec2-bundle-vol's `-e`); the script shows
    the test and the search, and says which paths it leaves out.
    """

    paths: tuple[str, ...]
    separator: str = ","
    matching: tuple[PathsMatching, ...] = ()


# One word of a command line (or an environment value); OptionalArg is zero or two words.
Value = Union[str, RuntimeValue, EnvSecret, OptionalArg, ExistingPaths, RunnerValue]


@dataclass(frozen=True)
class InstallPackages:
    """Install OS packages with whichever package manager the node has (apt, dnf or yum)."""

    apt: tuple[str, ...]
    rpm: tuple[str, ...]
    description: str = "install OS packages"


@dataclass(frozen=True)
class Directory:
    """Create a directory (and its parents) with an owner and mode."""

    path: str
    owner: str = "root"
    group: str = "root"
    mode: str = "0755"
    description: str = "create a directory"


@dataclass(frozen=True)
class RemoteFile:
    """Write a file on the node from inline content or a staged controller file, with owner and mode.

    A secret file never has inline content: it is always staged, so its text stays out of plans.
    """

    path: str
    content: str | None = None
    staged: StagedFile | None = None
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    secret: bool = False
    verbatim: bool = False  # shown as a quoted here-document, so the text reads as is (a program)
    description: str = "write a file"

    def __post_init__(self) -> None:
        if (self.content is None) == (self.staged is None):
            raise ValueError(f"RemoteFile {self.path}: give exactly one of content or staged")
        if self.secret and self.content is not None:
            raise ValueError(f"RemoteFile {self.path}: a secret file must be staged, not inline")
        if self.verbatim and not (self.content or "").endswith("\n"):
            raise ValueError(f"RemoteFile {self.path}: verbatim content must end with a line break")


@dataclass(frozen=True)
class RemoteDirectory:
    """Fetch a zip archive (URL or staged file) and unpack it into a directory.

    `rename_glob` -> `rename_to` is the crate's fix-up of the versioned top folder
    (`ec2-ami-tools-1.5.x` becomes `ec2-ami-tools`), done only when `rename_to` is not there yet.
    """

    path: str
    url: str | None = None
    staged: StagedFile | None = None
    rename_glob: str | None = None
    rename_to: str | None = None
    owner: str = "root"
    group: str = "root"
    description: str = "unpack an archive"

    def __post_init__(self) -> None:
        if (self.url is None) == (self.staged is None):
            raise ValueError(f"RemoteDirectory {self.path}: give exactly one of url or staged")


@dataclass(frozen=True)
class Exec:
    """Run a program on the node: argv, extra environment, working directory, run-as user."""

    argv: tuple[Value, ...]
    env: tuple[tuple[str, Value], ...] = ()
    cwd: str | None = None
    user: str = "root"
    creates: str | None = None  # skip the command when this path exists (a finished earlier run)
    description: str = "run a command"
    umask: str | None = None  # e.g. "077": the files the command creates are for root alone
    missing: str | None = None  # the message when the node has no argv[0] (what is missing, the fix)


@dataclass(frozen=True)
class InstallRuby:
    """Make `link` the Ruby to run, chosen on the node when it runs.

    The first of `distribution_versions` (e.g. "3.1") the node's apt sources have is installed as the
    distribution's `ruby<version>` package; failing that, Ruby `build_version` is built with rbenv under
    `rbenv_root` (after installing the build packages); with no `build_version`, the action fails.
    """

    link: str
    distribution_versions: tuple[str, ...]
    build_version: str | None
    rbenv_root: str
    rbenv_url: str
    ruby_build_url: str
    build_apt: tuple[str, ...]
    build_rpm: tuple[str, ...]
    description: str = "choose and install Ruby"


@dataclass(frozen=True)
class Remove:
    """Remove a path on the node (`recursive` for directories); `matching` removes a glob inside it;
    `contents` empties a directory (every entry, dotfiles included) and keeps it."""

    path: str
    recursive: bool = False
    matching: str | None = None
    contents: bool = False
    description: str = "remove files"


@dataclass(frozen=True)
class AwsCall:
    """An AWS API call made from the controller, not the node; its result is kept as `result_name`
    (empty when no later action reads it)."""

    service: str
    operation: str
    params: tuple[tuple[str, object], ...]
    region: str
    result_name: str
    description: str = "call the AWS API"


@dataclass(frozen=True)
class UpdateSettings:
    """Store fields of an earlier AwsCall's result into the build's settings (e.g. the image id)."""

    from_result: str
    fields: tuple[tuple[str, str], ...]  # (setting, result field)
    description: str = "store API results in the settings"


@dataclass(frozen=True)
class CheckResult:
    """Fail the phase unless the list `field` of an earlier AwsCall's result has `length` items."""

    from_result: str
    field: str
    length: int
    description: str = "check an API result"


@dataclass(frozen=True)
class ControllerSecret:
    """A secret the controller makes while the build runs (the AES key and IV, presigned URLs).

    Plans hold only its name; its value reaches the node only on the node program's standard input.
    """

    name: str
    what: str


@dataclass(frozen=True)
class NodeProgram:
    """Run amidsl's node program on the node: `python3 PROGRAM COMMAND`, one JSON request on stdin.

    Request values are JSON data or ControllerSecret placeholders filled in at run time; the program's
    last line of output (a JSON object) is kept as `result_name`. With `refresh_expired`, parts whose
    presigned URLs expired (exit status 3) are presigned again and sent again.
    """

    program: str
    command: str
    request: tuple[tuple[str, object], ...]
    result_name: str
    refresh_expired: bool = False
    description: str = "run amidsl's node program"


@dataclass(frozen=True)
class MakeBundleKey:
    """Make a fresh AES-128 key and IV on the controller; kept in memory, never written anywhere."""

    description: str = "make the AES key and IV of the bundle on the controller"


@dataclass(frozen=True)
class SignManifest:
    """Build and sign the bundle manifest on the controller from the node program's bundle report."""

    from_result: str
    result_name: str
    description: str = "build and sign the manifest on the controller"


@dataclass(frozen=True)
class PresignParts:
    """Presign one S3 PUT URL per bundle part (ACL aws-exec-read), skipping parts already uploaded."""

    from_result: str
    bucket: str
    key_prefix: str
    region: str
    description: str = "presign an upload URL per part (parts already in S3 are skipped)"


@dataclass(frozen=True)
class UploadManifest:
    """Upload the signed manifest to S3 from the controller (ACL aws-exec-read)."""

    from_result: str
    bucket: str
    key: str
    region: str
    description: str = "upload the signed manifest to S3 from the controller"


@dataclass(frozen=True)
class UploadSnapshot:
    """Read the disk's data blocks from the node program (`blocks`, over the SSH channel) and upload
    them from the controller into a new EBS snapshot (StartSnapshot, PutSnapshotBlock, CompleteSnapshot),
    then wait until it is completed; kept as `result_name` ({"SnapshotId": ...}). No AWS credential or
    URL reaches the node."""

    program: str
    from_result: str  # the bundle report that names the disk, its block count and checksum
    result_name: str
    region: str
    tags: tuple[dict[str, str], ...]
    snapshot_description: str
    concurrency: int
    # StartSnapshot's Encrypted and KmsKeyArn, when the snapshot is encrypted (empty: not encrypted).
    encryption: tuple[tuple[str, object], ...] = ()
    description: str = "upload the disk's blocks into an EBS snapshot from the controller"


@dataclass(frozen=True)
class WaitForImage:
    """Wait until EC2 reports the image available, with progress; fail with EC2's reason if it fails."""

    image_id: RuntimeValue
    region: str
    timeout_seconds: int
    description: str = "wait until the image is available"


@dataclass(frozen=True)
class TagBundle:
    """Tag the bundle's objects in S3: the manifest and exactly the parts it lists."""

    bucket: str
    manifest_key: str
    region: str
    tags: tuple[tuple[str, str], ...]
    description: str = "tag the bundle files in S3 (bundle_tags)"


@dataclass(frozen=True)
class DeregisterByName:
    """Deregister the account's images named `image_name` in each region, saying first what goes.

    In `bundle_region` the bundle each one was registered from is deleted too, unless it is at
    `keep_manifest` (this build's own location, which this build's upload has just replaced); an
    EBS-backed one's snapshots too, except `keep_snapshots` (the one a resumed build registers).
    """

    image_name: str
    regions: tuple[str, ...]
    bundle_region: str
    keep_manifest: str
    keep_snapshots: tuple[str, ...] = ()
    description: str = "deregister an existing image of the same name and delete its bundle"


Action = Union[
    InstallPackages,
    Directory,
    RemoteFile,
    RemoteDirectory,
    Exec,
    InstallRuby,
    Remove,
    AwsCall,
    UpdateSettings,
    CheckResult,
    NodeProgram,
    MakeBundleKey,
    SignManifest,
    PresignParts,
    UploadManifest,
    UploadSnapshot,
    WaitForImage,
    TagBundle,
    DeregisterByName,
]

# The native strategy's controller-side steps (the runner hands them to
# amidsl.strategies.native_controller).
NATIVE_CONTROLLER_ACTIONS = (MakeBundleKey, SignManifest, PresignParts, UploadManifest, UploadSnapshot)
# Actions that run on the controller rather than on the node. A NodeProgram runs on the node, but the
# controller drives it (it sends the request and reads the report), so it is run on its own.
# The steps after RegisterImage that take more than one API call (the runner hands them to
# amidsl.run.publish).
PUBLISH_ACTIONS = (WaitForImage, TagBundle, DeregisterByName)
CONTROLLER_ACTIONS = (AwsCall, UpdateSettings, CheckResult, *NATIVE_CONTROLLER_ACTIONS, *PUBLISH_ACTIONS)


@dataclass(frozen=True)
class PlanWarning:
    """Not an action: a remark a plan function adds for the reviewer.

    A warning says something the reviewer should weigh (a package stays in the image, the image is
    public); with `note`, it is plain information (what a native build ships), shown as a note.
    """

    text: str
    note: bool = False


@dataclass(frozen=True)
class PhasePlan:
    """The actions of one phase, in order, with any warnings and notes for the reviewer."""

    name: str
    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = field(default=())
    # The actions' numbers in their phase of the plan: 1, 2, ... unless this is a part of a phase sent
    # on its own (a live build sends a phase's node actions between controller steps as one script).
    numbers: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())  # plain information, unlike the warnings

    def __post_init__(self) -> None:
        if self.numbers and len(self.numbers) != len(self.actions):
            raise ValueError(f"phase {self.name}: {len(self.actions)} actions, {len(self.numbers)} numbers")

    def numbered(self) -> list[tuple[int, Action]]:
        """(number in the phase, action) for each action."""
        numbers = self.numbers or range(1, len(self.actions) + 1)
        return [(numbers[position], action) for position, action in enumerate(self.actions)]
