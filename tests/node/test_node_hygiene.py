"""Image hygiene: a default image carries no builder secret or machine identity, and still works.

The volume is a copy of what a used node holds (keys, histories, credentials, cloud-init state, logs,
leases) beside what the launched system needs (CA certificates with their hashed links, package
keyrings, /tmp). Each test bundles it as the controller asks and lists the image.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amidsl.bundle import list_image
from amidsl.node import amidsl_node as node
from tests.node.conftest import bundle_request, run_node
from tests.node.test_node_bundle import restore_with_openssl

# What a builder's node holds that no instance launched from its image may carry.
SECRETS = (
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/root/.ssh/id_ed25519",
    "/root/.ssh/id_ecdsa",
    "/root/.ssh/authorized_keys",
    "/root/.ssh/authorized_keys2",
    "/home/admin/.ssh/id_ed25519",
    "/home/admin/.ssh/known_hosts",
    "/root/.bash_history",
    "/root/.zsh_history",
    "/root/.mysql_history",
    "/root/.psql_history",
    "/root/.python_history",
    "/root/.viminfo",
    "/root/.lesshst",
    "/home/admin/.bash_history",
    "/root/.aws/credentials",
    "/root/.docker/config.json",
    "/root/.git-credentials",
    "/root/.config/gh/hosts.yml",
    "/home/admin/.netrc",
    "/var/lib/cloud/instances/i-0123456789abcdef0/user-data.txt",
    "/var/lib/cloud/instance",
    "/var/lib/dhcp/dhclient.eth0.leases",
    "/var/lib/systemd/random-seed",
    "/var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
    "/var/tmp/build-notes.txt",
    "/tmp/session-token",
    "/etc/ssl/private/ssl-cert-snakeoil.key",
)
SECRET_TEXT = "builder-secret-7f3a"
CA_NAME = "GlobalSign_Root_R46"


def realistic_volume(root: Path) -> Path:
    """A node as it is after use: its secrets (SECRETS) beside what its system needs to work."""
    for path in SECRETS:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if path == "/var/lib/cloud/instance":
            target.symlink_to("/var/lib/cloud/instances/i-0123456789abcdef0")
            continue
        target.write_text(f"{SECRET_TEXT} {path}\n")
        target.chmod(0o600)
    (root / "root").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin prohibit-password\n")
    (root / "etc/ssh/sshd_config").chmod(0o644)
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    (root / "var/log/auth.log").write_text(f"sshd: Accepted publickey for admin {SECRET_TEXT}\n")
    (root / "var/log/auth.log").chmod(0o640)
    if os.geteuid() == 0:
        os.chown(root / "var/log/auth.log", 0, 4)  # group adm, as on Debian
    (root / "var/log/apt").mkdir()
    # CA certificates as Debian lays them out: .pem links to .crt files, and hashed links to those.
    mozilla = root / "usr/share/ca-certificates/mozilla"
    mozilla.mkdir(parents=True)
    (mozilla / f"{CA_NAME}.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    certs = root / "etc/ssl/certs"
    certs.mkdir(parents=True)
    (certs / f"{CA_NAME}.pem").symlink_to(f"/usr/share/ca-certificates/mozilla/{CA_NAME}.crt")
    (certs / "002c0b4f.0").symlink_to(f"{CA_NAME}.pem")
    (certs / "ca-certificates.crt").write_text("bundle\n")
    # OpenSSL's default CA file (Debian; RHEL's is /etc/pki/tls/cert.pem): links to the bundle.
    (root / "usr/lib/ssl").mkdir(parents=True)
    (root / "usr/lib/ssl/cert.pem").symlink_to("/etc/ssl/certs/ca-certificates.crt")
    (root / "etc/pki/tls").mkdir(parents=True)
    (root / "etc/pki/tls/cert.pem").symlink_to("/etc/pki/tls/certs/ca-bundle.crt")
    keyrings = root / "usr/share/keyrings"
    keyrings.mkdir(parents=True)
    (keyrings / "debian-archive-keyring.gpg").write_bytes(b"\x99\x02\x0d public keyring")
    # A system with systemd and OpenSSH but neither cloud-init nor a host key generator (Debian's).
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/ssh-keygen").write_text("#!/bin/sh\n")
    return root


def bundled(volume: Path, tmp_path: Path, name: str, **request: object) -> tuple[dict, dict, Path]:
    """Bundle the volume as the controller asks by default: (entries by path, report, image)."""
    destination = tmp_path / f"out-{name}"
    destination.mkdir()
    request = {"includes": list(node.DEFAULT_INCLUDES), **request}
    run = run_node("bundle", bundle_request(volume, destination, **request))
    assert run.returncode == 0, run.stderr
    image = restore_with_openssl(destination, run.result, tmp_path / f"restored-{name}")
    return {e.path: e for e in list_image(image)}, run.result, image


STAGINGS = pytest.mark.parametrize("staging", ["auto", "links"], ids=["view", "staging tree"])


@STAGINGS
def test_a_default_image_carries_no_builder_secret_or_machine_identity(tmp_path, staging):
    volume = realistic_volume(tmp_path / "volume")
    entries, report, _ = bundled(volume, tmp_path, staging, staging=staging)
    assert [path for path in SECRETS if path in entries] == []
    assert [path for path in entries if "/.ssh/" in path and not path.endswith("/.ssh")] == []
    # Contents that stay as empty files: no one's id or log lines.
    assert entries["/etc/machine-id"].size == 0
    assert entries["/var/log/auth.log"].size == 0
    left_out = dict(report["left_out"])
    assert left_out["/etc/ssh/ssh_host_rsa_key"] == node.LEFT_OUT_HYGIENE


@STAGINGS
def test_a_default_image_keeps_ca_certificates_keyrings_and_an_empty_tmp(tmp_path, staging):
    volume = realistic_volume(tmp_path / "volume")
    entries, _, _ = bundled(volume, tmp_path, staging, staging=staging, exclude=["/tmp"])
    # The hashed link resolves: the .pem link it names and the certificate behind it are there.
    assert entries["/etc/ssl/certs/002c0b4f.0"].target == f"{CA_NAME}.pem"
    assert entries[f"/etc/ssl/certs/{CA_NAME}.pem"].target.endswith(f"{CA_NAME}.crt")
    assert f"/usr/share/ca-certificates/mozilla/{CA_NAME}.crt" in entries
    assert "/usr/share/keyrings/debian-archive-keyring.gpg" in entries
    # OpenSSL's default CA file, which the *.pem filter used to drop.
    assert "/usr/lib/ssl/cert.pem" in entries and "/etc/pki/tls/cert.pem" in entries
    # /tmp is destination_dir by default, so excluded: it stays, empty, with its mode.
    for directory in ("/tmp", "/var/tmp"):
        assert entries[directory].type == "dir"
        assert stat.S_IMODE(entries[directory].mode) == 0o1777
        assert [p for p in entries if p.startswith(directory + "/")] == []


def test_emptied_files_keep_their_owner_and_mode(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    entries, _, _ = bundled(volume, tmp_path, "view")
    auth_log = entries["/var/log/auth.log"]
    assert (auth_log.type, stat.S_IMODE(auth_log.mode), auth_log.size) == ("file", 0o640, 0)
    if os.geteuid() == 0:
        assert (auth_log.uid, auth_log.gid) == (0, 4)
    assert entries["/var/log/apt"].type == "dir"


def test_the_view_and_the_staging_tree_apply_hygiene_alike(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    view, view_report, _ = bundled(volume, tmp_path, "view")
    links, links_report, _ = bundled(volume, tmp_path, "links", staging="links")

    def seen(entries: dict) -> dict:
        return {p: (e.type, e.mode, e.uid, e.gid, e.size, e.target) for p, e in entries.items()}

    assert seen(view) == seen(links)
    assert view_report["hygiene"] == links_report["hygiene"]


def test_the_report_says_per_item_what_was_done(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    _, report, _ = bundled(volume, tmp_path, "view")
    hygiene = report["hygiene"]
    assert set(hygiene) == set(node.HYGIENE_NAMES)
    assert hygiene["ssh_host_keys"]["count"] == 4
    assert hygiene["ssh_host_keys"]["treatment"] == node.HYGIENE_LEAVE_OUT
    assert hygiene["machine_id"] == {
        "treatment": node.HYGIENE_EMPTY_FILE,
        "count": 1,
        "paths": ["/etc/machine-id"],
    }
    assert hygiene["temporary_files"]["paths"] == ["/tmp/*", "/var/tmp/*"]
    assert hygiene["credentials"]["count"] == 5


def test_ssh_host_keys_are_made_at_first_boot_by_a_unit_amidsl_adds_where_nothing_else_would(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    entries, report, _ = bundled(volume, tmp_path, "view")
    unit = f"/etc/systemd/system/{node.HOST_KEYS_UNIT}"
    assert report["added"] == [unit, f"/etc/systemd/system/multi-user.target.wants/{node.HOST_KEYS_UNIT}"]
    assert entries[f"/etc/systemd/system/multi-user.target.wants/{node.HOST_KEYS_UNIT}"].target == unit
    assert entries[unit].size == len(node.HOST_KEYS_UNIT_TEXT)
    assert unit in report["host_keys"]
    # Nothing of the node's was changed to add it.
    assert not (volume / unit.lstrip("/")).exists()


def test_no_unit_is_added_where_cloud_init_makes_the_host_keys(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    (volume / "etc/cloud").mkdir()
    (volume / "etc/cloud/cloud.cfg").write_text("users: [default]\n")
    entries, report, _ = bundled(volume, tmp_path, "view")
    assert report["added"] == []
    assert report["host_keys"] == "made at first boot by cloud-init"
    assert report["login_key"] == "cloud-init installs the launch key pair's public key"
    assert not any(node.HOST_KEYS_UNIT in path for path in entries)


def test_each_item_can_be_kept_by_name(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    entries, report, _ = bundled(volume, tmp_path, "view", hygiene_keep=["ssh_host_keys", "machine_id"])
    assert "/etc/ssh/ssh_host_rsa_key" in entries
    assert entries["/etc/machine-id"].size == 33
    assert report["added"] == []
    assert "/root/.aws/credentials" not in entries
    assert "ssh_host_keys" not in report["hygiene"]


def test_includes_do_not_bring_back_what_hygiene_leaves_out(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    entries, _, _ = bundled(volume, tmp_path, "view", includes=["/root/.ssh/id_ed25519", "/etc/ssh/*"])
    assert "/root/.ssh/id_ed25519" not in entries
    assert "/etc/ssh/ssh_host_rsa_key" not in entries
    assert "/etc/ssh/sshd_config" in entries


def test_exclude_patterns_leave_out_what_they_match_even_when_included(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    (volume / "srv").mkdir()
    (volume / "srv/app.env").write_text("TOKEN=x\n")
    entries, report, _ = bundled(volume, tmp_path, "view", exclude_patterns=["*.env", "/etc/ssl/certs/*.pem"])
    assert "/srv/app.env" not in entries
    assert f"/etc/ssl/certs/{CA_NAME}.pem" not in entries
    assert dict(report["left_out"])["/srv/app.env"] == node.LEFT_OUT_PATTERN


def test_an_unknown_hygiene_item_is_refused_before_any_work(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    destination = tmp_path / "out"
    destination.mkdir()
    run = run_node("bundle", bundle_request(volume, destination, hygiene_keep=["host_keys"]))
    assert run.returncode != 0
    assert "hygiene keep ['host_keys'] names no item" in run.stderr
    assert "ssh_host_keys" in run.stderr
    assert list(destination.iterdir()) == []


def test_check_warns_when_nothing_installs_the_login_key(tmp_path):
    volume = realistic_volume(tmp_path / "volume")
    run = run_node("check", {"volume": str(volume), "destination_dir": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert run.result["login_key"] == ""
    assert node.NO_LOGIN_KEY in run.result["warnings"]
    assert "amidsl-ssh-host-keys.service" in run.result["host_keys"]


@given(
    patterns=st.lists(st.text(alphabet="/.*?[]ab_", min_size=1, max_size=8), min_size=1, max_size=4),
    path=st.text(alphabet="/.ab_", max_size=12),
)
@settings(max_examples=300, deadline=None)
def test_the_pattern_matcher_finds_the_first_pattern_fnmatch_matches(patterns, path):
    expected = next((i for i, p in enumerate(patterns) if fnmatch.fnmatchcase(path, p)), None)
    assert node.pattern_matcher(patterns)(path) == expected
