"""`amidsl init`: the starter settings file, made from the settings table, and a throwaway signing pair."""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from amidsl.cli.main import run
from amidsl.live.settings import LIVE_KEYS
from amidsl.settings import REQUIRED, USER_KEYS, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(autouse=True)
def in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AMIDSL_CONFIG", raising=False)


def amidsl(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: (status, stdout, stderr)."""
    status = run(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def filled(text: str, credentials=None) -> str:
    """The starter with the placeholders filled in as a user would."""
    values = {
        '"<image name>"': '"web-{date}"',
        '"<region>"': '"eu-west-1"',
        '"<user id>"': '"1234-5678-9012"',
        '"<s3 bucket>"': '"acme-ami-bundles"',
    }
    if credentials is not None:
        values['"<private key file>"'] = f'"{credentials.key_path}"'
        values['"<certificate file>"'] = f'"{credentials.cert_path}"'
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def test_init_writes_a_starter_that_validation_refuses_until_the_placeholders_are_filled(
    capsys, tmp_path, credentials
):
    status, out, _ = amidsl(capsys, "init")
    assert status == 0 and "wrote amidsl.toml" in out
    starter = (tmp_path / "amidsl.toml").read_text()
    assert set(tomllib.loads(starter)) == {"ami", "live"}
    status, _, err = amidsl(capsys, "validate", "--config", "amidsl.toml")
    assert status == 2
    for name in REQUIRED:
        assert re.search(rf"^  - {name}: ", err, re.MULTILINE), name
    (tmp_path / "amidsl.toml").write_text(filled(starter, credentials))
    for command in ("validate", "plan"):
        status, out, err = amidsl(capsys, command, "--config", "amidsl.toml")
        assert status == 0, err
    assert "image 'web-20" in out


def test_the_starter_names_every_setting_required_ones_given_the_others_commented(capsys, tmp_path):
    amidsl(capsys, "init")
    starter = (tmp_path / "amidsl.toml").read_text()
    ami, live = starter.split("\n[live]\n")
    for name in USER_KEYS:
        given = re.search(rf"^(# )?{name} = ", ami, re.MULTILINE)
        assert given is not None, name
        assert (given.group(1) is None) == (name in REQUIRED), name
    for name in LIVE_KEYS:
        assert re.search(rf"^# {name} = ", live, re.MULTILINE), name


def test_the_starter_says_which_required_settings_an_ebs_build_leaves_out_and_which_it_reads(
    capsys, tmp_path
):
    amidsl(capsys, "init")
    starter = (tmp_path / "amidsl.toml").read_text()

    def comment_of(name: str) -> str:
        block = starter.split(f"\n{name} = ")[0].rsplit("\n\n", 1)[-1]
        return " ".join(line.lstrip("# ") for line in block.splitlines())

    assert 'leave it out with backing = "ebs"' in comment_of("s3_bucket")
    # An EBS build reads user_id too: it checks the credentials' account and launch_permissions with it.
    assert "required only for an S3 bundle" in comment_of("user_id")
    assert "leave it out" not in comment_of("user_id")


def test_the_starter_names_readme_sections_instead_of_linking_to_anchors_it_does_not_have(capsys, tmp_path):
    amidsl(capsys, "init")
    starter = (tmp_path / "amidsl.toml").read_text()
    assert "](#" not in starter
    assert "image hygiene (README)" in starter


def test_the_starter_s_commented_defaults_are_valid_settings(capsys, tmp_path, credentials):
    amidsl(capsys, "init")
    text = filled((tmp_path / "amidsl.toml").read_text(), credentials)
    # Uncomment every optional [ami] line that shows a value rather than a shape to fill in.
    ami = text.split("\n[live]\n")[0]
    ami = re.sub(r"^# (\w+ = (?!.*\.\.\.).*)$", r"\1", ami, flags=re.MULTILINE)
    values = tomllib.loads(ami)["ami"] | {"image_name": "web"}  # no variables: resolved as it is
    assert len(values) > len(REQUIRED) + 30
    resolve(values)  # raises SettingsError listing any value that is not a valid setting


def test_init_leaves_an_existing_file_alone_unless_forced(capsys, tmp_path):
    (tmp_path / "amidsl.toml").write_text("# mine\n")
    status, out, err = amidsl(capsys, "init")
    assert status == 2 and out == ""
    assert "amidsl.toml: already there; amidsl init leaves it alone (pass --force" in err
    assert (tmp_path / "amidsl.toml").read_text() == "# mine\n"
    status, _, _ = amidsl(capsys, "init", "--force")
    assert status == 0 and "[ami]" in (tmp_path / "amidsl.toml").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["amidsl.toml"]  # no work folder left behind


def test_init_writes_where_output_says(capsys, tmp_path):
    (tmp_path / "ci").mkdir()
    status, out, _ = amidsl(capsys, "init", "-o", "ci/build.toml")
    assert status == 0 and (tmp_path / "ci" / "build.toml").is_file()
    assert "amidsl validate --config ci/build.toml" in out
    status, _, err = amidsl(capsys, "init", "-o", "nowhere/build.toml")
    assert status == 2 and "the folder 'nowhere' does not exist" in err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_signing_key_makes_a_private_key_and_its_certificate_with_the_command_shown(capsys, tmp_path):
    status, out, _ = amidsl(capsys, "init", "--signing-key")
    assert status == 0
    assert "openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365" in out
    assert "-keyout signing-key.pem -out signing-cert.pem" in out
    assert "aws iam upload-signing-certificate --certificate-body file://signing-cert.pem" in out
    assert (tmp_path / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    assert "BEGIN CERTIFICATE" in (tmp_path / "signing-cert.pem").read_text()
    (tmp_path / "amidsl.toml").write_text(filled((tmp_path / "amidsl.toml").read_text()))
    status, out, err = amidsl(capsys, "validate", "--config", "amidsl.toml")
    assert status == 0, err  # the pair parses, and the key and the certificate belong together
    assert "BEGIN" not in out + err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_signing_key_refuses_to_replace_a_key_unless_forced(capsys, tmp_path):
    (tmp_path / "signing-key.pem").write_text("my key\n")
    status, _, err = amidsl(capsys, "init", "--signing-key")
    assert status == 2 and "signing-key.pem: already there" in err
    assert (tmp_path / "signing-key.pem").read_text() == "my key\n"
    assert not (tmp_path / "amidsl.toml").exists()  # nothing half-done


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_signing_key_beside_a_file_in_a_folder_shows_commands_that_work_from_here(capsys, tmp_path):
    (tmp_path / "sub").mkdir()
    status, out, _ = amidsl(capsys, "init", "-o", "sub/x.toml", "--signing-key")
    assert status == 0 and (tmp_path / "sub" / "signing-key.pem").is_file()
    assert "-keyout sub/signing-key.pem -out sub/signing-cert.pem" in out
    assert "aws iam upload-signing-certificate --certificate-body file://sub/signing-cert.pem" in out
    assert "-keyout signing-key.pem" not in out and "file://signing-cert.pem" not in out


def test_init_to_standard_output_writes_the_starter_there_and_no_file(capsys, tmp_path):
    status, out, err = amidsl(capsys, "init", "-o", "-")
    assert status == 0, err
    assert list(tmp_path.iterdir()) == []
    assert amidsl(capsys, "init")[0] == 0
    assert out == (tmp_path / "amidsl.toml").read_text()  # exactly the file, nothing more


def test_init_to_standard_output_refuses_a_signing_key_it_could_not_put_beside_the_file(capsys, tmp_path):
    status, out, err = amidsl(capsys, "init", "-o", "-", "--signing-key")
    assert (status, out) == (2, "")
    assert "--signing-key" in err and "-o FILE" in err
    assert list(tmp_path.iterdir()) == []
