"""A real node and a real (local) AWS for the offline live build: OpenSSH sshd and moto's server, both on
127.0.0.1, plus the ec2-ami-tools stand-ins the node unpacks from a zip the test builds.

This machine is the node, so everything the node does stays in a temporary directory: the scripts install
into it, the fake ec2-bundle-vol bundles a small fixed volume directory in it (never /), and the node's
package manager is a recorder (`apt-get` would reach the network). The node also records, on its side,
every bash command line and every script bash ran, so the test compares them with `amidsl script`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import amidsl
from amidsl.model.steps import CREATED_RECORD, created_marker
from tests.conftest import make_key_and_cert

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Node:
    """The sshd node: where it listens, how to trust and log in to it, and what it recorded."""

    port: int
    known_hosts: Path
    client_key: Path
    root: Path  # the node's own temporary directory (readable by a throwaway login user)
    records: Path
    volume: Path
    log: Path

    def scripts_run(self) -> list[str]:
        """The text of every script bash ran on the node, in order."""
        return [p.read_text() for p in sorted(self.records.glob("script-*.sh"))]

    def ssh_command_lines(self) -> list[str]:
        """Every command line the node's sshd received (SFTP sessions left out), in order."""
        log = self.records / "ssh-commands.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line != SFTP_SERVER]

    def bash_command_lines(self) -> list[str]:
        """Every bash command line the node ran (argv joined by spaces)."""
        log = self.records / "bash-argv.log"
        return log.read_text().splitlines() if log.exists() else []

    def forget_records(self) -> None:
        for path in self.records.iterdir():
            path.unlink()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4) == b"SSH-":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not start: {log.read_text()}")


FAKE_BASH = """#!/bin/bash
# The test node's bash: records each command line and each amidsl script it runs, then runs /bin/bash.
printf '%s\\n' "$*" >> {records}/bash-argv.log
case "$#:$1" in
  1:*/amidsl.*/*.sh) cp -- "$1" "{records}/script-$(date +%s%N).sh" ;;
esac
exec /bin/bash "$@"
"""

RECORD_COMMAND = """#!/bin/bash
# sshd's ForceCommand on the test node: records each command line the node receives, then runs it.
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> {records}/ssh-commands.log
exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
"""

# The node's searches of its own root (the ami-tools strategy's `find / \\( ! -fstype ... \\) -prune -o
# \\( -path ... \\) -print0 -prune`, for ec2-bundle-vol's -e and -i) run over the test volume instead, which
# is what the stand-in ec2-bundle-vol images: a pattern rooted at / is rooted at the volume, the paths
# come back as the image's, and the volume (a plain directory) is not pruned by filesystem type. Every
# other find runs as it is.
FAKE_FIND = """#!{python}
import os, subprocess, sys

args, volume = sys.argv[1:], {volume!r}
if "-fstype" not in args:
    os.execv("/usr/bin/find", ["find", *args])
root, rest = args[0], args[1:]
rest = rest[rest.index("-o") + 1 :]  # the volume's filesystem type does not matter: no pruning by it
rest = [volume + word if previous == "-path" and word.startswith("/") else word
        for previous, word in zip(["", *rest], rest)]
found = subprocess.run(["/usr/bin/find", volume + root.rstrip("/"), *rest], stdout=subprocess.PIPE)
out = sys.stdout.buffer
for path in found.stdout.split(b"\\0")[:-1]:
    out.write(path[len(volume):] + b"\\0")
sys.exit(found.returncode)
"""

