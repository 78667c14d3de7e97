"""Run plans on a FakeNode and a FakeRegion: the simulator back-end of amidsl's runner.

Node actions run as the very steps the bash script shows (amidsl.model.steps), each command through the
node's command models (simulator.steps); API calls go to the fake region. The result holds a per-action
transcript (secrets redacted), the final settings with the image id, the node, and `inspect_image`, which
fetches the registered bundle from the fake S3, verifies and unbundles it, and lists the image's files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.backends import get_backend

from amidsl.bundle import (
    ImageEntry,
    ImageReport,
    LeftOut,
    Manifest,
    Reason,
    list_image,
    unbundle,
    verify_bundle,
)
from amidsl.bundle.ls import describe_layout, disk_layout
from amidsl.model.actions import Action, AwsCall, NodeProgram
from amidsl.model.plan import Plan, Spec, build_plan
from amidsl.model.steps import node_steps, references
from amidsl.render.shell import render_action
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import BLOCK_SIZE, download_snapshot
from amidsl.run.runner import ActionFailed, ActionInterrupted, ActionRecord, BuildError, BuildResult, run_plan
from amidsl.secrets import redact
from amidsl.settings import AmiSettings
from amidsl.strategies.ami_tools import RBENV_URL, RUBY_BUILD_URL
from simulator import grub
from simulator.fake_ami_tools import ami_tools_zip
from simulator.node import FakeNode, NodeInterrupted
from simulator.node_launcher import DESCRIPTION_VARIABLE
from simulator.packages import model_script
from simulator.region import ACCOUNT_ID, FakeRegion
from simulator.steps import StepRunner
from simulator.template import template_node

STAGING_DIR = "/root/.amidsl-staging"  # private, and removed after each action
LAUNCHER = str(Path(__file__).with_name("node_launcher.py"))
# An mke2fs older than the node program needs: it reports its version and knows no `-d`.
OLD_MKE2FS = """#!/bin/sh
if [ "$1" = -V ]; then
    echo "mke2fs {version} (28-Dec-2013)"
    echo "        Using EXT2FS Library version {version}"
    exit 0
fi
echo "mke2fs: invalid option -- 'd'" >&2
exit 1
"""

STOP_SECONDS = 60.0  # how long an interrupted node program may take to clean up (as over SSH)


def _repository(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name.startswith("bin/") else 0o100644) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def connect_node(node: FakeNode, region: FakeRegion, ami_tools_url: str) -> None:
    """Give a node its region and the downloads the plans fetch (the tools zip, rbenv, ruby-build)."""
    node.region = region
    node.network.setdefault(ami_tools_url, ami_tools_zip(region.ec2_cert_pem))
    node.network.setdefault(
        RBENV_URL, _repository({"bin/rbenv": model_script("rbenv"), "README.md": b"rbenv"})
    )
    node.network.setdefault(
        RUBY_BUILD_URL,
        _repository({"bin/ruby-build": model_script("ruby-build"), "README.md": b"ruby-build"}),
    )


@dataclass(frozen=True)
class ImageInspection:
    """What a registered image holds: its manifest, its files, and what the bundler left out."""

    image_id: str
    manifest: Manifest | None  # an S3-backed image's bundle manifest; None for an EBS-backed one
    entries: tuple[ImageEntry, ...]
    left_out: tuple[LeftOut, ...]
    layout: tuple[str, ...] = ()  # partition table and boot loader, in words
    # The node program's image hygiene report (native builds): items, host_keys, login_key, added.
    hygiene: dict = field(default_factory=dict)
    # What of the image's boot the simulation modelled rather than made for real (simulator.grub).
    modelled: tuple[str, ...] = ()
    snapshot: tuple[str, int] | None = None  # an EBS-backed image's root snapshot and its blocks read

    @property
    def source(self) -> str:
        """Where the image's content was read from, in words."""
        if self.snapshot is not None:
            snapshot_id, blocks = self.snapshot
            return f"root snapshot {snapshot_id} read back block by block ({blocks} blocks of 512 KiB)"
        parts = len(self.manifest.parts) if self.manifest else 0
        return f"bundle of {parts} part{'' if parts == 1 else 's'} verified and unbundled"

    def paths(self) -> set[str]:
        """Every path in the image."""
        return {entry.path for entry in self.entries}


