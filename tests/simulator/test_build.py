"""Whole builds in the simulator: what ends up in the image, and what never does."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl.bundle import read_manifest, unbundle
from amidsl.crate import server_spec
from amidsl.example import example_credentials
from amidsl.run.progress import Progress
from amidsl.settings import resolve, system_dir_reason
from simulator import simulate, template_node


def test_example_builds_through_all_phases(run, example_settings, node, region):
    simulation = run(example_settings)
    assert simulation.error is None
    assert [r.phase for r in simulation.transcript][-1] == "cleanup"
    assert simulation.final_settings.image_id == simulation.image_id
    image = region.ec2.describe_images(ImageIds=[simulation.image_id])["Images"][0]
    assert image["ImageLocation"] == "amidsl-example-bundles/images/example/image.manifest.xml"
    assert image["RootDeviceType"] == "instance-store"
    assert image["Name"] == "amidsl-example-ami"
    uploaded = [key for bucket, key in region.object_acls if bucket == "amidsl-example-bundles"]
    assert uploaded == ["images/example/image.part.0", "images/example/image.manifest.xml"]  # parts first
    assert set(region.object_acls.values()) == {"aws-exec-read"}


def test_image_holds_the_nodes_files_and_none_of_the_build(run, example_settings):
    simulation = run(example_settings)
    inspection = simulation.inspect_image()
    paths = inspection.paths()
    for kept in ("/etc/nginx/nginx.conf", "/home/admin/notes.txt", "/usr/bin/program-000", "/var/log/syslog"):
        assert kept in paths
    for gone in (
        "/opt/ami-tools",  # the tools, Ruby and the credentials
        "/opt/ami-tools/credentials/pk",
        "/tmp",  # the destination dir
        "/etc/ssl/private/node.pem",  # the default filter
        "/home/admin/.ssh/authorized_keys",
        "/home/admin/.bash_history",
        "/root/.ssh/id_rsa",
        "/home/admin/#draft.txt#",
        "/home/admin/config.yml.swp",
        "/proc/cpuinfo",  # always excluded
        "/var/cache/apt/archives",  # extra_exclusions
    ):
        assert gone not in paths, gone
    assert not any(p.startswith("/opt/ami-tools") for p in paths)
    reasons = {left.path: str(left.reason) for left in inspection.left_out}
    # Image hygiene's private_keys finds it on the node, so ec2-bundle-vol gets it in -e before its filter.
    assert reasons["/etc/ssl/private/node.pem"] == "caller exclusion"
    assert reasons["/home/admin/config.yml.swp"] == "filter pattern"
    assert reasons["/opt/ami-tools"] == "caller exclusion"


def test_node_has_no_credentials_tools_or_bundle_after_cleanup(run, example_settings, node):
    simulation = run(example_settings)
    assert simulation.error is None
    assert not node.exists("/opt/ami-tools")
    assert node.glob("/tmp", "image*") == []


def test_transcript_shows_commands_without_secrets(run, example_settings, region):
    region.credentials = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
    raw = example_settings | {
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    simulation = run(raw)
    assert simulation.error is None, simulation.error
    text = "\n".join(f"{r.command}\n{r.output}" for r in simulation.transcript)
    assert "ec2-upload-bundle" in text and '"${AMIDSL_SECRET_KEY}"' in text
    assert "wJalrXUtnFEMI" not in text and "AKIAIOSFODNN7EXAMPLE" not in text
    key_lines = [line for line in example_credentials()[0].splitlines() if "-----" not in line]
    assert not any(line in text for line in key_lines)


def test_verbose_commands_hide_the_access_key_id_like_the_secret_key(run, example_settings, node, region):
    region.credentials = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
    raw = example_settings | {
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    shown = io.StringIO()
    node.progress = Progress(shown, verbose=True)
    simulation = run(raw)
    assert simulation.error is None, simulation.error
    [upload] = [
        line for line in shown.getvalue().splitlines() if "$ " in line and "ec2-upload-bundle" in line
    ]
    assert " -a <hidden> -s <hidden> " in upload
    assert "AKIAIOSFODNN7EXAMPLE" not in shown.getvalue()


def test_auto_strategy_takes_debian_12s_ruby_31_package(run, example_settings, node):
    simulation = run(example_settings)
    assert simulation.error is None, simulation.error
    assert "ruby3.1" in node.packages and "gcc" not in node.packages
    assert any(
        "ln -sfn /usr/bin/ruby3.1 /opt/ami-tools/ruby/bin/ruby" in r.command for r in simulation.transcript
    )


@pytest.mark.parametrize(
    ("os_family", "distribution_ruby"), [("debian", "3.2"), ("amazon", None), ("rhel", None)]
)
def test_auto_strategy_builds_ruby_27_where_the_distribution_has_no_31_or_30(
    example_settings, region, os_family, distribution_ruby
):
    node = template_node(os_family=os_family, payload_mb=0, distribution_ruby=distribution_ruby)
    try:
        simulation = simulate(server_spec(example_settings), node=node, region=region, raise_on_failure=False)
        assert simulation.error is None, simulation.error
        assert "gcc" in node.packages  # the build packages stay: the preview says so
        assert any("rbenv install --skip-existing 2.7.8" in r.command for r in simulation.transcript)
    finally:
        node.close()


def test_package_strategy_stops_where_the_distribution_has_no_ruby_31_or_30(example_settings, region):
    node = template_node(os_family="debian", payload_mb=0, distribution_ruby="3.2")
    try:
        raw = example_settings | {"install-strategy": "package"}
        simulation = simulate(server_spec(raw), node=node, region=region, raise_on_failure=False)
        assert simulation.error is not None and simulation.error.phase == "install"
        assert "no ruby3.1 or ruby3.0" in str(simulation.error)
    finally:
        node.close()


# -- the credentials never reach the image, wherever the directories are ---------------------------

parents = st.sampled_from(
    ["/etc", "/home/admin", "/var", "/usr/local", "/srv", "/root", "/opt", "/mnt", "/var/tmp"]
)
name = st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True).filter(lambda n: ".." not in n)
place = st.builds(lambda p, n: f"{p}/{n}", parents, name)
# Directories amidsl creates and removes: never a system or home directory (settings refuse those).
owned_place = place.filter(lambda p: system_dir_reason(p) is None)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    credential_dir=owned_place,
    install_dir=owned_place,
    destination_dir=place,
    prefix=st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
    extra=st.lists(place, max_size=2),
)
def test_image_bytes_never_hold_the_key_or_certificate(
    run, example_settings, node, credential_dir, install_dir, destination_dir, prefix, extra
):
    raw = example_settings | {
        "credential-dir": credential_dir,
        "install-dir": install_dir,
        "destination-dir": destination_dir,
        "prefix": prefix,
        "extra-exclusions": extra,
        "install-strategy": "package",
        "image-size-mb": 16,  # the tool's default is a 10 GiB (sparse) image: too much to read here
    }
    s = resolve(raw)
    simulation = run(raw, ["install", "configure", "ami-bundle"])
    assert simulation.error is None, simulation.error
    manifest_path = node.host_path(s.manifest_path)
    with tempfile.TemporaryDirectory() as out:
        image = unbundle(
            manifest_path, s.private_key_pem.reveal(), Path(out), user_cert_pem=s.certificate_pem
        )
        data = image.read_bytes()
    assert read_manifest(manifest_path).name == prefix
    key_pem, cert_pem = example_credentials()
    for pem in (key_pem, cert_pem):
        for line in pem.splitlines():
            if "-----" not in line:
                assert line.encode() not in data
    # The bundle is rebuilt next time: clear the node's state between examples.
    run(raw, ["cleanup"])


def test_install_runs_again_cleanly(run, example_settings, node):
    first = run(example_settings, ["install"])
    second = run(example_settings, ["install"])
    assert first.error is None and second.error is None
    assert node.glob("/opt/ami-tools", "ec2-ami-tools*") == ["/opt/ami-tools/ec2-ami-tools"]
    assert node.exists("/opt/ami-tools/ec2-ami-tools/bin/ec2-bundle-vol")
    assert node.host_path("/opt/ami-tools/ruby/bin/ruby").resolve() == node.host_path("/usr/bin/ruby3.1")


def _output_of(simulation, phase: str) -> str:
    """What the node printed in a phase."""
    return "".join(r.output for r in simulation.transcript if r.phase == phase)


def _plant_builder_secrets(node) -> None:
    """What a used node carries that image hygiene leaves out, and what the filter must keep."""
    for path in (
        "/etc/ssh/ssh_host_ed25519_key",
        "/root/.ssh/id_ed25519",
        "/home/admin/.aws/credentials",
        "/home/admin/.zsh_history",
        "/var/lib/cloud/instance/user-data.txt",
        "/var/lib/systemd/random-seed",
    ):
        node.make_dirs(path.rsplit("/", 1)[0])
        node.write_bytes(path, b"secret", mode=0o600)
    for directory in ("/etc/ssl/certs", "/usr/share/keyrings", "/etc/cloud", "/srv"):
        node.make_dirs(directory)
    node.write_bytes("/etc/ssh/sshd_config", b"Port 22\n")
    node.write_bytes("/etc/ssl/certs/ISRG_Root_X1.pem", b"certificate")
    node.write_bytes("/usr/share/keyrings/debian-archive-keyring.gpg", b"keyring")


def test_ami_tools_builds_leave_out_what_image_hygiene_names_and_keep_the_includes(
    run, example_settings, node
):
    _plant_builder_secrets(node)
    node.write_bytes("/etc/cloud/cloud.cfg", b"# cloud-init makes host keys at first boot\n")
    simulation = run(example_settings | {"exclude_patterns": ["/srv/*.dump"]})
    node.write_bytes("/srv/db.dump", b"")  # after the build: the pattern found nothing, and that is fine
    assert simulation.error is None
    paths = simulation.inspect_image().paths()
    for gone in (
        "/etc/ssh/ssh_host_ed25519_key",
        "/root/.ssh/id_ed25519",
        "/home/admin/.aws/credentials",
        "/home/admin/.zsh_history",
        "/var/lib/cloud/instance",
        "/var/lib/systemd/random-seed",
    ):
        assert gone not in paths, gone
    assert {"/etc/ssl/certs/ISRG_Root_X1.pem", "/usr/share/keyrings/debian-archive-keyring.gpg"} <= set(paths)
    said = _output_of(simulation, "ami-bundle")
    assert "amidsl: leaving out /root/.ssh/id_ed25519 (image hygiene, exclude_patterns)" in said
    assert "amidsl: leaving out /etc/ssh/ssh_host_ed25519_key (image hygiene: ssh_host_keys)" in said


def test_ami_tools_builds_keep_ssh_host_keys_and_say_so_when_nothing_makes_new_ones(
    run, example_settings, node
):
    _plant_builder_secrets(node)
    simulation = run(example_settings)
    assert simulation.error is None
    paths = simulation.inspect_image().paths()
    assert "/etc/ssh/ssh_host_ed25519_key" in paths  # else no instance could be reached over SSH
    assert "/root/.ssh/id_ed25519" not in paths
    assert "keeping the SSH host keys: nothing on this node (cloud-init, sshd-keygen)" in (
        _output_of(simulation, "ami-bundle")
    )
