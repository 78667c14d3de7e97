"""The SSH executor against a faked paramiko: host keys, login, failing and dropped commands, secrets.

Every test checks what a user relies on: the build stops with a message naming the cause and the fix,
credentials are removed from the node (or the message says where they may remain), and no secret is
ever on a command line the node saw.
"""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from amidsl.crate import server_spec
from amidsl.live.aws import AwsCredentials
from amidsl.live.build import build_on_host
from amidsl.live.settings import LiveSettings
from amidsl.live.ssh import HostKeyError, NodeConnectionError, SshNode, fingerprint
from amidsl.model.actions import Exec, PhasePlan, RuntimeValue
from amidsl.model.plan import Plan, build_plan, group_spec
from amidsl.render.shell import render_script
from amidsl.run.runner import BuildError, BuildInterrupted
from amidsl.secrets import Secret
from amidsl.strategies.ami_tools import credential_removal
from tests.live.fake_paramiko import CTRL_C, FakeNode, PhaseRun

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKENvalue0123456789"
IMAGE_ID = "ami-0123456789abcdef0"
S3_ERROR = "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>{key_id}</AWSAccessKeyId></Error>"


class FakeAws:
    """The AWS side: fixed credentials for the node's tools, a RegisterImage answer, an available image."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.live = LiveSettings()  # AWS's own endpoints (no endpoint_url)

    def credentials(self) -> AwsCredentials:
        # Long-term keys: ec2-upload-bundle cannot use temporary ones (it drops the token under SigV4).
        return AwsCredentials(ACCESS_KEY, Secret(SECRET_KEY))

    def call_action(self, action, params):
        self.calls.append(action.operation)
        if action.operation == "DescribeImages":
            return {"Images": [{"ImageId": IMAGE_ID, "State": "available"}]}
        return {"ImageId": IMAGE_ID}


@pytest.fixture(scope="module")
def host_key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)


@pytest.fixture
def node(host_key) -> FakeNode:
    return FakeNode(host_key)


def live(tmp_path: Path, **changes) -> LiveSettings:
    return LiveSettings(
        **{
            "user": "root",
            "known_hosts": str(tmp_path / "known_hosts"),
            "ssh_config": str(tmp_path / "no-ssh-config"),
            **changes,
        }
    )


def remember(tmp_path: Path, key: paramiko.PKey) -> None:
    (tmp_path / "known_hosts").write_text(f"node.example {key.get_name()} {key.get_base64()}\n")


def build(
    node: FakeNode, raw_settings, settings: LiveSettings, phases=None, on_error="cleanup", progress=None
):
    return build_on_host(
        "node.example",
        raw_settings,
        live=settings,
        phases=phases,
        on_error=on_error,
        progress=progress or (lambda line: None),
        aws=FakeAws(),
        node_factory=lambda target: SshNode(target, client_factory=node.client),
    )


def secrets_of(credentials) -> list[str]:
    body = [line for line in credentials.key_pem.splitlines() if "PRIVATE KEY" not in line]
    return [ACCESS_KEY, SECRET_KEY, TOKEN, *body]


def assert_no_secret_on_command_lines(node: FakeNode, credentials) -> None:
    assert node.commands
    for command in node.commands:
        for secret in secrets_of(credentials):
            assert secret not in command


def test_an_unknown_host_key_is_refused_with_its_fingerprint_before_anything_runs(
    node, host_key, raw_settings, tmp_path
):
    with pytest.raises(HostKeyError) as caught:
        build(node, raw_settings, live(tmp_path))
    message = str(caught.value)
    assert "is not in" in message and fingerprint(host_key) in message and "--trust-new-host-key" in message
    assert node.commands == [] and node.uploads == []


def test_trust_on_first_use_accepts_a_new_key_and_remembers_it(node, host_key, raw_settings, tmp_path):
    other = "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    (tmp_path / "known_hosts").write_text(other)  # an existing file, its last line without a newline
    build(node, raw_settings, live(tmp_path, trust_on_first_use=True), phases=["install"])
    lines = (tmp_path / "known_hosts").read_text().splitlines()
    assert lines == [other, f"node.example ssh-rsa {host_key.get_base64()}"]
    build(node, raw_settings, live(tmp_path), phases=["install"])  # known now: no opt-in needed
    assert node.connections == 2


def test_a_changed_host_key_is_refused_even_with_trust_on_first_use(node, raw_settings, tmp_path):
    remember(tmp_path, paramiko.RSAKey.generate(1024))
    with pytest.raises(HostKeyError) as caught:
        build(node, raw_settings, live(tmp_path, trust_on_first_use=True))
    message = str(caught.value)
    assert (
        message.startswith("HOST KEY CHANGED for node.example") and "ssh-keygen -R 'node.example'" in message
    )
    assert node.commands == []


def test_an_authentication_failure_names_the_user_and_the_fix(node, host_key, raw_settings, tmp_path):
    remember(tmp_path, host_key)
    node.accept_login = False
    with pytest.raises(NodeConnectionError, match=r"authentication as 'admin' to node.example .* failed"):
        build(node, raw_settings, live(tmp_path, user="admin"))


def test_a_full_build_runs_each_phase_as_its_rendered_script_with_secrets_only_on_stdin(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    result = build(node, raw_settings, live(tmp_path))
    assert result.image_id == IMAGE_ID
    spec = server_spec(raw_settings)
    node_phases = ["install", "configure", "ami-bundle", "ami-upload", "cleanup"]
    assert node.scripts() == [(p, render_script(build_plan(spec, phases=[p]))) for p in node_phases]
    # The key travelled once, by SFTP, private from the first byte, and its temporary copy is gone.
    staged = [(path, mode) for path, mode, data in node.uploads if credentials.key_pem.encode() == data]
    assert [mode for _, mode in staged] == [0o600] and staged[0][0] not in node.files
    assert node.files == {}
    # The AWS secrets reach only the upload phase's wrapper, on its standard input.
    upload = node.commands.index(next(c for c in node.commands if "/ami-upload.sh" in c))
    with_secrets = [i for i, data in enumerate(node.stdins) if SECRET_KEY.encode() in data]
    assert with_secrets == [upload]
    assert_no_secret_on_command_lines(node, credentials)


def test_a_non_root_login_runs_the_scripts_under_sudo(node, host_key, raw_settings, tmp_path):
    remember(tmp_path, host_key)
    build(node, raw_settings, live(tmp_path, user="admin"), phases=["install"])
    script_runs = [c for c in node.commands if ".sh" in c]
    assert len(script_runs) == 1 and script_runs[0].startswith("sudo -n -- bash -c ")
    assert not any(c.startswith("sudo") for c in node.commands if ".sh" not in c)  # mktemp, rm: the user


def test_sudo_asking_for_a_password_fails_with_the_fix(node, host_key, raw_settings, tmp_path):
    remember(tmp_path, host_key)
    node.runs["install"] = PhaseRun(["sudo: a password is required"], 1)
    with pytest.raises(BuildError) as caught:
        build(node, raw_settings, live(tmp_path, user="admin"), phases=["install"])
    assert (caught.value.phase, caught.value.index) == ("install", 1)
    assert "must be able to run `sudo -n` without a password (NOPASSWD)" in str(caught.value)


def test_a_command_failing_mid_phase_stops_it_with_its_status_and_output_tail(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    node.runs["ami-bundle"] = PhaseRun(
        [
            "==> [ami-bundle 1] make sure the destination directory exists",
            "==> [ami-bundle 2] bundle the volume with ec2-bundle-vol",
            "Copying / into the image file /tmp/image...",
            "ERROR: No space left on device",
            "amidsl: FAILED in phase ami-bundle action 2 (bundle the volume with ec2-bundle-vol) (exit 3)",
        ],
        3,
    )
    with pytest.raises(BuildError) as caught:
        build(node, raw_settings, live(tmp_path))
    error = caught.value
    assert (error.phase, error.index, error.status) == ("ami-bundle", 2, 3)
    assert "No space left on device" in str(error) and "The credentials were removed" in str(error)
    assert [r.status for r in error.transcript if r.phase == "ami-bundle"] == [0, 3]
    # The phases after it never ran; the on-error script removed the credential directory.
    phases_run = [phase for phase, _ in node.scripts()]
    assert phases_run == ["install", "configure", "ami-bundle", "on-error"]
    settings = build_plan(server_spec(raw_settings)).settings
    removal = PhasePlan("on-error", (credential_removal(settings),))
    assert node.scripts()[-1][1] == render_script(Plan("ami", settings, (removal,)))
    assert_no_secret_on_command_lines(node, credentials)


def test_abort_leaves_the_node_as_it_is(node, host_key, raw_settings, tmp_path):
    remember(tmp_path, host_key)
    node.runs["configure"] = PhaseRun(["amidsl: FAILED in phase configure action 1 (x) (exit 1)"], 1)
    with pytest.raises(BuildError, match="on_error=abort: everything is left in place"):
        build(node, raw_settings, live(tmp_path), on_error="abort")
    assert [phase for phase, _ in node.scripts()] == ["install", "configure"]


def test_a_dropped_connection_reconnects_and_removes_the_credentials(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    node.runs["ami-upload"] = PhaseRun(
        ["==> [ami-upload 1] upload the bundle to S3 with ec2-upload-bundle"], None
    )
    with pytest.raises(BuildError) as caught:
        build(node, raw_settings, live(tmp_path))
    error = caught.value
    assert (error.phase, error.index, error.status) == ("ami-upload", 1, 255)
    assert "dropped before the command finished" in str(error)
    assert "The credentials were removed from the node (/opt/ami-tools/credentials)" in str(error)
    assert node.connections == 2 and node.scripts()[-1][0] == "on-error"
    assert node.files == {}  # the dropped phase's temporary directory went too
    assert_no_secret_on_command_lines(node, credentials)


def test_a_drop_with_no_way_back_says_where_credentials_may_remain(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    node.down_after_drop = True
    node.runs["configure"] = PhaseRun(["==> [configure 1] write the signing certificate"], None)
    with pytest.raises(BuildError) as caught:
        build(node, raw_settings, live(tmp_path))
    message = str(caught.value)
    assert caught.value.phase == "configure"
    assert "a staged copy of the private key may remain on the node in /tmp/amidsl.fake0002" in message
    assert "The credentials may remain on the node in /opt/ami-tools/credentials" in message
    assert "cannot connect to node.example" in message
    for secret in secrets_of(credentials):
        assert secret not in message
    assert_no_secret_on_command_lines(node, credentials)


def test_output_streams_line_by_line_with_prefixes_and_secrets_hidden(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    node.runs["ami-upload"] = PhaseRun(
        [
            "==> [ami-upload 1] upload the bundle to S3 with ec2-upload-bundle",
            "Uploading bundled image parts to the S3 bucket ...",
            f"debug: signing with {SECRET_KEY}",
            S3_ERROR.format(key_id=ACCESS_KEY),  # S3's error body names the key id
        ]
    )
    progress: list[str] = []
    result = build(node, raw_settings, live(tmp_path), phases=["ami-upload"], progress=progress.append)
    assert progress[-4:] == [
        "==> [ami-upload 1] upload the bundle to S3 with ec2-upload-bundle",
        "    [ami-upload 1] Uploading bundled image parts to the S3 bucket ...",
        "    [ami-upload 1] debug: signing with <hidden>",
        "    [ami-upload 1] " + S3_ERROR.format(key_id="<hidden>"),
    ]
    [record] = result.transcript
    assert (record.phase, record.index, record.status) == ("ami-upload", 1, 0)
    assert SECRET_KEY not in record.output and ACCESS_KEY not in record.output and "<hidden>" in record.output


def test_a_phase_whose_script_needs_an_unknown_value_fails_before_running(
    node, host_key, raw_settings, tmp_path
):
    remember(tmp_path, host_key)

    def note_image_id(settings):
        image = RuntimeValue("image_id", "ami-register")
        return [Exec(("logger", "built", image), description="log the new image id")]

    spec = group_spec("ami", extends=[server_spec(raw_settings)], phases={"note": note_image_id})
    with pytest.raises(BuildError) as caught:
        build_on_host(
            "node.example",
            raw_settings,
            spec=spec,
            live=live(tmp_path),
            phases=["note"],
            aws=FakeAws(),
            node_factory=lambda target: SshNode(target, client_factory=node.client),
        )
    assert (caught.value.phase, caught.value.index) == ("note", 1)
    assert "the script needs AMIDSL_IMAGE_ID (image_id from the ami-register phase)" in str(caught.value)
    assert not any("note.sh" in c and "bash -c" in c for c in node.commands)  # never ran
    # With the id known (a resumed build gives it in [ami]), the script gets it.
    build_on_host(
        "node.example",
        raw_settings | {"image_id": IMAGE_ID},
        spec=spec,
        live=live(tmp_path),
        phases=["note"],
        aws=FakeAws(),
        node_factory=lambda target: SshNode(target, client_factory=node.client),
    )
    assert f"AMIDSL_IMAGE_ID={IMAGE_ID}".encode() in node.stdins[-2]


def test_ctrl_c_during_the_bundle_closes_the_command_and_removes_the_credentials(
    node, host_key, raw_settings, credentials, tmp_path
):
    remember(tmp_path, host_key)
    node.runs["ami-bundle"] = PhaseRun(["==> [ami-bundle 6] bundle the volume with ec2-bundle-vol"], CTRL_C)
    with pytest.raises(BuildInterrupted) as caught:
        build(node, raw_settings, live(tmp_path))
    message = str(caught.value)
    assert message.startswith(
        "phase ami-bundle, action 6 (bundle the volume with ec2-bundle-vol) was interrupted (Ctrl-C)"
    )
    assert "The credentials were removed from the node (/opt/ami-tools/credentials)" in message
    assert node.closed_channels == 1
    assert [phase for phase, _ in node.scripts()] == ["install", "configure", "ami-bundle", "on-error"]
    assert "find /opt/ami-tools/credentials -mindepth 1 -delete" in node.scripts()[-1][1]
    assert node.files == {}  # the interrupted phase's temporary directory went too


def test_temporary_credentials_fail_the_ami_tools_upload_before_it_runs(
    node, host_key, raw_settings, credentials, tmp_path, monkeypatch
):
    remember(tmp_path, host_key)
    bad_token = "FwoGZXIvYXdzEXAMPLE\0TOKEN"
    monkeypatch.setattr(
        FakeAws,
        "credentials",
        lambda self: AwsCredentials("AKIAIOSFODNN7EXAMPLE", Secret(SECRET_KEY), Secret(bad_token)),
    )
    with pytest.raises(BuildError) as caught:
        build(node, raw_settings, live(tmp_path))
    message = str(caught.value)
    assert "phase ami-upload" in message and "ec2-upload-bundle cannot use" in message
    assert 'upload_credentials = "instance-profile"' in message
    assert "The credentials were removed" in message
    assert bad_token not in message and "EXAMPLE" not in message
    assert node.scripts()[-1][0] == "on-error"
