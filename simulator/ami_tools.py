"""The simulated ec2-ami-tools: their archive, and models of ec2-bundle-vol and ec2-upload-bundle.

ec2-bundle-vol builds a real ext4 image of the node's volume and a real bundle with amidsl's bundle code,
honouring every option the plans pass; ec2-upload-bundle puts the parts, then the manifest, into the
node's region's S3 with the tool's key layout and the `aws-exec-read` ACL, retrying with `--retry`.
"""

from __future__ import annotations

import io
import re
import zipfile

from amidsl.bundle import BundleError, ImageError, build_image, bundle_image, read_manifest
from simulator.node import CommandResult, RunContext
from simulator.programs import fail, model_script, ok, split_options

AMI_TOOLS_VERSION = "1.5.19"
EC2_CERT_IN_TOOLS = "etc/ec2/amitools/cert-ec2.pem"
UPLOAD_ATTEMPTS = 5  # what ec2-upload-bundle --retry allows each object


def ami_tools_zip(ec2_cert_pem: str, version: str = AMI_TOOLS_VERSION) -> bytes:
    """The tools archive as Amazon ships it: a versioned top folder holding bin/, lib/ and etc/."""
    top = f"ec2-ami-tools-{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, model in (("ec2-bundle-vol", "ec2-bundle-vol"), ("ec2-upload-bundle", "ec2-upload-bundle")):
            body = f'ruby -I "$EC2_AMITOOL_HOME/lib" "$EC2_AMITOOL_HOME/lib/ec2/amitools/{name}.rb" "$@"\n'
            info = zipfile.ZipInfo(f"{top}/bin/{name}")
            info.external_attr = 0o100755 << 16
            archive.writestr(info, model_script(model, body))
        archive.writestr(f"{top}/lib/ec2/amitools/version.rb", f"VERSION = '{version}'\n" * 200)
        archive.writestr(f"{top}/{EC2_CERT_IN_TOOLS}", ec2_cert_pem)
    return buffer.getvalue()


def _tools_home(ctx: RunContext) -> str:
    """EC2_AMITOOL_HOME, or the folder above the tool's bin/ as the wrapper script works it out."""
    return ctx.env.get("EC2_AMITOOL_HOME") or ctx.argv[0].rsplit("/bin/", 1)[0]


def _needs_ruby(ctx: RunContext) -> CommandResult | None:
    """The tools are Ruby scripts: without a Ruby on PATH their wrapper fails as bash does."""
    if not ctx.node.has_command("ruby", ctx.env.get("PATH")):
        return fail(127, f"{ctx.argv[0]}: line 3: ruby: command not found")
    return None


def bundle_vol(ctx: RunContext) -> CommandResult:
    """ec2-bundle-vol -k -c -u -r [-e] [-d] [-p] [-s] [--no-inherit] [--batch]."""
    problem = _needs_ruby(ctx)
    if problem:
        return problem
    if ctx.user != "root":
        return fail(1, "You need to be root to run ec2-bundle-vol")
    node = ctx.node
    options, _ = split_options(ctx.argv[1:], ("-k", "-c", "-u", "-r", "-e", "-d", "-p", "-s", "-v"))
    for flag, what in (("-k", "private key"), ("-c", "certificate")):
        path = str(options.get(flag, ""))
        if not path or not node.exists(path):
            return fail(1, f"ERROR: {what} file {path!r} does not exist")
    user = str(options.get("-u", ""))
    if not re.fullmatch(r"\d{12}", user):
        return fail(1, f"ERROR: user {user!r} is not a 12-digit account number")
    arch = str(options.get("-r", ""))
    if arch not in ("i386", "x86_64", "arm64"):
        return fail(1, f"ERROR: invalid architecture {arch!r}")
    destination = str(options.get("-d", "/tmp"))
    if not node.is_dir(destination):
        return fail(1, f"ERROR: destination directory {destination} does not exist")
    if not options.get("--no-inherit") and not node.on_ec2:
        return fail(1, "ERROR: Unable to read instance meta-data: not on EC2 (use --no-inherit)")
    if "rsync" not in node.packages:
        return fail(1, "ERROR: rsync is not installed; ec2-bundle-vol copies the volume with it")
    prefix = str(options.get("-p", "image"))
    size = options.get("-s")
    exclusions = [e for e in str(options.get("-e", "")).split(",") if e]
    home = _tools_home(ctx)
    ec2_cert = f"{home}/{EC2_CERT_IN_TOOLS}"
    if not node.exists(ec2_cert):
        return fail(1, f"ERROR: EC2 certificate {ec2_cert} missing: is EC2_AMITOOL_HOME right?")
    image = f"{destination.rstrip('/')}/{prefix}"
    try:
        node.check_space(image, 1)
        report = build_image(
            node.root, node.host_path(image), size_mb=int(str(size)) if size else None, exclusions=exclusions
        )
        manifest = bundle_image(
            node.host_path(image),
            node.host_path(destination),
            prefix=prefix,
            user_id=user,
            user_cert_pem=node.read_bytes(str(options["-c"])),
            user_private_key_pem=node.read_bytes(str(options["-k"])),
            ec2_cert_pem=node.read_bytes(ec2_cert),
            arch=arch,
        )
    except OSError as err:
        return fail(1, f"ERROR: {err.strerror or err}")
    except (ImageError, BundleError) as err:
        # Say node paths, as the real tool would, not where the simulator keeps the node.
        return fail(1, f"ERROR: {str(err).replace(str(node.root), '')}")
    finally:
        if node.host_path(image).is_file():
            node.host_path(image).unlink()  # the tool removes its image file once bundled
    node.last_bundle_report = report
    names = [p.filename for p in manifest.parts] + [f"{prefix}.manifest.xml"]
    for name in names:
        node.set_owner(f"{destination.rstrip('/')}/{name}", ("root", "root"))
    lines = [
        f"Copying / into the image file {image}...",
        *(f"Excluding: {left.path} ({left.reason})" for left in report.left_out),
        f"Bundling image file {image}...",
        *(f"Created {p.filename}" for p in manifest.parts),
        "Generating digests for each part... Digests generated.",
        "Creating bundle manifest...",
        "ec2-bundle-vol complete.",
    ]
    return ok("\n".join(lines) + "\n")


