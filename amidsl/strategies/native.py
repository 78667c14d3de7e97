"""The native strategy: amidsl's own node program bundles the volume; secrets stay on the controller.

On the node: only amidsl's node program (stdlib Python), copied into install_dir (root-only, and
excluded from every image), checked against its SHA-256, and removed with install_dir in cleanup.
The node needs python3 >= 3.8, e2fsprogs (mke2fs) and libcrypto (openssl); nothing is installed.
The controller makes the AES key and IV and sends them on the program's standard input; it signs the
manifest itself (the signing key never leaves it) and presigns one S3 PUT URL per part, so the node
never holds an AWS credential either.
"""

from __future__ import annotations

from collections.abc import Callable

from amidsl.model.actions import (
    Action,
    ControllerSecret,
    Directory,
    Exec,
    MakeBundleKey,
    NodeProgram,
    PlanWarning,
    PresignParts,
    RemoteFile,
    Remove,
    SignManifest,
    UploadManifest,
)
from amidsl.node import program_sha256, program_source
from amidsl.settings import AmiSettings
from amidsl.strategies import bundle_files
from amidsl.strategies.hygiene import hygiene_notes
from amidsl.strategies.register import ami_register, instance_types_note
from amidsl.strategies.strategy import FailureAdvice, Strategy

NODE_PROGRAM_NAME = "amidsl_node.py"
PART_SIZE = 10 * 1024 * 1024
UPLOAD_RETRIES = 5

BUNDLE_KEY = ControllerSecret("bundle_key", "the bundle's AES key (made on the controller)")
BUNDLE_IV = ControllerSecret("bundle_iv", "the bundle's AES IV (made on the controller)")
PRESIGNED_PARTS = ControllerSecret("presigned_parts", "one presigned S3 PUT URL per part")

NODE_NEEDS = "python3 >= 3.8, e2fsprogs (mke2fs >= 1.43) and libcrypto (openssl)"
GRUB_NEEDS = (
    "GRUB 2 for BIOS in the volume (grub-mkimage and /usr/lib/grub/i386-pc: grub-pc-bin on Debian and "
    "Ubuntu, grub2-pc-modules and grub2-tools on RHEL, Rocky and Amazon Linux)"
)

NO_PYTHON3 = (
    "python3 is not installed on the node: the native bundler needs python3 >= 3.8 (apt-get or dnf "
    'install python3), or set bundler = "ami-tools"'
)
# Checks the node's python3 is new enough to run the program (an older one would stop at a syntax error
# with a traceback), then the shipped program against the SHA-256 amidsl computed from its own copy
# (sys.exit with a string exits with status 1 and prints it). Runs on any Python 3.
_CHECKSUM = (
    "import hashlib, sys; "
    "sys.version_info >= (3, 8) or sys.exit('python3 ' + sys.version.split()[0] + "
    "' is too old: the amidsl node program needs Python 3.8 or newer; install a newer python3 "
    'or use bundler = "ami-tools"\'); '
    "found = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest(); "
    "sys.exit(0 if found == sys.argv[2] else "
    "sys.argv[1] + ': SHA-256 ' + found + ', expected ' + sys.argv[2])"
)


def node_program(s: AmiSettings) -> str:
    """Where the node program lives on the node: in install_dir, which the image excludes."""
    return f"{s.install_dir}/{NODE_PROGRAM_NAME}"


def node_needs(s: AmiSettings) -> str:
    """What the node must have for this build."""
    return f"{NODE_NEEDS}, and {GRUB_NEEDS}" if s.virtualization_type == "hvm" else NODE_NEEDS


def layout_warning(s: AmiSettings) -> PlanWarning:
    """What the image will be, and what booting it needs."""
    if s.virtualization_type == "hvm":
        return PlanWarning(
            "hvm image: a whole disk with an MBR partition table, the volume as its one ext4 partition "
            "(same UUID and label) at 1 MiB, and the volume's own GRUB 2 installed for BIOS boot; the "
            "volume needs a kernel in /boot and a grub.cfg",
            note=True,
        )
    kernel = (
        f"it boots through the pv-grub kernel {s.kernel_id}"
        if s.kernel_id
        else "it boots only through a pv-grub kernel: set kernel_id to the region's pv-grub AKI"
    )
    # Without a kernel_id the image cannot boot as it is: that is a warning, not a note.
    return PlanWarning(
        f"paravirtual image: a bare ext4 filesystem image of the volume; {kernel}, which reads "
        "/boot/grub/menu.lst",
        note=bool(s.kernel_id),
    )


def image_exclusions(s: AmiSettings) -> list[str]:
    """The exclusions as paths in the image: node directories inside the volume, relative to it."""
    volume = s.volume.rstrip("/")
    if not volume:
        return list(s.exclusions)
    return [e[len(volume) :] if e.startswith(volume + "/") else e for e in s.exclusions]


