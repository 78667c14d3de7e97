"""Settings and checks shared by the offline live build tests (the node is the sshd fixture)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from amidsl.bundle import verify_bundle
from amidsl.live.build import build_on_host
from amidsl.live.settings import resolve_live
from amidsl.live.ssh import SshNode
from amidsl.model.plan import Spec
from amidsl.run.runner import BuildResult

NODE_PHASES = ("install", "configure", "ami-bundle", "ami-upload", "cleanup")
BUCKET = "amidsl-offline-bundles"
ACCOUNT = "123456789012"  # moto's account


def aws_client(service: str, endpoint: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="AKIAAMIDSLTESTREADER",
        aws_secret_access_key="reader",
        config=Config(s3={"addressing_style": "path"}),
    )


def build_settings(tmp_path: Path, node, fake_tools, credentials, login: str, endpoint: str) -> dict:
    """[ami] and [live] for one build; every node directory is inside the node's temporary directory."""
    run = node.root / f"run-{secrets.token_hex(4)}"
    ami = {
        "bundler": "ami-tools",
        "image_name": f"amidsl offline test {secrets.token_hex(4)}",
        "image_description": "built over SSH on 127.0.0.1",
        "region": "us-east-1",
        "user_id": ACCOUNT,
        "s3_bucket": BUCKET,
        "s3_path": f"images/{run.name}",
        "access_key": "AKIAAMIDSLTEST" + secrets.token_hex(3).upper(),
        "secret_key": "sk/" + secrets.token_urlsafe(30),
        "private_key_source": {"local_file": str(credentials.key_path)},
        "certificate_source": {"local_file": str(credentials.cert_path)},
        "install_strategy": "none",
        "install_source": {"local_file": str(fake_tools.zip_path)},
        "install_dir": f"{run}/ami-tools",
        "credential_dir": f"{run}/credentials",
        "destination_dir": f"{run}/bundle",
        "inherit": False,
    }
    live = {
        "host": "127.0.0.1",
        "port": node.port,
        "user": login,
        "identity_file": str(node.client_key),
        "known_hosts": str(node.known_hosts),
        "ssh_config": str(tmp_path / "no-ssh-config"),
        "endpoint_url": endpoint,
        "wait_seconds": 30,
    }
    return {"ami": ami, "live": live}


@dataclass
class RecordedBuild:
    """A build on the sshd node: its result, its progress lines and the command lines amidsl sent."""

    result: BuildResult
    progress: list[str]
    commands: list[str]


def build_over_ssh(config: dict, spec: Spec | None = None) -> RecordedBuild:
    """Run every phase of `config` on the sshd node on 127.0.0.1, recording progress and commands."""
    progress: list[str] = []
    opened: list[SshNode] = []

    def open_node(target):
        opened.append(SshNode(target))
        return opened[-1]

    result = build_on_host(
        "127.0.0.1",
        config["ami"],
        spec=spec,
        live=resolve_live(config["live"]),
        progress=progress.append,
        node_factory=open_node,
    )
    return RecordedBuild(result, progress, opened[0].commands)


def ctrl_c_build(config: dict, tmp_path: Path, when: Callable[[str], bool]) -> tuple[int, str]:
    """Run `amidsl build` on the config; at the first output line `when` accepts, send it SIGINT (what
    Ctrl-C in the terminal sends). Return its exit status and standard error."""
    path = write_toml(tmp_path / "build.toml", config)
    build = subprocess.Popen(
        [sys.executable, "-m", "amidsl", "build", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert build.stdout is not None
    for line in build.stdout:
        if when(line):
            build.send_signal(signal.SIGINT)
            break
    _, stderr = build.communicate(timeout=120)
    return build.returncode, stderr


def write_toml(path: Path, tables: dict) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def secret_values(config: dict, credentials) -> list[str]:
    """What must appear nowhere: the AWS keys (the access key id too, as the README promises), the
    session token and the private key's body."""
    key_body = [line for line in credentials.key_pem.splitlines() if "PRIVATE KEY" not in line]
    token = config["ami"].get("session_token")  # native builds only: ec2-upload-bundle cannot use one
    keys = [config["ami"]["access_key"], config["ami"]["secret_key"]]
    return [*keys, *([token] if token else []), *key_body]


def assert_no_secret(texts: list[str], secret_list: list[str]) -> None:
    for text in texts:
        for secret in secret_list:
            assert secret not in text


def download_and_verify(endpoint: str, settings, into: Path):
    """Fetch the bundle from the server's S3 and verify it: signature, part list and digests."""
    s3 = aws_client("s3", endpoint)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{settings.s3_path}/")
    names = sorted(obj["Key"] for obj in listed.get("Contents", []))
    for key in names:
        (into / key.rsplit("/", 1)[-1]).write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest = verify_bundle(into / f"{settings.prefix}.manifest.xml", settings.certificate_pem)
    return names, manifest


def unbundle_with_cli(manifest: Path, key: Path, cert: Path, into: Path) -> Path:
    """Restore a downloaded bundle with `amidsl unbundle`; the restored image file."""
    argv = [sys.executable, "-m", "amidsl", "unbundle", "--manifest", str(manifest), "--privkey", str(key)]
    argv += ["--cert", str(cert), "--destination", str(into)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return into / "image"


def no_credentials_in(credential_dir: str) -> bool:
    """The credential directory is gone, or empty (what the on-error removal leaves for a resume)."""
    path = Path(credential_dir)
    return not path.exists() or not any(path.iterdir())


def node_has_no_credentials(node, settings, key_pem: str) -> None:
    assert not Path(settings.credential_dir).exists()
    assert not Path(settings.install_dir).exists()
    leftovers = list((node.root / "tmp").glob("amidsl.*"))
    body = key_pem.splitlines()[1]
    for path in [*node.root.rglob("*"), *(p for d in leftovers for p in Path(d).rglob("*"))]:
        if path.is_file() and not path.is_symlink():
            assert body not in path.read_text(errors="replace"), f"key material left in {path}"
    assert leftovers == [], f"temporary directories left on the node: {leftovers}"