def upload_bundle(ctx: RunContext) -> CommandResult:
    """ec2-upload-bundle -b BUCKET[/PREFIX] -m MANIFEST -a KEY -s SECRET [-t TOKEN] [--region R] [--retry]."""
    problem = _needs_ruby(ctx)
    if problem:
        return problem
    node = ctx.node
    options, _ = split_options(ctx.argv[1:], ("-b", "-m", "-a", "-s", "-t", "--region", "--url", "--acl"))
    for flag in ("-b", "-m", "-a", "-s"):
        if not options.get(flag):
            return fail(1, f"ERROR: missing mandatory parameter {flag}")
    manifest_path = str(options["-m"])
    if not node.exists(manifest_path):
        return fail(1, f"ERROR: manifest {manifest_path} does not exist")
    if node.region is None:
        return fail(1, "ERROR: could not connect to S3: no network route from this node")
    try:
        manifest = read_manifest(node.host_path(manifest_path))
    except BundleError as err:
        return fail(1, f"ERROR: {err}")
    bucket, _, key_prefix = str(options["-b"]).partition("/")
    region = str(options.get("--region") or node.region.name)
    folder = manifest_path.rsplit("/", 1)[0] or "/"
    files = [p.filename for p in manifest.parts] + [manifest_path.rsplit("/", 1)[1]]
    attempts = UPLOAD_ATTEMPTS if options.get("--retry") else 1
    credentials = (str(options["-a"]), str(options["-s"]), str(options.get("-t") or "") or None)
    lines = [f"Uploading bundled image parts to the S3 bucket {bucket} ..."]
    sizes = {
        name: node.host_path(f"{folder.rstrip('/')}/{name}").stat().st_size
        for name in files
        if node.exists(f"{folder.rstrip('/')}/{name}")
    }
    transfer = node.progress.transfer("uploading", sum(sizes.values()))
    for name in files:
        key = f"{key_prefix.strip('/')}/{name}" if key_prefix.strip("/") else name
        path = f"{folder.rstrip('/')}/{name}"
        if not node.exists(path):
            return fail(1, "\n".join([*lines, f"ERROR: part {path} is missing"]))
        for attempt in range(1, attempts + 1):
            error = node.region.upload_object(bucket, key, node.read_bytes(path), region, credentials)
            if error is None:
                lines.append(f"Uploaded {name}")
                transfer.advance(sizes[name])
                break
            lines.append(f"Error uploading {name} (attempt {attempt}): {error}")
        else:
            return fail(1, "\n".join([*lines, f"ERROR: failed to upload {name}"]))
    transfer.finish()
    lines.append("Bundle upload completed.")
    return ok("\n".join(lines) + "\n")
