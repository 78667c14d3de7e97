"""The CLI tasks: a whole bundle → verify → unbundle → ls session, and clean errors (exit 2)."""

from __future__ import annotations

import os

import pytest

from amidsl.bundle import BlockDeviceMapping, build_image, read_manifest
from amidsl.cli.main import run


def amidsl(*args: str) -> int:
    """Run the command as the amidsl program would; return the exit status."""
    return run(args)


@pytest.fixture
def files(tmp_path, user, ec2, stranger):
    """PEM files on disk (as a user would have them) and a small image."""
    paths = {}
    for name, pem in [
        ("cert.pem", user.cert_pem),
        ("pk.pem", user.key_pem),
        ("ec2.pem", ec2.cert_pem),
        ("stranger-pk.pem", stranger.key_pem),
    ]:
        paths[name] = tmp_path / name
        paths[name].write_bytes(pem)
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/motd").write_text("welcome\n")
    os.symlink("etc/motd", tmp_path / "root/motd")
    build_image(tmp_path / "root", tmp_path / "disk.img")
    paths["image"] = tmp_path / "disk.img"
    paths["out"] = tmp_path / "out"
    paths["out"].mkdir()
    return paths


def bundle(files) -> int:
    return amidsl(*bundle_args(files))


def bundle_args(files) -> list[str]:
    return [
        "bundle-image",
        "--image", str(files["image"]),
        "--cert", str(files["cert.pem"]),
        "--privkey", str(files["pk.pem"]),
        "--ec2cert", str(files["ec2.pem"]),
        "--user", "1234-5678-9012",
        "--destination", str(files["out"]),
        "--prefix", "web",
        "--block-device-mapping", "ami=sda1,root=/dev/sda1",
    ]  # fmt: skip


def test_bundle_verify_unbundle_and_list_from_the_command_line(files, tmp_path, capsys, user):
    assert bundle(files) == 0
    out = capsys.readouterr().out
    assert "into 1 part\n" in out and "web.manifest.xml" in out
    manifest = str(files["out"] / "web.manifest.xml")

    assert amidsl("verify-bundle", "--manifest", manifest, "--cert", str(files["cert.pem"])) == 0
    assert "OK:" in capsys.readouterr().out

    restore = tmp_path / "restore"
    code = amidsl(
        "unbundle", "--manifest", manifest, "--privkey", str(files["pk.pem"]),
        "--destination", str(restore), "--cert", str(files["cert.pem"]),
    )  # fmt: skip
    assert code == 0
    assert (restore / "web").read_bytes() == files["image"].read_bytes()
    assert f"restored {restore / 'web'}" in capsys.readouterr().out

    assert amidsl("image-ls", "--image", str(restore / "web")) == 0
    listing = capsys.readouterr().out
    assert "/etc/motd" in listing and "/motd -> etc/motd" in listing
    assert user.key_pem.decode() not in listing


def expect_failure(capsys, *args) -> str:
    assert amidsl(*args) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return captured.err


def test_missing_certificate_file_names_the_file(files, capsys):
    err = expect_failure(
        capsys, "verify-bundle", "--manifest", "x.manifest.xml", "--cert", "/no/such/cert.pem"
    )
    assert "certificate file /no/such/cert.pem" in err and "check the path" in err


def test_missing_options_are_listed(capsys):
    err = expect_failure(capsys, "bundle-image", "--image", "disk.img")
    assert "--cert, --privkey, --user, --ec2cert" in err