def ship_program(s: AmiSettings) -> list[Action]:
    """Copy the node program into a root-only install_dir and check it (and python3) on the node."""
    return [
        Directory(s.install_dir, mode="0700", description="create the node program directory (root only)"),
        RemoteFile(
            node_program(s),
            content=program_source(),
            mode="0600",
            verbatim=True,
            description="write the amidsl node program (its full source)",
        ),
        Exec(
            ("python3", "-I", "-c", _CHECKSUM, node_program(s), program_sha256()),
            description="check python3 (3.8 or newer) and the SHA-256 of the node program",
            missing=NO_PYTHON3,
        ),
    ]


def install(s: AmiSettings) -> list[Action | PlanWarning]:
    """Ship the node program into a root-only directory, check its checksum, and check the node."""
    return [
        PlanWarning(
            f"native build: nothing is installed; amidsl's node program is copied to {s.install_dir} "
            f"(excluded from the image, removed in cleanup). The node needs {node_needs(s)}. To image "
            "the volume, mke2fs reads it through read-only bind mounts in the program's own mount "
            "namespace (nothing of the node's is mounted or changed, nothing is left behind); where the "
            f"node does not allow that, through a temporary tree of hard links to its files (in "
            f"{s.destination_dir}, or in the volume when that is another filesystem).",
            note=True,
        ),
        layout_warning(s),
        *ship_program(s),
        make_destination(s),
        NodeProgram(
            node_program(s),
            "check",
            (
                ("volume", s.volume),
                ("destination_dir", s.destination_dir),
                ("exclude", image_exclusions(s)),
                *selection_request(s),
                ("virtualization_type", s.virtualization_type or "paravirtual"),
            ),
            result_name="node_check",
            description="check the node's tools (python3, e2fsprogs, libcrypto"
            + (", GRUB for BIOS" if s.virtualization_type == "hvm" else "")
            + "), free space in destination_dir, and that the volume can boot",
        ),
    ]


def configure(s: AmiSettings) -> list[Action | PlanWarning]:
    """Nothing: in a native build no credential is written to the node."""
    return [
        PlanWarning(
            "native build: no key or certificate is written to the node; the controller signs", note=True
        )
    ]


def make_destination(s: AmiSettings) -> Exec:
    """Make sure destination_dir exists on the node."""
    return Exec(
        ("mkdir", "-p", "--", s.destination_dir), description="make sure the destination directory exists"
    )