FAKE_APT_GET = """#!/bin/sh
# The test node's package manager: records what it was asked to install (no network in tests).
echo "$*" >> {records}/apt-get.log
"""


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """An OpenSSH sshd on 127.0.0.1 with its own config, keys and fake package manager."""
    if os.geteuid() != 0:
        pytest.skip("the sshd node runs as root (the phases install root-owned files): run the tests as root")
    if not os.path.exists(SSHD) or not os.path.exists(SFTP_SERVER) or shutil.which("unzip") is None:
        pytest.skip("needs openssh-server and unzip (.ci/run installs them)")
    private = tmp_path_factory.mktemp("sshd")
    # A throwaway login user must read authorized_keys and run the fake tools: a world-readable dir.
    root = Path(tempfile.mkdtemp(prefix="amidsl-node-"))
    root.chmod(0o755)
    records, fakebin, volume = root / "records", root / "bin", root / "volume"
    for path in (records, fakebin, root / "home", root / "tmp", volume / "etc", volume / "srv" / "www"):
        path.mkdir(parents=True)
    records.chmod(0o777)
    (root / "tmp").chmod(0o1777)  # the node's own /tmp: what the build leaves there is checkable
    (fakebin / "bash").write_text(FAKE_BASH.format(records=records))
    (fakebin / "apt-get").write_text(FAKE_APT_GET.format(records=records))
    (fakebin / "find").write_text(FAKE_FIND.format(python=sys.executable, volume=str(volume)))
    (root / "record-command").write_text(RECORD_COMMAND.format(records=records))
    (root / "record-command").chmod(0o755)
    for tool in fakebin.iterdir():
        tool.chmod(0o755)
    (volume / "etc" / "hostname").write_text("web-1\n")
    (volume / "srv" / "www" / "index.html").write_text("<h1>hello from the image</h1>\n")

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", private / "host_key"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", private / "client_key"], check=True)
    authorized = root / "authorized_keys"
    shutil.copy(private / "client_key.pub", authorized)
    authorized.chmod(0o644)
    port = free_port()
    log = private / "sshd.log"
    config = private / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {private / 'host_key'}",
                f"PidFile {private / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                # Every session (SFTP included, hence the external server) goes through the recorder.
                f"Subsystem sftp {SFTP_SERVER}",
                f"ForceCommand {root / 'record-command'}",
                # The node's commands find the recording bash and apt-get first; HOME keeps the login
                # shell off this machine's own ~/.bashrc (the node is a clean machine).
                f"SetEnv PATH={fakebin}:{SYSTEM_PATH} HOME={root / 'home'} TMPDIR={root / 'tmp'}",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    # sshd's privilege separation directory (the service normally creates it at boot).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-e"], stderr=log.open("w"))
    try:
        _wait_for_port(port, process, log)
        public_host_key = (private / "host_key.pub").read_text().split()
        known_hosts = private / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {public_host_key[0]} {public_host_key[1]}\n")
        yield Node(port, known_hosts, private / "client_key", root, records, volume, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        forget_created_markers(root)


def forget_created_markers(root: Path) -> None:
    """The node is this machine: drop amidsl's markers for the node's directories (a failed build's
    stay behind), and the state directory when nothing else is in it."""
    record = Path(CREATED_RECORD)
    prefix = created_marker(f"{root}/").rsplit("/", 1)[1]
    for marker in record.glob("*"):
        if marker.name.startswith(prefix):
            shutil.rmtree(marker, ignore_errors=True)
    for folder in (record, record.parent):
        with contextlib.suppress(OSError):  # not empty (another build's markers) or not there
            folder.rmdir()


@pytest.fixture(scope="session")
def sudo_user(node: Node) -> Iterator[str]:
    """A throwaway login user with passwordless sudo (and the node's PATH under sudo)."""
    if shutil.which("sudo") is None or shutil.which("useradd") is None:
        pytest.skip("needs sudo and useradd")
    name = f"amidsl{secrets.token_hex(4)}"
    home = node.root / "home"
    subprocess.run(
        ["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/bash", name], check=True
    )
    sudoers = Path(f"/etc/sudoers.d/{name}")
    try:
        # sshd without PAM refuses a locked account ("!"); "*" only disables password logins.
        subprocess.run(["usermod", "-p", "*", name], check=True)
        sudoers.write_text(
            f"{name} ALL=(root) NOPASSWD: ALL\n"
            f'Defaults:{name} secure_path="{node.root / "bin"}:{SYSTEM_PATH}"\n'
        )
        sudoers.chmod(0o440)
        yield name
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def sudo_user_or_root(request):
    """Map a test parameter to a login user (the sudo user fixture is only made when asked for)."""

    def choose(login: str) -> str:
        return "root" if login == "root" else request.getfixturevalue("sudo_user")

    return choose


@pytest.fixture(scope="module")
def ec2_certificate_file(tmp_path_factory) -> Path:
    """Stands in for EC2's certificate (moto does not decrypt the bundle key)."""
    _, cert_pem = make_key_and_cert("EC2 (test)")
    path = tmp_path_factory.mktemp("ec2") / "cert-ec2.pem"
    path.write_text(cert_pem)
    return path


@pytest.fixture
def bucket(aws_endpoint: str) -> str:
    """The bundle bucket, in us-east-1 on the moto server, made for each test that has none.

    The server shares moto's backends with this process, and every in-process moto (the simulator's
    mock_aws) resets them when it starts: a bucket made once per session is gone after such a test.
    """
    from tests.live.node_settings import BUCKET, aws_client

    s3 = aws_client("s3", aws_endpoint)
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    return BUCKET


FAKE_BUNDLE_VOL = '''#!{python}
"""Test stand-in for ec2-bundle-vol: amidsl's bundle code over the node's fixed test volume (never /)."""
import argparse, json, os, sys
from pathlib import Path

sys.path.insert(0, {source!r})
from amidsl.bundle import build_image, bundle_image

VOLUME = {volume!r}
RECORDS = {records!r}
TOOLS = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser()
for flag in ("-k", "-c", "-u", "-r", "-e", "-d", "-p"):
    parser.add_argument(flag, required=True)
parser.add_argument("-i", default="")
parser.add_argument("-s", type=int)
parser.add_argument("--partition", choices=("none",), required=True)
parser.add_argument("--no-inherit", action="store_true")
parser.add_argument("--batch", action="store_true")
args = parser.parse_args()
key = os.stat(args.k)
with open(os.path.join(RECORDS, "bundle-vol.json"), "w") as out:
    json.dump({{"argv": sys.argv[1:], "key_mode": key.st_mode & 0o777, "key_uid": key.st_uid,
               "amitool_home": os.environ.get("EC2_AMITOOL_HOME"), "cwd": os.getcwd()}}, out)
destination = Path(args.d)
image = destination / args.p
print(f"Copying {{VOLUME}} into the image...")
includes = [i for i in args.i.split(",") if i]
build_image(VOLUME, image, size_mb=args.s, exclusions=args.e.split(","), includes=includes)
print("Bundling image file...")
manifest = bundle_image(
    image, destination, prefix=args.p, user_id=args.u,
    user_cert_pem=Path(args.c).read_bytes(), user_private_key_pem=Path(args.k).read_bytes(),
    ec2_cert_pem=(TOOLS / "etc/ec2/amitools/cert-ec2.pem").read_bytes(), arch=args.r,
)
print(f"Created {{args.p}}.manifest.xml with {{len(manifest.parts)}} part(s)")
'''

FAKE_UPLOAD_BUNDLE = '''#!{python}
"""Test stand-in for ec2-upload-bundle: parts, then the manifest, to the S3 at --url (ACL aws-exec-read)."""
import argparse, sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import boto3
from botocore.config import Config

parser = argparse.ArgumentParser()
for flag in ("-b", "-m", "-a", "-s", "--region", "--url"):
    parser.add_argument(flag, required=True)
parser.add_argument("-t")
parser.add_argument("--retry", action="store_true")
parser.add_argument("--batch", action="store_true")
args = parser.parse_args()
bucket, _, prefix = args.b.partition("/")
s3 = boto3.client(
    "s3", endpoint_url=args.url, region_name=args.region, aws_access_key_id=args.a,
    aws_secret_access_key=args.s, aws_session_token=args.t, config=Config(s3={{"addressing_style": "path"}}),
)
manifest = Path(args.m)
parts = [p.findtext("filename") for p in ElementTree.parse(manifest).getroot().iter("part")]
for name in [*parts, manifest.name]:
    key = f"{{prefix}}/{{name}}" if prefix else name
    s3.put_object(Bucket=bucket, Key=key, Body=(manifest.parent / name).read_bytes(), ACL="aws-exec-read")
    print(f"Uploaded {{name}}")
print("Uploaded manifest to", f"{{args.b}}/{{manifest.name}}", "(session token given)" if args.t else "")
'''


FAKE_RUBY = """#!/bin/sh
# Test stand-in for Ruby: the fake tools are Python; only amidsl's version check runs `ruby -e`.
[ "$1" = "-e" ] && echo "Ruby 2.7.8"
"""


@dataclass(frozen=True)
class FakeTools:
    """The ec2-ami-tools stand-in zip and the EC2 certificate its bundles are encrypted for."""

    zip_path: Path
    ec2_key_pem: str
    ec2_cert_pem: str


@pytest.fixture(scope="session")
def fake_tools(node: Node, aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> FakeTools:
    """An `ec2-ami-tools-1.5.99.zip` whose bin/ tools are Python scripts over amidsl's bundle code."""
    ec2_key, ec2_cert = make_key_and_cert("ec2 test certificate")
    source = str(Path(amidsl.__file__).resolve().parents[1])
    tools = {
        "bin/ec2-bundle-vol": FAKE_BUNDLE_VOL.format(
            python=sys.executable, source=source, volume=str(node.volume), records=str(node.records)
        ),
        "bin/ec2-upload-bundle": FAKE_UPLOAD_BUNDLE.format(python=sys.executable),
        "etc/ec2/amitools/cert-ec2.pem": ec2_cert,
        # The node has no Ruby: these answer the plan's Ruby check and version query.
        "bin/ruby": FAKE_RUBY,
        "bin/ec2-ami-tools-version": "#!/bin/sh\necho 1.5.99\n",
    }
    path = tmp_path_factory.mktemp("tools") / "ec2-ami-tools.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in tools.items():
            info = zipfile.ZipInfo(f"ec2-ami-tools-1.5.99/{name}")
            info.external_attr = (0o755 if name.startswith("bin/") else 0o644) << 16
            archive.writestr(info, text)
    return FakeTools(path, ec2_key, ec2_cert)
