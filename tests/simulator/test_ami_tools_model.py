"""The simulated ec2-ami-tools behave as the real tools 1.5.3 were measured to: one test per fact."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from amidsl.bundle import list_image, read_manifest
from amidsl.example import example_credentials
from simulator import FakeRegion, template_node
from simulator.fake_ami_tools import ami_tools_zip
from simulator.packages import model_script

HOME = "/opt/tools/ec2-ami-tools"
BUNDLE_VOL = f"{HOME}/bin/ec2-bundle-vol"
UPLOAD = f"{HOME}/bin/ec2-upload-bundle"
ACCOUNT = "123456789012"
BASIC = ("--no-inherit", "--partition", "none", "--batch")


@pytest.fixture
def region():
    made = FakeRegion("us-east-1")
    yield made
    made.close()


@pytest.fixture
def node(region):
    """A Debian node with the tools unpacked, Ruby 3.1, rsync, and a signing key pair."""
    made = template_node(payload_mb=0)
    made.region = region
    with zipfile.ZipFile(io.BytesIO(ami_tools_zip(region.ec2_cert_pem))) as archive:
        for member in archive.infolist():
            path = f"/opt/tools/ec2-ami-tools/{member.filename.split('/', 1)[1]}"
            made.make_dirs(path.rsplit("/", 1)[0])
            made.write_bytes(path, archive.read(member), mode=(member.external_attr >> 16) & 0o777)
    set_ruby(made, "3.1.2")
    made.packages.add("rsync")
    key, cert = example_credentials()
    made.make_dirs("/root/creds")
    made.write_bytes("/root/creds/pk", key.encode(), mode=0o600)
    made.write_bytes("/root/creds/cert", cert.encode())
    yield made
    made.close()


def set_ruby(node, version: str) -> None:
    node.write_bytes("/usr/bin/ruby", model_script("ruby", f"# ruby {version}\n"), mode=0o755)


def bundle_vol(node, *options: str, keys: bool = True):
    signing = ("-k", "/root/creds/pk", "-c", "/root/creds/cert", "-u", ACCOUNT) if keys else ()
    return node.run([BUNDLE_VOL, *signing, *options], {"EC2_AMITOOL_HOME": HOME})


def upload(node, *options: str, keys: tuple[str, ...] | None = None):
    access, secret, _ = node.region.credentials
    given = ("-a", access, "-s", secret) if keys is None else keys
    argv = [UPLOAD, "-b", "bundles/img", "-m", "/tmp/image.manifest.xml", *given, *options]
    return node.run(argv, {"EC2_AMITOOL_HOME": HOME})


def bundled(node, *options: str):
    result = bundle_vol(node, *BASIC, *options)
    assert result.status == 0, result.output
    return result


def image_paths(node) -> dict[str, object]:
    return {entry.path: entry for entry in list_image(node.host_path("/tmp/image"))}


# -- ec2-bundle-vol -----------------------------------------------------------------------------


def test_bundle_vol_refuses_an_unknown_option(node):
    result = bundle_vol(node, *BASIC, "--no-such-option")
    assert result.status != 0
    assert "invalid option: --no-such-option" in result.output
    assert not node.exists("/tmp/image")


@pytest.mark.parametrize(("flag", "name"), [("-e", "--exclude"), ("-i", "--include")])
def test_every_exclude_and_include_path_must_exist(node, flag, name):
    result = bundle_vol(node, *BASIC, flag, "/etc,/var/lib/amidsl")
    assert result.status != 0
    assert f"{name} has invalid value '/var/lib/amidsl': File or directory does not exist." in result.output
    assert not node.exists("/tmp/image")


def test_a_second_exclude_replaces_the_first(node):
    bundled(node, "-e", "/var/www", "-e", "/var/log")
    paths = image_paths(node)
    assert "/var/www/html/index.html" in paths
    assert "/var/log/syslog" not in paths


def test_a_prefix_with_a_slash_is_refused(node):
    result = bundle_vol(node, *BASIC, "-p", "a/b")
    assert result.status != 0
    assert "--prefix has invalid value 'a/b'" in result.output


def test_an_image_size_with_a_unit_is_refused(node):
    result = bundle_vol(node, *BASIC, "-s", "2048M")
    assert result.status != 0
    assert "--size has invalid value '2048M'" in result.output


def test_the_default_image_size_is_10240_mb_sparse(node):
    bundled(node)
    image = node.host_path("/tmp/image")
    assert image.stat().st_size == 10240 * 1024 * 1024
    assert image.stat().st_blocks * 512 < 1024 * 1024 * 1024
    assert read_manifest(node.host_path("/tmp/image.manifest.xml")).size == 10240 * 1024 * 1024


def test_an_explicit_image_size_is_taken_in_mb(node):
    bundled(node, "-s", "64")
    assert node.host_path("/tmp/image").stat().st_size == 64 * 1024 * 1024


def test_arm64_is_unsupported_and_batch_carries_on(node):
    result = bundled(node, "-r", "arm64", "-s", "64")
    assert "Unsupported architecture [arm64]." in result.output
    without_batch = bundle_vol(node, "--no-inherit", "-P", "none", "-r", "arm64", "-p", "other")
    assert without_batch.status != 0


def give_device_mapper_tools(node) -> None:
    node.make_dirs("/usr/sbin")
    for tool in ("dmsetup", "kpartx"):
        node.write_bytes(f"/usr/sbin/{tool}", model_script("true"), mode=0o755)


def test_partition_auto_needs_the_device_mapper_tools(node):
    result = bundle_vol(node, "--no-inherit", "--batch")
    assert result.status != 0 and "dmsetup" in result.output


def test_partition_auto_stops_on_an_nvme_or_virtio_root(node):
    give_device_mapper_tools(node)
    for device in ("/dev/nvme0n1p1", "/dev/vda1"):
        node.root_device = device
        result = bundle_vol(node, "--no-inherit", "--batch")
        assert result.status != 0
        assert f'Non-standard volume device "{device}"' in result.output


def test_partition_auto_on_a_standard_root_needs_parted_sgdisk_and_legacy_grub(node):
    node.root_device = "/dev/xvda1"
    give_device_mapper_tools(node)
    result = bundle_vol(node, "--no-inherit", "--batch")
    assert result.status != 0
    assert "legacy grub" in result.output


def test_partition_none_makes_a_plain_filesystem_image(node):
    result = bundled(node, "-s", "64")
    assert "Not partitioning boot device." in result.output
    assert "/etc/hostname" in image_paths(node)  # a filesystem at offset 0, no partition table


def test_inherit_is_the_default_and_fails_on_ruby_3(node):
    result = bundle_vol(node, "-P", "none", "--batch")
    assert result.status == 12
    assert "rb_sysopen - http://" in result.output
    assert "use --no-inherit" in result.output


def test_inherit_on_ruby_2_7_fails_when_the_instance_requires_imdsv2(node):
    set_ruby(node, "2.7.8")
    result = bundle_vol(node, "-P", "none", "--batch")
    assert result.status == 12
    assert "If you are not bundling on an EC2 instance use --no-inherit." in result.output


def test_inherit_fails_off_ec2(node):
    set_ruby(node, "2.7.8")
    node.imdsv2_required = False
    node.on_ec2 = False
    assert bundle_vol(node, "-P", "none", "--batch").status == 12


def test_without_b_or_inherit_the_manifest_has_no_block_device_mappings(node):
    bundled(node, "-s", "64")
    manifest = read_manifest(node.host_path("/tmp/image.manifest.xml"))
    assert manifest.block_device_mappings == ()
    assert "<block_device_mapping>" not in manifest.signed_text


def test_the_image_file_is_left_behind_and_a_rerun_fails(node):
    bundled(node, "-s", "64")
    assert node.exists("/tmp/image")
    again = bundle_vol(node, *BASIC, "-s", "64")
    assert again.status == 254
    assert "ERROR: the specified image file /tmp/image already exists" in again.output


def test_the_image_carries_the_root_filesystems_label_and_uuid(node):
    import subprocess

    bundled(node, "-s", "64")
    out = subprocess.run(
        ["dumpe2fs", "-h", str(node.host_path("/tmp/image"))], capture_output=True, text=True, check=False
    ).stdout
    _, label, uuid = node.root_filesystem
    assert f"Filesystem volume name:   {label}" in out
    assert uuid in out


def test_top_level_dotfiles_of_the_volume_are_skipped(node):
    node.write_bytes("/.autorelabel", b"")
    node.write_bytes("/etc/.hidden", b"kept")
    bundled(node, "-s", "64")
    paths = image_paths(node)
    assert "/.autorelabel" not in paths
    assert "/etc/.hidden" in paths


def test_a_star_in_a_filter_pattern_does_not_cross_a_slash(node):
    node.make_dirs("/home/#odd")
    node.write_bytes("/home/#odd/b#", b"kept by rsync")
    bundled(node, "-s", "64")
    paths = image_paths(node)
    assert "/home/#odd/b#" in paths
    assert "/home/admin/#draft.txt#" not in paths
    assert "/home/admin/.ssh/authorized_keys" not in paths
    assert "/etc/ssl/private/node.pem" not in paths


def test_tmpfs_is_copied_and_vfat_or_btrfs_mounts_are_left_out(node):
    node.write_bytes("/run/app.pid", b"42\n")
    node.make_dirs("/boot/efi/EFI")
    node.write_bytes("/boot/efi/EFI/grubx64.efi", b"efi")
    node.make_dirs("/srv/data")
    node.write_bytes("/srv/data/db", b"btrfs")
    node.mounts.update({"/boot/efi": "vfat", "/srv/data": "btrfs"})
    bundled(node, "-s", "64")
    paths = image_paths(node)
    assert "/run/app.pid" in paths
    assert "/boot/efi/EFI/grubx64.efi" not in paths
    assert "/srv/data/db" not in paths


def test_dev_gets_four_device_nodes_and_proc_sys_mnt_stay_empty(node):
    bundled(node, "-s", "64")
    paths = image_paths(node)
    devices = {p for p in paths if p.startswith("/dev/")}
    assert devices == {"/dev/console", "/dev/null", "/dev/tty", "/dev/zero"}
    assert all(paths[d].type == "char" for d in devices)
    for directory in ("/proc", "/sys", "/mnt"):
        assert directory in paths
        assert not any(p.startswith(directory + "/") for p in paths)


def test_hard_links_become_separate_files(node):
    node.write_bytes("/etc/one", b"same file")
    os.link(node.host_path("/etc/one"), node.host_path("/etc/two"))
    bundled(node, "-s", "64")
    paths = image_paths(node)
    assert paths["/etc/one"].inode != paths["/etc/two"].inode


def test_an_rsync_partial_transfer_is_fatal_on_ruby_3_and_tolerated_on_2_7(node):
    node.rsync_partial_transfer = True
    result = bundle_vol(node, *BASIC, "-s", "16")
    assert result.status != 0 and "exit status 23" in result.output
    set_ruby(node, "2.7.8")
    tolerated = bundled(node, "-s", "16")
    assert "partial transfer (exit 23); carrying on" in tolerated.output


def test_bundle_vol_needs_rsync(node):
    node.packages.discard("rsync")
    result = bundle_vol(node, *BASIC)
    assert result.status != 0
    assert "rsync" in result.output


def test_ruby_3_2_cannot_load_the_tools(node):
    set_ruby(node, "3.2.3")
    result = bundle_vol(node, *BASIC)
    assert result.status != 0
    assert "exists?" in result.output


# -- ec2-upload-bundle --------------------------------------------------------------------------


@pytest.fixture
def bundle(node):
    bundled(node, "-s", "16")
    node.region.create_bucket("bundles")
    return node


def test_upload_refuses_an_unknown_option(bundle):
    result = upload(bundle, "--region", "us-east-1", "--no-such-option")
    assert result.status != 0
    assert "invalid option: --no-such-option" in result.output


def test_upload_puts_parts_first_and_the_manifest_last_with_aws_exec_read(bundle):
    result = upload(bundle, "--region", "us-east-1")
    assert result.status == 0, result.output
    keys = [key for (bucket, key) in bundle.region.object_acls if bucket == "bundles"]
    assert keys[-1] == "img/image.manifest.xml"
    assert all(k.startswith("img/image.part.") for k in keys[:-1])
    assert set(bundle.region.object_acls.values()) == {"aws-exec-read"}


@pytest.mark.parametrize("region_name", ["eu-central-1", "us-east-2", "ap-south-1", "eu-west-2"])
def test_a_region_outside_the_tools_table_fails_without_url(bundle, region_name):
    result = upload(bundle, "--region", region_name)
    assert result.status == 254
    assert "bad URI(is not URI?): nil" in result.output


def test_url_makes_a_region_outside_the_table_work(bundle):
    bundle.region.create_bucket("bundles-central", "eu-central-1")
    argv_bucket = ("-b", "bundles-central/img")
    result = upload(
        bundle, "--region", "eu-central-1", "--url", "https://s3.eu-central-1.amazonaws.com", *argv_bucket
    )
    assert result.status == 0, result.output


def test_a_bucket_in_another_region_is_refused(bundle):
    result = upload(bundle, "--region", "us-west-2")
    assert result.status == 10
    assert 'already exists in "US" and "us-west-2" was specified.' in result.output


def test_a_missing_bucket_is_created_with_acls_disabled_so_the_upload_is_refused(bundle):
    result = upload(bundle, "--region", "us-east-1", "-b", "new-bucket/img")
    assert "Creating bucket..." in result.output
    assert bundle.region.bucket_region("new-bucket") == "us-east-1"
    assert result.status != 0 and "AccessControlListNotSupported" in result.output


def test_a_bucket_with_acls_disabled_refuses_the_aws_exec_read_parts(bundle):
    bundle.region.create_bucket("enforced", acls_disabled=True)
    result = upload(bundle, "--region", "us-east-1", "-b", "enforced/img")
    assert result.status != 0 and "AccessControlListNotSupported" in result.output


def test_a_session_token_is_dropped_under_sigv4(bundle):
    bundle.region.credentials = ("ASIAEXAMPLEEXAMPLE12", "temporary-secret", "the-session-token")
    keys = ("-a", "ASIAEXAMPLEEXAMPLE12", "-s", "temporary-secret", "-t", "the-session-token")
    result = upload(bundle, "--region", "us-east-1", keys=keys)
    assert result.status != 0
    assert "SignatureDoesNotMatch" in result.output
    assert upload(bundle, "--region", "us-east-1", "--sigv", "2", keys=keys).status == 0


def test_without_keys_the_instance_profile_is_read_with_imdsv1(bundle):
    bundle.region.credentials = ("ASIAPROFILEEXAMPLE12", "profile-secret", "profile-token")
    bundle.instance_profile = bundle.region.credentials
    refused = upload(bundle, "--region", "us-east-1", keys=())
    assert refused.status != 0 and "401 Unauthorized" in refused.output  # the instance requires IMDSv2
    bundle.imdsv2_required = False
    assert upload(bundle, "--region", "us-east-1", keys=()).status == 0