def test_private_key_that_is_not_a_key_is_named_without_its_content(files, capsys, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN NOTHING-----\nsecret-looking-content\n-----END NOTHING-----\n")
    err = expect_failure(capsys, "unbundle", "--manifest", "m.xml", "--privkey", str(bogus))
    assert f"private key file {bogus}" in err
    assert "secret-looking-content" not in err


def test_wrong_private_key_is_a_clean_error(files, capsys):
    assert bundle(files) == 0
    capsys.readouterr()
    err = expect_failure(
        capsys, "unbundle", "--manifest", str(files["out"] / "web.manifest.xml"),
        "--privkey", str(files["stranger-pk.pem"]), "--destination", str(files["out"] / "r"), "--no-verify",
    )  # fmt: skip
    assert "private key opens neither" in err
    assert "PRIVATE KEY" not in err


def test_corrupt_bundle_is_a_clean_error(files, capsys):
    assert bundle(files) == 0
    capsys.readouterr()
    part = files["out"] / "web.part.0"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0xFF
    part.write_bytes(bytes(data))
    err = expect_failure(
        capsys, "verify-bundle", "--manifest", str(files["out"] / "web.manifest.xml"),
        "--cert", str(files["cert.pem"]),
    )  # fmt: skip
    assert "web.part.0" in err and "SHA-1" in err


def test_wrong_certificate_is_a_clean_error(files, capsys, tmp_path, stranger):
    assert bundle(files) == 0
    capsys.readouterr()
    (tmp_path / "other.pem").write_bytes(stranger.cert_pem)
    err = expect_failure(
        capsys, "verify-bundle", "--manifest", str(files["out"] / "web.manifest.xml"),
        "--cert", str(tmp_path / "other.pem"),
    )  # fmt: skip
    assert "not signed by the key of certificate" in err


def test_bad_block_device_mapping_is_explained(files, capsys):
    err = expect_failure(
        capsys, "bundle-image", "--image", str(files["image"]), "--cert", str(files["cert.pem"]),
        "--privkey", str(files["pk.pem"]), "--ec2cert", str(files["ec2.pem"]),
        "--user", "123456789012", "--block-device-mapping", "root",
    )  # fmt: skip
    assert "virtual=device" in err


def test_bundle_image_writes_no_block_device_mapping_unless_asked(files):
    without_mappings = bundle_args(files)[:-2]
    assert without_mappings[-2:] == ["--prefix", "web"]
    assert amidsl(*without_mappings) == 0
    manifest_path = files["out"] / "web.manifest.xml"
    assert read_manifest(manifest_path).block_device_mappings == ()
    assert "<block_device_mapping>" not in manifest_path.read_text()


def test_bundle_image_takes_the_mappings_as_ec2_bundle_image_does(files):
    # -B/--block-device-mapping: comma-separated virtual=device pairs, written sorted by virtual name.
    args = [*bundle_args(files)[:-2], "-B", "root=/dev/sda1, ami=sda1,ephemeral0=sdb"]
    assert amidsl(*args) == 0
    assert read_manifest(files["out"] / "web.manifest.xml").block_device_mappings == (
        BlockDeviceMapping("ami", "sda1"),
        BlockDeviceMapping("ephemeral0", "sdb"),
        BlockDeviceMapping("root", "/dev/sda1"),
    )


def test_image_ls_of_a_missing_image(capsys, tmp_path):
    err = expect_failure(capsys, "image-ls", "--image", str(tmp_path / "none.img"))
    assert f"image {tmp_path / 'none.img'} does not exist" in err


def test_image_ls_of_a_file_that_is_no_image_names_no_internals(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not a filesystem\n")
    err = expect_failure(capsys, "image-ls", "--image", str(tmp_path / "notes.txt"))
    assert "cannot read" in err and "as an ext2/3/4 filesystem image" in err
    assert "build_image" not in err


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file owned by uid 1000 needs root")
def test_image_ls_lines_align_whatever_the_owner(tmp_path, capsys):
    (tmp_path / "root/home/user").mkdir(parents=True)
    os.chown(tmp_path / "root/home/user", 1000, 1000)
    build_image(tmp_path / "root", tmp_path / "disk.img")
    assert amidsl("image-ls", "--image", str(tmp_path / "disk.img")) == 0
    lines = capsys.readouterr().out.splitlines()
    root = next(line for line in lines if line.endswith(" /"))
    home = next(line for line in lines if line.endswith(" /home/user"))
    assert root.startswith("d0") and " 0:0 " in root and " 1000:1000 " in home
    assert home.rindex(" /home/user") == root.rindex(" /")  # one column for paths


def test_bundle_image_creates_its_destination_or_says_why_not(files, capsys, tmp_path):
    nested = tmp_path / "new" / "bundle"
    files["out"] = nested
    assert bundle(files) == 0 and (nested / "web.manifest.xml").is_file()
    capsys.readouterr()
    (tmp_path / "a-file").write_text("")
    files["out"] = tmp_path / "a-file" / "bundle"
    err = expect_failure(capsys, *bundle_args(files))
    assert f"--destination {tmp_path / 'a-file' / 'bundle'}: cannot create it" in err


def test_image_ls_shows_a_disks_partition_table_and_boot_loader_then_the_root_partitions_files(
    tmp_path, capsys
):
    import subprocess

    from amidsl.bundle.e2fs import tool
    from amidsl.node import amidsl_node as node

    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/motd").write_text("hello\n")
    disk = tmp_path / "disk.img"
    offset = f"offset={node.PARTITION_START}"
    mke2fs = [
        tool("mke2fs"),
        "-q",
        "-F",
        "-t",
        "ext4",
        "-E",
        offset,
        "-d",
        str(tmp_path / "root"),
        str(disk),
        "8M",
    ]
    subprocess.run(mke2fs, check=True, capture_output=True)
    record = node.master_boot_record(b"", b"\x01\x02\x03\x04", [node.partition_entry(2048, 8 * 2048)])
    with open(disk, "r+b") as f:
        f.write(record)
    assert amidsl("image-ls", "--image", str(disk)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "# layout: a disk with an MBR partition table (1 partition(s))",
        "# partition 1: Linux (0x83), bootable, from sector 2048, 16384 sectors (8 MiB)",
        "# boot loader: boot code in the MBR is not GRUB 2's",
    ]
    assert any(line.endswith(" /etc/motd") for line in lines)

    build_image(tmp_path / "root", tmp_path / "fs.img")
    assert amidsl("image-ls", "--image", str(tmp_path / "fs.img")) == 0
    out = capsys.readouterr().out
    assert out.startswith("# layout: a bare filesystem, no partition table (a paravirtual image)\n")


def test_bundle_image_parses_each_key_and_certificate_once(files, capsys, monkeypatch):
    from cryptography import x509

    from amidsl.bundle import keys

    parsed: list[str] = []

    def counted(name, parse):
        def parse_and_count(*args, **kwargs):
            parsed.append(name)
            return parse(*args, **kwargs)

        return parse_and_count

    monkeypatch.setattr(
        x509, "load_pem_x509_certificate", counted("certificate", x509.load_pem_x509_certificate)
    )
    monkeypatch.setattr(keys, "load_pem_private_key", counted("private key", keys.load_pem_private_key))
    assert bundle(files) == 0
    assert sorted(parsed) == ["certificate", "certificate", "private key"]  # user's, EC2's; the user's key


def test_bundle_image_with_a_key_that_is_not_the_certificates_says_so(files, capsys):
    files["pk.pem"] = files["stranger-pk.pem"]
    err = expect_failure(capsys, *bundle_args(files))
    assert "the private key does not belong to certificate" in err
    assert not list(files["out"].iterdir())  # nothing bundled


def test_bundle_image_refuses_an_image_over_the_instance_store_limit_before_any_work(
    files, capsys, tmp_path, monkeypatch
):
    from amidsl.bundle import bundle as bundling
    from amidsl.node.amidsl_node import MAX_IMAGE_MB

    def no_bundling(*args, **kwargs):
        raise AssertionError("bundling started")

    monkeypatch.setattr(bundling, "stream_bundle", no_bundling)
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate((MAX_IMAGE_MB + 1) * 1024 * 1024)  # sparse: no disk used
    files["image"], files["out"] = big, tmp_path / "obig"
    err = expect_failure(capsys, *bundle_args(files))
    assert f"--image {big}" in err and f"{MAX_IMAGE_MB} MB" in err
    assert not files["out"].exists()


def test_bundle_image_takes_an_image_of_exactly_the_limit_as_far_as_bundling(
    files, capsys, tmp_path, monkeypatch
):
    from amidsl.bundle import bundle as bundling
    from amidsl.node.amidsl_node import MAX_IMAGE_MB

    class Started(Exception):
        pass

    def stop_at_bundling(*args, **kwargs):
        raise Started

    monkeypatch.setattr(bundling, "stream_bundle", stop_at_bundling)
    largest = tmp_path / "largest.img"
    with open(largest, "wb") as f:
        f.truncate(MAX_IMAGE_MB * 1024 * 1024)
    files["image"] = largest
    with pytest.raises(Started):
        bundle(files)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--user", "12345"), "--user '12345'"),
        (("--prefix", "a/b"), "--prefix 'a/b'"),
        (("--kernel", "ami-123"), "--kernel 'ami-123'"),
        (("--ramdisk", "aki-1a2b3c4d"), "--ramdisk 'aki-1a2b3c4d'"),
        (("-B", "root"), "--block-device-mapping"),
        (("--image", "no-such.img"), "--image no-such.img"),
        (("--privkey", "stranger"), "the private key does not belong to certificate"),
    ],
)
def test_a_refused_bundle_image_creates_no_destination_and_names_the_option(
    files, capsys, tmp_path, change, named
):
    files["out"] = tmp_path / "new" / "bundle"
    option, value = change
    if value == "stranger":
        value = str(files["stranger-pk.pem"])
    err = expect_failure(capsys, *bundle_args(files), option, value)
    assert named in err
    assert "user_id" not in err and "kernel_id" not in err and "ramdisk_id" not in err
    assert not (tmp_path / "new").exists()


def test_a_bundle_image_that_fails_while_bundling_removes_the_destination_it_made(
    files, capsys, tmp_path, monkeypatch
):
    from amidsl.bundle import bundle as bundling
    from amidsl.bundle.errors import BundleError

    def disk_full(*args, **kwargs):
        raise BundleError("bundling failed: No space left on device; check free space and permissions")

    monkeypatch.setattr(bundling, "stream_bundle", disk_full)
    files["out"] = tmp_path / "new" / "bundle"
    assert bundle(files) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