class SimulatorBackend:
    """The runner's back-end on a FakeNode and FakeRegion."""

    def __init__(
        self,
        node: FakeNode,
        region: FakeRegion,
        settings: AmiSettings,
        progress: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.node = node
        self.progress = progress
        self.region = region
        self.settings = settings
        access, secret, token = configured_credentials(settings) or region.credentials
        self.env = {"AMIDSL_ACCESS_KEY": access, "AMIDSL_SECRET_KEY": secret}
        if token:
            self.env["AMIDSL_SESSION_TOKEN"] = token
        # Where the node program's runs keep its compiled code (simulator.node_launcher), made on first use.
        self.code_cache: str | None = None

    def close(self) -> None:
        """Delete the node program's compiled code."""
        if self.code_cache is not None:
            shutil.rmtree(self.code_cache, ignore_errors=True)
            self.code_cache = None

    def secrets(self) -> list[str]:
        """The secret values of this build (the access key id too: it is shown nowhere), for redaction."""
        keys = ("AMIDSL_ACCESS_KEY", "AMIDSL_SECRET_KEY", "AMIDSL_SESSION_TOKEN")
        values = [self.env.get(name, "") for name in keys]
        key = self.settings.private_key_pem
        return [*values, *([key.reveal()] if key is not None else [])]

    def call_aws(self, action: AwsCall, params: dict[str, Any]) -> dict[str, Any]:
        """Send an API call to the fake region."""
        return self.region.call(action.service, action.operation, params, action.region)

    def pause(self, seconds: float) -> None:
        """Nothing: the fake region's images move on with each poll, not with time."""

    def client(self, service: str, region: str) -> Any:
        """A client of the fake region's account in `region` (EBS calls get the region's strict checks)."""
        if service == "ebs":
            return self.region.strict_client(service, region)
        return self.region.client(service, region)

    def s3_client(self) -> Any:
        """The fake region's S3 client (the controller's HeadObject and PutObject)."""
        return self.region.s3

    def presign_client(self) -> Any:
        """An S3 client whose presigned URLs the node program can reach (loopback HTTP)."""
        return self.region.presign_client()

    def ec2_certificate(self) -> str:
        """The fake region's own EC2 certificate: its RegisterImage opens the EC2 copy of the key."""
        return self.region.ec2_cert_pem

    def run_node_program(self, action: NodeProgram, request: bytes) -> tuple[int, str, str]:
        """Run the node program the install phase shipped (the real code, read from the node's disk).

        It runs on this machine against the node's directory: the volume and destination_dir are mapped
        to the directory (exclusions are paths in the image, so they stay), and mapped back in what the
        program prints. simulator.node_launcher shows it the node's e2fsprogs and full disks.
        """
        if "python3" not in self.node.packages:
            return 127, "", "bash: python3: command not found\n"
        program = self.node.host_path(action.program)
        if not program.is_file():
            message = f"python3: can't open file '{action.program}': [Errno 2] No such file or directory\n"
            return 2, "", message
        data = self._host_request(request)
        interrupted = self.node.faults.ctrl_c_program == action.command
        if interrupted:
            self.node.faults.ctrl_c_program = None  # the user hits Ctrl-C once
        with tempfile.TemporaryDirectory(prefix="amidsl-sim-tools-") as tools:
            process = self._launch(action, data, Path(tools))
            if interrupted:
                self._interrupt_when_under_way(process, data.get("destination_dir", ""))
            try:
                if action.command == "bundle":
                    load_moto_ec2(self.region)  # while the node program bundles in its own process
                out, err = process.communicate()
            except KeyboardInterrupt:
                # Ctrl-C: as over SSH, the program is interrupted and given time to clean up.
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        if interrupted:
            raise KeyboardInterrupt  # what the controller sees of Ctrl-C, once the node program stopped
        stdout, stderr = (self._node_paths(text.decode("utf-8", "replace")) for text in (out, err))
        if action.command == "bundle" and process.returncode == 0:
            self._keep_left_out(json.loads(stdout.strip().splitlines()[-1]))
        return process.returncode, stdout, stderr

    def stream_node_program(self, action: NodeProgram, request: bytes) -> BlockStream:
        """Run the node program (its `blocks` command) and read its block frames as they come.

        With a Ctrl-C or a dropped connection set for the command, it comes once the first block was
        read: the user's Ctrl-C as KeyboardInterrupt in the reader, a dropped connection as the end of
        the output with ssh's status 255."""
        program = self.node.host_path(action.program)
        if "python3" not in self.node.packages or not program.is_file():
            status, _, said = self.run_node_program(action, request)  # says what is missing
            return BlockStream(lambda size: b"", lambda: (status, said))
        faults = self.node.faults
        ctrl_c, dropped = faults.ctrl_c_program == action.command, faults.drop_program == action.command
        tools = tempfile.mkdtemp(prefix="amidsl-sim-tools-")
        process = self._launch(action, self._host_request(request), Path(tools))
        said: list[bytes] = []
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout, process.stderr
        reader = threading.Thread(target=lambda: said.append(stderr.read()), daemon=True)
        reader.start()
        read_so_far, lost = 0, False

        def read(size: int) -> bytes:
            nonlocal read_so_far, lost
            under_way = read_so_far > BLOCK_SIZE  # a first block was read
            if under_way and ctrl_c:
                faults.ctrl_c_program = None  # the user hits Ctrl-C once
                raise KeyboardInterrupt
            if (under_way and dropped) or lost:
                faults.drop_program, lost = None, True  # the connection drops once
                return b""
            data = stdout.read(size)
            read_so_far += len(data)
            return data

        def finish() -> tuple[int, str]:
            if lost:
                process.kill()  # with the connection, the program is gone
            process.wait()
            reader.join()
            shutil.rmtree(tools, ignore_errors=True)
            if lost:
                return 255, "ssh: connection to the node was lost"
            return process.returncode, self._node_paths(b"".join(said).decode("utf-8", "replace"))

        def stop() -> None:
            process.kill()
            finish()

        return BlockStream(read, finish, stop)

    def _host_request(self, request: bytes) -> dict[str, Any]:
        """The request with the node's paths (volume, destination_dir, disk) as this machine's."""
        data = json.loads(request)
        for name in ("volume", "destination_dir", "disk"):
            if name in data:
                data[name] = str(self.node.host_path(data[name]))
        return data

    def _launch(self, action: NodeProgram, data: dict[str, Any], tools: Path) -> subprocess.Popen:
        """Start the node program on the request; its stdout and stderr are pipes."""
        process = subprocess.Popen(
            [sys.executable, "-I", LAUNCHER, str(self.node.host_path(action.program)), action.command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, DESCRIPTION_VARIABLE: json.dumps(self._node_description(tools))},
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(data).encode("utf-8"))
        process.stdin.close()
        process.stdin = None  # written and closed: communicate() must not flush it
        return process

    def _node_paths(self, text: str) -> str:
        """The program's output with this machine's paths under the node's root as node paths."""
        root = re.escape(str(self.node.root))
        return re.sub(root + r"(?![^/\s])", "/", re.sub(root + "(?=/)", "", text))

    def _interrupt_when_under_way(self, process: subprocess.Popen, destination: str) -> None:
        """Send SIGINT (Ctrl-C) to the node program once it is under way: a file of its own in
        destination_dir, or a first part PUT in the region (or it ended first)."""
        before = set(os.listdir(destination)) if destination else set()
        puts = self.region.put_requests
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            made = set(os.listdir(destination)) - before if destination else set()
            if made or self.region.put_requests > puts:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)

    def _node_description(self, tools: Path) -> dict[str, Any]:
        """What the node program sees of the node (simulator.node_launcher): its e2fsprogs and GRUB, full
        disks."""
        node = self.node
        mke2fs: str | None = None
        if "e2fsprogs" in node.packages and "e2fsprogs" in node.versions:
            mke2fs = str(tools / "mke2fs")
            Path(mke2fs).write_text(OLD_MKE2FS.format(version=node.versions["e2fsprogs"]))
            Path(mke2fs).chmod(0o755)
        if self.code_cache is None:
            self.code_cache = tempfile.mkdtemp(prefix="amidsl-sim-code-")
        described: dict[str, Any] = {
            "tools": grub.node_mkimage(node, tools),
            "full": [],
            "code_cache": self.code_cache,
        }
        if "e2fsprogs" not in node.packages or mke2fs:
            described["tools"]["mke2fs"] = mke2fs
        if node.faults.disk_full_under:
            described["full"] = [os.path.realpath(node.host_path(node.faults.disk_full_under))]
        return described

    def _keep_left_out(self, report: dict[str, Any]) -> None:
        """Keep what the node program left out of the image, for inspect_image."""
        # The report names path and reason, not the matching rule: the path stands for it.
        left_out = tuple(LeftOut(path, Reason(reason), path) for path, reason in report.get("left_out", []))
        image = self.node.host_path(f"{self.settings.destination_dir}/{report['prefix']}")
        self.node.last_bundle_report = ImageReport(image, 0, 0, left_out)
        self.node.last_hygiene = {
            "items": report.get("hygiene", {}),
            "host_keys": report.get("host_keys", ""),
            "login_key": report.get("login_key", ""),
            "added": report.get("added", []),
        }

    def run_node_actions(
        self, phase: str, actions: Sequence[tuple[int, Action]], values: dict[str, str]
    ) -> list[ActionRecord]:
        """Run each action's steps on the node; stop at the first failure as `set -e` does."""
        records: list[ActionRecord] = []
        env = {**self.env, **{f"AMIDSL_{k.upper()}": v for k, v in values.items()}}
        for index, action in actions:
            if self.node.faults.ctrl_c_at == (phase, index):
                self.node.faults.ctrl_c_at = None  # the user hits Ctrl-C once
                raise ActionInterrupted(index)
            if self.node.faults.interrupt_at == (phase, index):
                self.node.faults.interrupt_at = None  # the connection drops once; a reconnect works
                raise ActionFailed(index, 255, "ssh: connection to the node was lost", records)
            self.progress(f"  [{phase} {index}] {action.description} ...")
            try:
                staged = self._stage(action, env)
                ran = StepRunner(self.node, {**env, **staged}, self.secrets()).run(node_steps(action))
                status, output = ran.status, ran.output
            except NodeInterrupted as err:
                raise ActionFailed(index, 255, str(err), records) from None
            except KeyboardInterrupt:
                raise ActionInterrupted(index) from None
            finally:
                if self.node.exists(STAGING_DIR):
                    self.node.remove(STAGING_DIR)
            command = "\n".join(render_action(action))
            records.append(
                ActionRecord(
                    phase, index, action.description, command, status, redact(output, self.secrets())
                )
            )
            self.progress(
                f"  [{phase} {index}] {action.description}: {'ok' if status == 0 else f'exit {status}'}"
            )
            if status != 0:
                raise ActionFailed(index, status, output, records)
        return records

    def _stage(self, action: Action, env: dict[str, str]) -> dict[str, str]:
        """Copy the files an action needs from the controller into a private staging directory."""
        staged: dict[str, str] = {}
        for file in references(action).files:
            if file.secret:
                data = self.settings.private_key_pem.reveal().encode()
            elif file.local_path is not None:
                data = Path(file.local_path).read_bytes()
            else:
                continue
            self.node.make_dirs(STAGING_DIR, mode=0o700)
            path = f"{STAGING_DIR}/{file.env_var.lower()}"
            self.node.write_bytes(path, data, mode=0o600)
            staged[file.env_var] = path
        return staged


