"""Native builds in the simulator: the real node program against the fake node, the strict region."""

from __future__ import annotations

from amidsl.bundle import BlockDeviceMapping
from amidsl.example import example_credentials
from simulator.region import SECRET_KEY
from tests.node.test_node_boot import needs_grub


def node_files(node):
    return [path for path in node.root.rglob("*") if path.is_file() and not path.is_symlink()]


def test_a_native_build_registers_an_image_the_strict_region_accepts(run, native_settings, region):
    simulation = run(native_settings)
    assert simulation.error is None, simulation.error
    image = region.ec2.describe_images(ImageIds=[simulation.image_id])["Images"][0]
    assert image["ImageLocation"] == "amidsl-example-bundles/images/example/image.manifest.xml"
    inspection = simulation.inspect_image()  # verifies the signature and parts, then unbundles
    assert inspection.manifest.user == "123456789012"
    paths = inspection.paths()
    assert {"/etc/nginx/nginx.conf", "/usr/bin/program-000", "/home/admin/notes.txt"} <= paths
    for gone in (
        "/opt/ami-tools/amidsl_node.py",
        "/etc/ssl/private/node.pem",
        "/root/.ssh/id_rsa",
    ):
        assert gone not in paths
    # destination_dir (/tmp) stays, empty: the launched system needs it.
    assert "/tmp" in paths and not any(path.startswith("/tmp/") for path in paths)
    assert any(left.path == "/etc/ssl/private/node.pem" for left in inspection.left_out)


def test_the_node_program_runs_from_the_copy_the_install_phase_shipped(run, native_settings, node):
    simulation = run(native_settings, ["install"])
    assert simulation.error is None, simulation.error
    shipped = node.host_path("/opt/ami-tools/amidsl_node.py")
    assert shipped.is_file() and node.mode("/opt/ami-tools") & 0o077 == 0
    shipped.write_text(shipped.read_text() + "# changed on the node\n")
    again = run(native_settings, ["install"])
    assert again.error is None  # install writes a fresh copy and checks it
    node.host_path("/opt/ami-tools/amidsl_node.py").write_text("raise SystemExit(9)\n")
    bundled = run(native_settings, ["ami-bundle"])
    assert bundled.error is not None and bundled.error.phase == "ami-bundle"


def test_no_signing_key_and_no_aws_secret_ever_reach_the_node(run, native_settings, node):
    simulation = run(native_settings, ["install", "configure", "ami-bundle", "ami-upload"])
    assert simulation.error is None, simulation.error
    key_pem, _ = example_credentials()
    key_body = key_pem.strip().splitlines()[2].encode()
    for path in node_files(node):
        data = path.read_bytes()
        assert key_body not in data, path
        assert SECRET_KEY.encode() not in data, path
    assert not node.exists("/opt/ami-tools/credentials")


def test_cleanup_removes_the_node_program_and_the_parts(run, native_settings, node):
    simulation = run(native_settings)
    assert simulation.error is None, simulation.error
    assert not node.exists("/opt/ami-tools")
    assert node.glob("/tmp", "image.part.*") == []


def test_a_failed_native_build_registers_nothing_and_removes_the_node_program(
    run, native_settings, node, region
):
    region.faults.reject_register = "InvalidManifest"
    simulation = run(native_settings)
    assert simulation.error is not None and simulation.error.phase == "ami-register"
    assert not node.exists("/opt/ami-tools")
    assert "No credential was on the node" in str(simulation.error)
    assert "run the build again from phase ami-register (the bundle is in S3)" in str(simulation.error)
    assert region.ec2.describe_images(Owners=["self"])["Images"] == []


def test_ctrl_c_while_bundling_removes_the_node_program_and_says_what_is_left(
    run, native_settings, node, monkeypatch
):
    from simulator.executor import SimulatorBackend

    real = SimulatorBackend.run_node_program

    def interrupted(self, action, request):
        if action.command == "bundle":
            raise KeyboardInterrupt
        return real(self, action, request)

    monkeypatch.setattr(SimulatorBackend, "run_node_program", interrupted)
    simulation = run(native_settings)
    error = simulation.error
    assert error is not None and (error.phase, error.index) == ("ami-bundle", 3)
    assert "was interrupted (Ctrl-C)" in str(error)
    assert "node program was removed (/opt/ami-tools)" in str(error)
    assert "The node program removes its partial image and parts from /tmp" in str(error)
    assert not node.exists("/opt/ami-tools")


def test_the_check_reports_what_the_node_has(run, native_settings):
    simulation = run(native_settings, ["install"])
    check = simulation.transcript[-1]
    assert check.output.splitlines()[-1].startswith("node: python 3.")
    assert "MB free in destination_dir" in check.output


@needs_grub
def test_an_hvm_build_of_a_node_with_a_kernel_and_grub_registers_a_grub_disk(run, native_settings, region):
    simulation = run(native_settings)  # the example is hvm, and the template node has a kernel and GRUB
    assert simulation.error is None, simulation.error
    image = region.ec2.describe_images(ImageIds=[simulation.image_id])["Images"][0]
    assert image["VirtualizationType"] == "hvm"
    inspection = simulation.inspect_image()
    assert inspection.layout[1].startswith("partition 1: Linux (0x83), bootable, from sector 2048")
    assert inspection.layout[2].startswith("boot loader: GRUB 2 for BIOS")
    assert {"/boot/vmlinuz-6.1.0-28-amd64", "/boot/grub/i386-pc/normal.mod"} <= inspection.paths()


def registered_mappings(region, image_id: str, where: str = "us-east-1") -> list:
    """The block device mappings DescribeImages shows for the image."""
    answer = region.call("ec2", "DescribeImages", {"ImageIds": [image_id]}, where)
    return answer["Images"][0]["BlockDeviceMappings"]


def test_a_native_build_writes_no_block_device_mapping_the_settings_do_not_ask_for(
    run, native_settings, region
):
    simulation = run(native_settings)  # hvm, as the example is: the strict region registers it
    assert simulation.error is None, simulation.error
    manifest = simulation.inspect_image().manifest
    assert manifest.block_device_mappings == ()
    assert "<block_device_mapping>" not in manifest.signed_text
    assert registered_mappings(region, simulation.image_id) == []


def test_the_block_device_mappings_the_settings_give_reach_the_manifest_and_the_image(
    run, native_settings, region
):
    mappings = [
        {"device_name": "/dev/sdc", "virtual_name": "ephemeral1"},
        {"device_name": "/dev/sdb", "virtual_name": "ephemeral0"},
    ]
    simulation = run(native_settings | {"block_device_mappings": mappings, "copy_to_regions": ["us-west-2"]})
    assert simulation.error is None, simulation.error
    assert simulation.inspect_image().manifest.block_device_mappings == (
        BlockDeviceMapping("ephemeral0", "/dev/sdb"),
        BlockDeviceMapping("ephemeral1", "/dev/sdc"),
    )
    registered = [
        {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral1"},
        {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
    ]
    assert registered_mappings(region, simulation.image_id) == registered
    copy = simulation.result.copies["us-west-2"]
    assert registered_mappings(region, copy, "us-west-2") == registered  # a copy keeps them
