"""The controller side of a native build, shared by every executing back-end (simulator, live).

The runner hands this module the native strategy's controller steps and its node-program runs. Here the
AES key and IV are made (in memory only), the node program gets its request on standard input and its
JSON report is read back, the manifest is built and signed with the user's key (which never leaves this
machine), one S3 PUT URL is presigned per part (parts already uploaded are skipped), URLs that expired
during the upload are presigned again, and the manifest is uploaded. Key, IV and URLs are secrets: they
are never put in a record, a message or a file.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

from amidsl.bundle.bundle import BundleFacts, signed_manifest
from amidsl.bundle.keys import load_signing_keys
from amidsl.bundle.manifest import BlockDeviceMapping
from amidsl.model.actions import (
    Action,
    ControllerSecret,
    MakeBundleKey,
    NodeProgram,
    PresignParts,
    SignManifest,
    UploadManifest,
)
from amidsl.settings import AmiSettings

EXEC_READ_ACL = "aws-exec-read"
PRESIGN_SECONDS = 3600
EXPIRED_STATUS = 3  # the node program's exit status when presigned URLs expired
REFRESH_ROUNDS = 5
ERROR_TAIL_LINES = 20


class ControllerBackend(Protocol):
    """What the controller steps need from an executing back-end."""

    def run_node_program(self, action: NodeProgram, request: bytes) -> tuple[int, str, str]:
        """Run the node program with `request` on stdin; return (exit status, stdout, stderr)."""
        ...

    def s3_client(self) -> Any:
        """A boto3 S3 client for the build's region (HeadObject, PutObject)."""
        ...

    def presign_client(self) -> Any:
        """A boto3 S3 client whose presigned URLs the node can reach."""
        ...

    def ec2_certificate(self) -> str:
        """EC2's public certificate for the build's region (PEM)."""
        ...


class ControllerStepFailed(Exception):
    """A controller step failed; the message names what and the fix, and holds no secret."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def run_controller_step(
    action: Action, settings: AmiSettings | None, backend: ControllerBackend, results: dict[str, Any]
) -> str:
    """Carry out one native controller step or node-program run; return its (secret-free) output.

    `settings` are needed only to sign a manifest; uploading a finished bundle runs without them.
    """
    if isinstance(action, MakeBundleKey):
        results["bundle_key"] = os.urandom(16)
        results["bundle_iv"] = os.urandom(16)
        return "made a 16-byte AES key and IV (kept in memory only)"
    if isinstance(action, NodeProgram):
        return _run_program(action, backend, results)
    if isinstance(action, SignManifest):
        if settings is None:
            raise TypeError("signing a manifest needs the build's settings")
        return _sign(action, settings, backend, results)
    if isinstance(action, PresignParts):
        return _presign(action, backend, results)
    if isinstance(action, UploadManifest):
        manifest = _needs(results, action.from_result, "ami-bundle")
        backend.s3_client().put_object(
            Bucket=action.bucket, Key=action.key, Body=manifest["xml"].encode("utf-8"), ACL=EXEC_READ_ACL
        )
        return f"uploaded s3://{action.bucket}/{action.key}"
    raise TypeError(f"the controller does not know the action {type(action).__name__}")


def _needs(results: dict[str, Any], name: str, phase: str) -> Any:
    if name not in results:
        raise ControllerStepFailed(
            f"the {name} report of the {phase} phase is not known in this run: the native bundle's "
            f"report and signed manifest live in the controller's memory, so run {phase} and the "
            "phases after it in one build"
        )
    return results[name]


def _secret_value(secret: ControllerSecret, results: dict[str, Any]) -> Any:
    if secret.name in ("bundle_key", "bundle_iv"):
        return _needs(results, secret.name, "ami-bundle").hex()
    if secret.name == "presigned_parts":
        return _needs(results, "presigned", "ami-upload")["parts"]
    raise ControllerStepFailed(f"no value for {secret.name} ({secret.what})")


def _request(action: NodeProgram, results: dict[str, Any], **override: Any) -> dict[str, Any]:
    request = {
        key: _secret_value(value, results) if isinstance(value, ControllerSecret) else value
        for key, value in action.request
    }
    return {**request, **override}


def _report(stdout: str) -> dict[str, Any] | None:
    """The node program's JSON result: its last line of standard output.

    Over SSH its progress lines (stderr) arrive in the same stream and may come after it, so the
    last line that is a JSON object is the result.
    """
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


def _run_program(action: NodeProgram, backend: ControllerBackend, results: dict[str, Any]) -> str:
    request = _request(action, results)
    outputs: list[str] = []
    for _ in range(REFRESH_ROUNDS + 1):
        status, stdout, stderr = backend.run_node_program(action, json.dumps(request).encode("utf-8"))
        outputs.append(stderr)
        report = _report(stdout)
        if status == EXPIRED_STATUS and action.refresh_expired and report and report.get("expired"):
            expired = set(report["expired"])
            outputs.append(f"amidsl: {len(expired)} presigned URL(s) expired; presigning those parts again")
            fresh = [
                _presign_one(backend, p["filename"], results)
                for p in request["parts"]
                if p["filename"] in expired
            ]
            results["presigned"]["parts"] += fresh  # so that the new URLs are redacted too
            request = {**request, "parts": fresh}
            continue
        if status != 0 or report is None:
            tail = "\n".join("\n".join(outputs).rstrip().splitlines()[-ERROR_TAIL_LINES:])
            raise ControllerStepFailed(_failure_text(action, status, report, tail), status or 1)
        results[action.result_name] = report
        if action.command == "check":
            outputs.append(_describe_check(report))
        return "\n".join(outputs).rstrip()
    raise ControllerStepFailed(
        f"presigned URLs kept expiring after {REFRESH_ROUNDS} rounds: check the controller's clock"
    )


def _describe_check(report: dict[str, Any]) -> str:
    """One line on what the node has, from the node program's check report."""
    mib = 1024 * 1024
    return (
        f"node: python {report.get('python')}, mke2fs {report.get('mke2fs')}, libcrypto "
        f"{report.get('libcrypto')}; {int(report.get('free_bytes', 0)) // mib} MB free in destination_dir, "
        f"about {int(report.get('volume_bytes', 0)) // mib} MB of data to image"
        + (f"; GRUB {report['grub']} for the hvm disk" if report.get("grub") else "")
    )


