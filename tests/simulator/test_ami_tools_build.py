"""Whole ami-tools builds under the strict tool models: the settings that work with the real tools."""

from __future__ import annotations

from amidsl.crate import server_spec
from simulator import FakeRegion, simulate, template_node


def test_a_region_the_tools_do_not_know_uploads_through_url(example_settings):
    region = FakeRegion("eu-central-1", node_factory=lambda: template_node(payload_mb=0))
    node = template_node(payload_mb=0)
    try:
        simulation = simulate(
            server_spec(example_settings | {"region": "eu-central-1"}), node=node, region=region
        )
        assert simulation.image_id
        upload = next(r for r in simulation.transcript if r.phase == "ami-upload")
        assert '--url "${AMIDSL_S3_URL:-https://s3.eu-central-1.amazonaws.com}"' in upload.command
    finally:
        node.close()
        region.close()


def test_the_instance_profile_route_uploads_without_keys_on_an_imdsv1_instance(
    run, example_settings, node, region
):
    node.instance_profile = region.credentials
    node.imdsv2_required = False
    simulation = run(example_settings | {"upload_credentials": "instance-profile"})
    assert simulation.error is None, simulation.error
    upload = next(r for r in simulation.transcript if r.phase == "ami-upload")
    assert "AMIDSL_SECRET_KEY" not in upload.command and " -a " not in upload.command


def test_the_instance_profile_route_fails_where_the_instance_requires_imdsv2(
    run, example_settings, node, region
):
    node.instance_profile = region.credentials
    simulation = run(example_settings | {"upload_credentials": "instance-profile"})
    assert simulation.error is not None and simulation.error.phase == "ami-upload"
    assert "401 Unauthorized" in str(simulation.error)


def test_inherit_builds_ruby_27_and_still_fails_where_imdsv2_is_required(run, example_settings, node):
    simulation = run(example_settings | {"inherit": True})
    assert simulation.error is not None and simulation.error.phase == "ami-bundle"
    assert simulation.error.status == 12 and "use --no-inherit" in str(simulation.error)
    assert any("rbenv install --skip-existing 2.7.8" in r.command for r in simulation.transcript)


def test_inherit_works_on_ruby_27_where_the_instance_allows_imdsv1(run, example_settings, node):
    node.imdsv2_required = False
    simulation = run(example_settings | {"inherit": True})
    assert simulation.error is None, simulation.error
    mappings = {(m.virtual, m.device) for m in simulation.inspect_image().manifest.block_device_mappings}
    assert mappings == {("ami", "sda1"), ("root", "/dev/sda1")}  # from instance metadata, not invented


def test_a_rerun_of_the_bundle_phase_works_although_the_tool_leaves_its_image_file(
    run, example_settings, node
):
    first = run(example_settings, ["install", "configure", "ami-bundle"])
    node.write_bytes("/tmp/image", b"left by an interrupted run")
    again = run(example_settings, ["ami-bundle"])
    assert first.error is None and again.error is None, again.error
    assert not node.exists("/tmp/image")


def test_the_default_build_leaves_no_block_device_mapping_in_the_manifest(run, example_settings):
    simulation = run(example_settings)
    assert simulation.inspect_image().manifest.block_device_mappings == ()


def test_the_block_device_mappings_the_settings_give_reach_the_registered_image(
    run, example_settings, region
):
    mapping = {"device_name": "/dev/sdb", "virtual_name": "ephemeral0"}
    simulation = run(example_settings | {"block_device_mappings": [mapping]})
    assert simulation.error is None, simulation.error
    assert simulation.inspect_image().manifest.block_device_mappings == ()  # no -B: RegisterImage has them
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert image["BlockDeviceMappings"] == [{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}]