def load_moto_ec2(region: FakeRegion) -> None:
    """Load moto's EC2, make the region's EC2 state and read the service model moto answers EC2
    requests with, as the fake region's first EC2 call (registering the image) would: about half a
    second of CPU, spent while the node program bundles."""
    with contextlib.suppress(KeyError):  # a region moto does not know fails at that call, as before
        get_backend("ec2")[ACCOUNT_ID][region.name]
        region.ec2.describe_regions(RegionNames=[region.name])  # reads nothing of the build's state


@dataclass
class Simulation:
    """A simulated build: the node, the region, and (once run) the result."""

    node: FakeNode
    region: FakeRegion
    settings: AmiSettings
    result: BuildResult | None = None
    error: BuildError | None = None
    workdir: Path | None = None  # made on first use, for downloaded bundles

    @property
    def transcript(self) -> list[ActionRecord]:
        """Every action that ran, in order, with its status and (redacted) output."""
        if self.result is not None:
            return self.result.transcript
        return self.error.transcript if self.error is not None else []

    @property
    def final_settings(self) -> AmiSettings:
        """The settings as the build left them (with the image id once registered)."""
        return self.result.settings if self.result is not None else self.settings

    @property
    def image_id(self) -> str | None:
        """The registered image's id, if the build got that far."""
        return self.result.image_id if self.result is not None else None

    def inspect_image(self, image_id: str | None = None) -> ImageInspection:
        """Download the image's bundle from the fake S3 (verified and unbundled), or read back its EBS
        snapshot, and list its files."""
        image_id = image_id or self.image_id
        if image_id is None:
            raise ValueError("no image was registered by this simulation")
        image = self.region.ec2.describe_images(ImageIds=[image_id])["Images"][0]
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="amidsl-sim-"))
        target = Path(tempfile.mkdtemp(prefix="bundle-", dir=self.workdir))
        manifest, snapshot, encryption = None, None, ()
        if "ImageLocation" in image:
            manifest, restored = self._restore_bundle(image["ImageLocation"], target)
        else:  # EBS-backed: the root device's snapshot, read back through the EBS direct APIs
            root = next(m for m in image["BlockDeviceMappings"] if m["DeviceName"] == image["RootDeviceName"])
            snapshot_id = root["Ebs"]["SnapshotId"]
            restored = target / "disk"
            blocks = download_snapshot(self.region.strict_client("ebs"), snapshot_id, str(restored))
            snapshot = (snapshot_id, blocks)
            encryption = self._encryption_modelled(snapshot_id)
        entries = tuple(list_image(restored))
        left_out = self.node.last_bundle_report.left_out if self.node.last_bundle_report else ()
        layout = tuple(describe_layout(restored))
        return ImageInspection(
            image_id,
            manifest,
            entries,
            tuple(left_out),
            layout,
            self.node.last_hygiene,
            (*(grub.modelled(self.node) if disk_layout(restored) is not None else ()), *encryption),
            snapshot,
        )

    def _encryption_modelled(self, snapshot_id: str) -> tuple[str, ...]:
        """What of an encrypted snapshot the simulation modelled rather than did (nothing, unencrypted)."""
        (described,) = self.region.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        if not described.get("Encrypted"):
            return ()
        return (
            f"modelled: the snapshot's encryption with {described['KmsKeyId']} (the key ARN's form and "
            "region are checked; not that the key exists, is enabled, or may be used: `amidsl validate "
            "--live` asks KMS)",
        )

    def _restore_bundle(self, location: str, target: Path) -> tuple[Manifest, Path]:
        """Download a bundle from the fake S3, verify and unbundle it: its manifest and the image."""
        bucket, _, key = location.partition("/")
        folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        listing = self.region.s3.list_objects_v2(Bucket=bucket, Prefix=folder)
        for item in listing.get("Contents", []):
            name = item["Key"][len(folder) :]
            if "/" not in name:
                body = self.region.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                (target / name).write_bytes(body)
        manifest_path = target / key.rsplit("/", 1)[-1]
        manifest = verify_bundle(manifest_path, self.settings.certificate_pem)
        restored = unbundle(
            manifest_path,
            self.settings.private_key_pem.reveal(),
            target / "image",
            user_cert_pem=self.settings.certificate_pem,
            key_checked=True,  # as the settings were read
        )
        return manifest, Path(restored)

    def discard_downloads(self) -> None:
        """Delete what inspect_image downloaded and unpacked."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def close(self) -> None:
        """End the node and the region and delete every temporary file they used."""
        self.region.close()
        self.node.close()
        self.discard_downloads()


def configured_credentials(settings: AmiSettings) -> tuple[str, str, str | None] | None:
    """The AWS keys the settings give (access key id, secret key, session token), or None."""
    if not (settings.access_key and settings.secret_key):
        return None
    token = settings.session_token.reveal() if settings.session_token else None
    return settings.access_key, settings.secret_key.reveal(), token


def prepare(
    settings: AmiSettings, node: FakeNode | None = None, region: FakeRegion | None = None, payload_mb: int = 4
) -> Simulation:
    """A node and region ready for the settings: the bucket exists, the signing certificate is known.

    A region made here is the user's account: its account id, and the AWS keys the settings give (they
    stay in this process: the region compares them, nothing sends or prints them)."""
    if region is None:
        region = FakeRegion(
            settings.region,
            node_factory=lambda: template_node(payload_mb=payload_mb),
            account_id=settings.user_id or ACCOUNT_ID,  # an EBS-backed build may name no account
        )
        region.credentials = configured_credentials(settings) or region.credentials
    node = node or template_node(
        payload_mb=payload_mb, admin_user=settings.user if settings.user != "root" else "admin"
    )
    connect_node(node, region, settings.install_source.url or settings.ami_tools_url)
    if settings.s3_bucket and region.bucket_region(settings.s3_bucket) is None:
        region.create_bucket(settings.s3_bucket)
    if settings.certificate_pem and settings.certificate_pem not in region.signing_certificates():
        region.register_signing_certificate(settings.certificate_pem)
    return Simulation(node, region, settings)


def simulate(
    spec: Spec | Plan,
    phases: Sequence[str] | None = None,
    *,
    node: FakeNode | None = None,
    region: FakeRegion | None = None,
    on_error: str = "cleanup",
    progress: Callable[[str], None] = lambda line: None,
    payload_mb: int = 4,
    raise_on_failure: bool = True,
) -> Simulation:
    """Run a spec's (or plan's) phases against a fake node and region; raise BuildError on failure."""
    plan = spec if isinstance(spec, Plan) else build_plan(spec, phases=phases)
    simulation = prepare(plan.settings, node, region, payload_mb)
    backend = SimulatorBackend(simulation.node, simulation.region, plan.settings, progress)
    try:
        simulation.result = run_plan(plan, backend, on_error=on_error, progress=progress)
    except BuildError as error:
        simulation.error = error
        if raise_on_failure:
            raise
    finally:
        backend.close()
    return simulation