def report_lines(command: str, report: dict[str, Any]) -> list[str]:
    """What the node program's JSON result says, as sentences (a live build shows these, not the JSON)."""
    if command == "check":
        return [_describe_check(report)]
    if command == "bundle":
        parts = report.get("parts", [])
        mb = 1_000_000
        size = int(report.get("image_size", 0)) / mb
        if "disk" in report:  # kept whole for an EBS snapshot (output "disk"): no parts
            lines = [
                f"made a {size:.1f} MB disk in {report['disk']}: {report.get('blocks', 0)} blocks hold data"
            ]
        else:
            lines = [
                f"bundled a {size:.1f} MB image into {len(parts)} part{'' if len(parts) == 1 else 's'} "
                f"({int(report.get('bundled_size', 0)) / mb:.1f} MB)"
            ]
        left_out = report.get("left_out", [])
        if left_out:
            shown = ", ".join(path for path, _ in left_out[:5]) + (", ..." if len(left_out) > 5 else "")
            lines.append(f"left out of the image: {len(left_out)}: {shown}")
        return lines + hygiene_lines(node_hygiene(report))
    if command == "upload":
        failed = [f"{f.get('filename')} ({f.get('reason')})" for f in report.get("failed", [])]
        lines = [f"uploaded {len(report.get('uploaded', []))} part(s)"]
        return lines + ([f"failed: {', '.join(failed)}"] if failed else [])
    removed = report.get("removed", [])
    return [f"removed what runs that died left: {', '.join(removed)}" if removed else "no leftovers"]


def node_hygiene(report: dict[str, Any]) -> dict[str, Any]:
    """The image hygiene part of the node program's bundle report, as hygiene_lines reads it."""
    if "hygiene" not in report:
        return {}
    return {
        "items": report.get("hygiene", {}),
        "host_keys": report.get("host_keys", ""),
        "login_key": report.get("login_key", ""),
        "added": report.get("added", []),
    }


def hygiene_lines(hygiene: dict[str, Any]) -> list[str]:
    """What image hygiene found and did, item by item, and how instances get host and login keys."""
    if not hygiene:
        return []
    lines = ["image hygiene:"]
    for name, item in hygiene["items"].items():
        if item["count"]:
            more = ", ..." if item["count"] > len(item["paths"]) else ""
            lines.append(f"  {name} ({item['treatment']}): {item['count']}: {', '.join(item['paths'])}{more}")
    # One line for the items that found nothing: a build's log stays short, and each item is still named.
    nothing = [name for name, item in hygiene["items"].items() if not item["count"]]
    if nothing:
        lines.append(f"  nothing found for: {', '.join(nothing)}")
    lines.append(f"  SSH host keys: {hygiene['host_keys']}")
    lines.append(f"  login key: {hygiene['login_key'] or 'WARNING: nothing installs one'}")
    return lines