def selection_request(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """What the node program needs besides exclusions to select what goes into the image."""
    return (
        ("includes", list(s.includes)),
        ("exclude_patterns", list(s.exclude_patterns)),
        ("hygiene_keep", list(s.hygiene_keep)),
    )


def bundle_request(s: AmiSettings) -> tuple[tuple[str, object], ...]:
    """The node program's bundle request; key and IV are filled in by the controller at run time."""
    return (
        ("volume", s.volume),
        ("exclude", image_exclusions(s)),
        *selection_request(s),
        ("filter", True),
        ("destination_dir", s.destination_dir),
        ("prefix", s.prefix),
        ("image_size_mb", s.image_size_mb),
        ("key", BUNDLE_KEY),
        ("iv", BUNDLE_IV),
        ("part_size", PART_SIZE),
        ("workers", 0),
        ("virtualization_type", s.virtualization_type or "paravirtual"),
    )


def ami_bundle(s: AmiSettings) -> list[Action | PlanWarning]:
    """Image and bundle the volume on the node with a controller-made key; sign the manifest here."""
    return [
        *hygiene_notes(s, "the node program applies it as it images the volume"),
        make_destination(s),
        MakeBundleKey(),
        NodeProgram(
            node_program(s),
            "bundle",
            bundle_request(s),
            result_name="bundle",
            description="image the volume and bundle it into parts on the node",
        ),
        SignManifest("bundle", result_name="manifest"),
    ]


def manifest_key(s: AmiSettings) -> str:
    """The manifest's S3 key (s3_manifest_path without the bucket)."""
    return s.s3_manifest_path.split("/", 1)[1]


def ami_upload(s: AmiSettings) -> list[Action]:
    """Presign per part, let the node upload the parts in parallel, upload the manifest from here."""
    return [
        PresignParts("bundle", s.s3_bucket, s.s3_path, s.region),
        NodeProgram(
            node_program(s),
            "upload",
            (
                ("destination_dir", s.destination_dir),
                ("parts", PRESIGNED_PARTS),
                ("concurrency", s.upload_concurrency),
                ("retries", UPLOAD_RETRIES),
            ),
            result_name="upload",
            refresh_expired=True,
            description="upload the parts to S3 in parallel from the node (presigned URLs)",
        ),
        UploadManifest("manifest", s.s3_bucket, manifest_key(s), s.region),
    ]


def program_removal(s: AmiSettings) -> Remove:
    """The action that removes amidsl's node program (in cleanup, and after a failure)."""
    return Remove(s.install_dir, recursive=True, description="remove the amidsl node program (install_dir)")


def program_cleanup(s: AmiSettings) -> list[Action]:
    """Remove what runs of the node program that died left, and the node program.

    The program is shipped again first: cleanup may run on its own, after a failure removed it.
    """
    return [
        *ship_program(s),
        NodeProgram(
            node_program(s),
            "cleanup",
            (("volume", s.volume), ("destination_dir", s.destination_dir), ("prefix", s.prefix)),
            result_name="leftovers",
            description="remove the image, staging tree and unfinished parts of runs that died "
            "(a running one's are kept)",
        ),
        program_removal(s),
    ]


def cleanup(s: AmiSettings) -> list[Action]:
    """The node program's cleanup, then the bundle parts."""
    # The node program's image is in its work directory `.<prefix>.work.<pid>-*`, which the cleanup
    # command removes.
    return [*program_cleanup(s), bundle_files.parts_removal(s)]


PHASE_FUNCTIONS = {
    "install": install,
    "configure": configure,
    "ami-bundle": ami_bundle,
    "ami-upload": ami_upload,
    "ami-register": ami_register,
    "cleanup": cleanup,
}


# Why no credential was on the node: an S3 bundle's (the default `left`), or another output's.
NO_SECRET_ON_NODE = {
    True: "native build; the bundle's AES key and IV were only ever in memory",
    False: "native build; AWS credentials stay on the controller",
}


def after_failure(
    s: AmiSettings, phase: str, left: Callable[[AmiSettings, str], str] | None = None
) -> FailureAdvice:
    """After a failure: no credential was ever on the node, so what to take off it is the node program;
    `left` says what else stays on the node (by default the bundle's parts: parts_note)."""
    where = s.install_dir
    return FailureAdvice(
        removal=program_removal(s),
        removed=(
            f"No credential was on the node ({NO_SECRET_ON_NODE[left is None]}); amidsl's node program "
            f"was removed ({where}). " + (left or parts_note)(s, phase)
        ),
        failed=f"No credential was on the node; removing {where} failed",
        interrupted=f"No credential was on the node; amidsl's node program may remain in {where}.",
    )


def parts_note(s: AmiSettings, phase: str) -> str:
    """Where a failed native build's bundle parts are on the node."""
    if phase in ("install", "configure"):
        return "Nothing of the bundle was made on the node."
    if phase == "ami-bundle":
        # The node program removes its partial image, staging tree and parts when it fails or is stopped.
        return (
            f"The node program removes its partial image and parts from {s.destination_dir} when it "
            "fails or is interrupted; parts of an earlier bundle stay there until cleanup."
        )
    parts = f"{s.destination_dir.rstrip('/')}/{s.prefix}.part.*"
    if phase == "cleanup":
        return f"Bundle parts the cleanup did not remove may remain on the node in {parts}."
    return f"The bundle's parts stay on the node in {parts} until the cleanup phase removes them."


def resume_hint(s: AmiSettings, phase: str) -> str | None:
    """How to resume a native build after a failure in `phase`, where the generic advice would not do."""
    if phase in ("configure", "ami-bundle", "ami-upload"):
        # The bundle report, the AES key and the signed manifest lived in the controller's memory, and
        # the node program was removed: bundling starts again from the program's install. A failed
        # registration needs none of that: the bundle is in S3 (the runner says ami-upload when not).
        return "To resume, fix the cause and run the build again from phase install."
    if phase == "ami-register":
        return (
            "To resume, fix the cause and run the build again from phase ami-register (the bundle is in "
            "S3); if the fix changes the bundle (settings in its manifest, or EC2's certificate), from "
            "phase install."
        )
    return None


def summary(s: AmiSettings) -> tuple[tuple[str, str], ...]:
    """What a native build puts on the node, leaves in the image, and needs, for the plan preview."""
    return (
        (
            "on the node",
            f"amidsl's node program (one stdlib Python file) in {s.install_dir}, during the build; the "
            f"image file and the bundle parts in {s.destination_dir}: the image file (and a staging tree "
            "of hard links on the volume's filesystem) only while bundling, the parts until cleanup; the "
            f"node program checks before any work that {s.destination_dir} has room for both",
        ),
        (
            "stays in the image",
            "nothing amidsl brings: no package is installed; install_dir, destination_dir "
            "and amidsl's state dir are excluded; image hygiene leaves out the node's keys, histories, "
            "credentials and machine identity (see ami-bundle), and adds a first-boot unit that makes "
            "SSH host keys where nothing in the volume would",
        ),
        ("the node needs", node_needs(s)),
        ("instance types", instance_types_note(s)),
        (
            "secrets",
            "AWS credentials and the signing key stay on the controller; the AES key and IV and the "
            "presigned URLs reach the node only on the node program's standard input",
        ),
    )


STRATEGY = Strategy(
    name="native",
    bundler="native",
    backing="instance-store",
    phases=PHASE_FUNCTIONS,
    summary=summary,
    after_failure=after_failure,
    resume_hint=resume_hint,
    credential_use="used on the controller only (presigned URLs reach the node)",
    runs_node_program=True,
    uses_bucket=True,
)
