"""`amidsl init`: a commented starter settings file, and on request a throwaway signing key and certificate.

The starter's [ami] table is generated from the settings table (amidsl/settings/starter.py), its [live]
table from LiveSettings, so neither can drift from what amidsl reads. Nothing is overwritten without
--force, and nothing is half-done: every file is made in a private folder beside the target first and
moved into place only when all of them are ready.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from amidsl import __version__
from amidsl.cli.table import FAILED, STANDARD_OUTPUT, CommandError
from amidsl.live.settings import LIVE_TEXT_KEYS, LiveSettings
from amidsl.settings.starter import ami_starter, comment, toml_value
from amidsl.settings.variables import KNOWN

KEY_FILE = "signing-key.pem"
CERT_FILE = "signing-cert.pem"


def openssl_command(key: Path | str = KEY_FILE, cert: Path | str = CERT_FILE) -> tuple[str, ...]:
    """The openssl command making an RSA key without a passphrase (`key`) and its self-signed
    certificate (`cert`): the pair ec2-bundle-vol's -k and -c take."""
    return (
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "365",
        "-subj",
        "/CN=amidsl throwaway signing certificate",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )


OPENSSL_SECONDS = 120


def starter(config_name: str, signing_pair: bool) -> str:
    """The whole starter settings file; with `signing_pair` it names the pair `init` made beside it."""
    head = [
        "# amidsl settings: [ami] describes the image, [live] how `amidsl build` reaches the node and AWS.",
        f"# Written by `amidsl init` (amidsl {__version__}) from amidsl's settings table.",
        "#",
        "# Replace each <...> placeholder, then check the settings and preview the build:",
        f"#   amidsl validate --config {config_name}",
        f"#   amidsl plan --config {config_name}",
        "#",
        *comment(
            f"String settings may use variables, worked out once per run: {KNOWN} ({{{{ and }}}} for "
            'literal braces), e.g. image_name = "web-{date}". More --config files after this one, and '
            "--set KEY=VALUE, override its values key by key."
        ),
        "",
    ]
    given = {}
    if signing_pair:
        given = {
            "private_key_source": f'{{ local_file = "{KEY_FILE}" }}',
            "certificate_source": f'{{ local_file = "{CERT_FILE}" }}',
        }
    return "\n".join([*head, ami_starter(given), live_starter()]) + "\n"


def live_starter() -> str:
    """The starter's [live] table: every key commented out with its default."""
    lines = [
        "[live]",
        "# How a live build logs in, which AWS profile or endpoint it uses and what node --launch starts;",
        '# every key is optional (the README\'s "Live builds" says what each one does).',
    ]
    for field in dataclasses.fields(LiveSettings):
        if field.default is not None:
            value = toml_value(field.default)
        else:
            value = '"..."' if field.name in LIVE_TEXT_KEYS else "..."
        lines.append(f"# {field.name} = {value}")
    return "\n".join(lines)


def init(*, output: str, force: bool, signing_key: bool) -> None:
    """Write a commented starter settings file (and, on request, a throwaway signing pair beside it)."""
    if output == STANDARD_OUTPUT:
        if signing_key:
            raise CommandError(
                "-o -: --signing-key makes the key and certificate beside the settings file, and standard "
                "output has no folder; give -o FILE (e.g. -o amidsl.toml), or leave out --signing-key"
            )
        print(starter("amidsl.toml", False), end="")
        return
    target = Path(output)
    folder = target.parent
    if not folder.is_dir():
        raise CommandError(f"-o {output}: the folder {str(folder)!r} does not exist; create it first")
    made = [target.name, *((KEY_FILE, CERT_FILE) if signing_key else ())]
    existing = [name for name in made if (folder / name).exists() or (folder / name).is_symlink()]
    if existing and not force:
        raise CommandError(
            f"{', '.join(str(folder / name) for name in existing)}: already there; amidsl init leaves it "
            "alone (pass --force to overwrite, or -o FILE to write elsewhere)"
        )
    if signing_key and shutil.which("openssl") is None:
        raise CommandError(
            "--signing-key needs openssl, which is not on PATH; install it, or make the pair where it is: "
            f"{shlex.join(openssl_command(folder / KEY_FILE, folder / CERT_FILE))}"
        )
    work = Path(tempfile.mkdtemp(prefix=".amidsl-init-", dir=folder))  # 0700: the key is private there
    try:
        if signing_key:
            make_signing_pair(work)
        (work / target.name).write_text(starter(target.name, signing_key), encoding="utf-8")
        for name in made:
            os.replace(work / name, folder / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {target}")
    if signing_key:
        # Paths as seen from where amidsl ran, so that both commands work pasted as they are.
        key, cert = folder / KEY_FILE, folder / CERT_FILE
        print(
            f"made a throwaway signing pair in {folder}: {KEY_FILE} (the private key, mode 0600) and "
            f"{CERT_FILE}, with\n  {shlex.join(openssl_command(key, cert))}\n"
            "EC2 checks a bundle's signature against your account's signing certificates; upload the "
            "certificate once:\n"
            f"  aws iam upload-signing-certificate --certificate-body {shlex.quote(f'file://{cert}')}"
        )
    print(f"next: replace the <...> placeholders in {target}, then: amidsl validate --config {target}")


def make_signing_pair(folder: Path) -> None:
    """Run openssl_command() in `folder`: the key (mode 0600) and its certificate; CommandError on failure."""
    key = folder / KEY_FILE
    # Created private before openssl writes it, whatever the umask and the openssl version.
    os.close(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        run = subprocess.run(
            openssl_command(), cwd=folder, capture_output=True, text=True, timeout=OPENSSL_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CommandError(
            f"--signing-key: openssl could not run ({err.__class__.__name__})", FAILED
        ) from None
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or ["no message"])[-1]
        raise CommandError(f"--signing-key: openssl failed ({reason}); nothing was written", FAILED)
    os.chmod(key, 0o600)