def _failure_text(action: NodeProgram, status: int, report: dict[str, Any] | None, tail: str) -> str:
    text = tail or f"amidsl's node program ({action.command}) exited with status {status}"
    if action.command != "upload":
        return text
    failed = [
        f"{f.get('filename')} ({f.get('status')}: {f.get('reason')})"
        for f in (report or {}).get("failed", [])
    ]
    # What is left in S3, and the command that removes it, is said by the runner for every strategy.
    return (
        f"{text}\namidsl: upload failed{': ' + ', '.join(failed) if failed else ''}. Nothing was registered; "
        "a re-run bundles the volume again with a new key, so it sends every part again."
    )


def _sign(
    action: SignManifest, settings: AmiSettings, backend: ControllerBackend, results: dict[str, Any]
) -> str:
    report = _needs(results, action.from_result, "ami-bundle")
    facts = BundleFacts(
        report["prefix"],
        int(report["image_size"]),
        report["digest"],
        [(p["filename"], int(p["size"]), p["sha1"]) for p in report["parts"]],
    )
    manifest = signed_manifest(
        facts,
        key=_needs(results, "bundle_key", "ami-bundle"),
        iv=_needs(results, "bundle_iv", "ami-bundle"),
        user_id=settings.user_id,
        signing=load_signing_keys(
            settings.certificate_pem,
            settings.private_key_pem.reveal(),
            backend.ec2_certificate(),
            key_checked=True,  # as the settings were read
        ),
        arch=settings.arch,
        kernel_id=settings.kernel_id,
        ramdisk_id=settings.ramdisk_id,
        # Only what the settings ask for, the same mappings RegisterImage gets; nothing invented.
        block_device_mappings=[
            BlockDeviceMapping(virtual, device) for device, virtual in settings.block_device_mappings
        ],
    )
    results[action.result_name] = {"xml": manifest.xml, "parts": report["parts"]}
    return f"signed {facts.prefix}.manifest.xml: {len(facts.parts)} part(s), {facts.image_size} image bytes"


def _object_key(prefix: str, filename: str) -> str:
    return f"{prefix}/{filename}" if prefix else filename


def _presign_one(backend: ControllerBackend, filename: str, results: dict[str, Any]) -> dict[str, Any]:
    presigned = results["presigned"]
    url = backend.presign_client().generate_presigned_url(
        "put_object",
        Params={
            "Bucket": presigned["bucket"],
            "Key": _object_key(presigned["prefix"], filename),
            "ACL": EXEC_READ_ACL,
        },
        ExpiresIn=PRESIGN_SECONDS,
    )
    # The size is for the controller's upload progress; the node program reads the file itself.
    size = presigned["sizes"].get(filename, 0)
    return {"filename": filename, "url": url, "headers": {"x-amz-acl": EXEC_READ_ACL}, "size": size}


def _already_uploaded(backend: ControllerBackend, bucket: str, key: str, part: dict[str, Any]) -> bool:
    """True when S3 holds the part with the same size and MD5 (a single-PUT object's ETag is its MD5)."""
    try:
        head = backend.s3_client().head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    md5_hex = base64.b64decode(part["md5"]).hex()
    return head.get("ETag", "").strip('"') == md5_hex and int(head.get("ContentLength", -1)) == int(
        part["size"]
    )


def _presign(action: PresignParts, backend: ControllerBackend, results: dict[str, Any]) -> str:
    report = _needs(results, action.from_result, "ami-bundle")
    results["presigned"] = {
        "bucket": action.bucket,
        "prefix": action.key_prefix,
        "name": report["prefix"],
        "parts": [],
        "sizes": {part["filename"]: int(part["size"]) for part in report["parts"]},
    }
    skipped: list[str] = []
    for part in report["parts"]:
        if _already_uploaded(backend, action.bucket, _object_key(action.key_prefix, part["filename"]), part):
            skipped.append(part["filename"])
        else:
            results["presigned"]["parts"].append(_presign_one(backend, part["filename"], results))
    lines = [
        f"presigned {len(results['presigned']['parts'])} part(s) for s3://{action.bucket}/{action.key_prefix}"
    ]
    if skipped:
        lines.append(f"already in S3 with the right MD5, skipped: {', '.join(skipped)}")
    return "\n".join(lines)


def secret_values(results: dict[str, Any]) -> Sequence[str]:
    """The secrets the controller made in this run (key, IV, URLs), for redaction."""
    found = [results[name].hex() for name in ("bundle_key", "bundle_iv") if name in results]
    found += [p["url"] for p in results.get("presigned", {}).get("parts", [])]
    return found
