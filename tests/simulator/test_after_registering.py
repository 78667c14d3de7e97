"""After RegisterImage, simulated: tags, waiting, launch permissions, copies and force_deregister."""

from __future__ import annotations

import datetime

import pytest
from botocore.exceptions import ClientError

ORG = "arn:aws:organizations::111122223333:organization/o-abcde12345"
OU = "arn:aws:organizations::111122223333:ou/o-abcde12345/ou-ab12-cdef3456"
COPIES = ["us-west-2", "eu-central-1"]


def images_named(region, name: str, where: str) -> list[dict]:
    found = region.client("ec2", where).describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
    )
    return found["Images"]


def tags_of(image: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])}


def permissions_of(region, image_id: str, where: str) -> list[dict]:
    answer = region.client("ec2", where).describe_image_attribute(
        ImageId=image_id, Attribute="launchPermission"
    )
    return answer["LaunchPermissions"]


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
def test_the_image_and_each_copy_are_tagged_shared_and_reported(run, native_settings, region, bundler):
    settings = native_settings | {
        "bundler": bundler,
        "tags": {"team": "web", "stage": "prod"},
        "launch_permissions": ["2222-3333-4444", ORG, OU],
        "copy_to_regions": COPIES,
    }
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    copies = simulation.result.copies
    assert sorted(copies) == sorted(COPIES)
    for where, image_id in [("us-east-1", simulation.image_id), *copies.items()]:
        [image] = images_named(region, "amidsl-example-ami", where)
        assert image["ImageId"] == image_id
        assert image["State"] == "available"
        assert tags_of(image) == {"amidsl:built-by": "amidsl", "team": "web", "stage": "prod"}
        assert {next(iter(p.items())) for p in permissions_of(region, image_id, where)} == {
            ("UserId", "222233334444"),
            ("OrganizationArn", ORG),
            ("OrganizationalUnitArn", OU),
        }
    lines = [r.output for r in simulation.transcript if r.command == "update-settings"]
    assert f"image_id_us_west_2={copies['us-west-2']}" in lines


def test_deprecate_at_deprecates_the_image_and_each_copy(run, native_settings, region):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=200)
    settings = native_settings | {
        "copy_to_regions": COPIES,
        "deprecate_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    # EC2 rounds to the minute and reports milliseconds.
    shown = (when + datetime.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:00.000Z")
    for where, image_id in [("us-east-1", simulation.image_id), *simulation.result.copies.items()]:
        [image] = region.call("ec2", "DescribeImages", {"ImageIds": [image_id]}, where)["Images"]
        assert image["DeprecationTime"] == shown


def test_the_region_refuses_a_deprecation_time_ec2_refuses(run, native_settings, region):
    simulation = run(native_settings)
    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    with pytest.raises(ClientError, match="DeprecateAt must be in the future"):
        region.call("ec2", "EnableImageDeprecation", {"ImageId": simulation.image_id, "DeprecateAt": past})
    with pytest.raises(ClientError, match=r"InvalidAMIID\.NotFound"):
        region.call("ec2", "EnableImageDeprecation", {"ImageId": "ami-12345678", "DeprecateAt": past})


def test_registerimage_gets_the_attributes_ec2_allows_for_an_instance_store_image(
    run, native_settings, region
):
    settings = native_settings | {  # hvm, as a native build is by default: the template node can boot
        "imds_support": "v2.0",
        "boot_mode": "legacy-bios",
        "ena_support": True,
        "sriov_net_support": "simple",
    }
    simulation = run(settings)
    assert simulation.error is None, simulation.error
    image = region.call("ec2", "DescribeImages", {"ImageIds": [simulation.image_id]})["Images"][0]
    assert (image["ImdsSupport"], image["BootMode"], image["EnaSupport"], image["SriovNetSupport"]) == (
        "v2.0",
        "legacy-bios",
        True,
        "simple",
    )


def test_a_pending_image_is_waited_for_with_progress(native_settings, node, region):
    from amidsl.crate import server_spec
    from simulator import simulate

    region.faults.pending_polls = 3
    lines: list[str] = []
    simulation = simulate(server_spec(native_settings), node=node, region=region, progress=lines.append)
    waited = [line for line in lines if "pending" in line]
    assert waited == [f"    image {simulation.image_id} in us-east-1: pending (0 s of at most 1800 s)"]
    assert region.state(simulation.image_id) == "available"


def test_a_failed_image_fails_the_build_with_ec2s_reason_and_keeps_its_bundle(run, native_settings, region):
    region.faults.fail_image_in = {"us-east-1": "The bundle's parts do not decrypt"}
    simulation = run(native_settings, on_error="cleanup-all")
    error = simulation.error
    assert error is not None and error.phase == "ami-register"
    assert error.description == "wait until the image is available"
    assert "is failed: The bundle's parts do not decrypt (Client.SimulatedFault)" in str(error)
    assert "The image was registered before this failure and stays" in str(error)
    # cleanup-all removes what a failed upload leaves, never the bundle of a registered image.
    listed = region.s3.list_objects_v2(Bucket="amidsl-example-bundles")["Contents"]
    assert "images/example/image.manifest.xml" in [item["Key"] for item in listed]


def test_a_failed_copy_names_the_region_and_keeps_the_image_and_the_other_copies(
    run, native_settings, region
):
    region.faults.fail_image_in = {"eu-central-1": "copy failed"}
    simulation = run(native_settings | {"copy_to_regions": COPIES})
    error = simulation.error
    assert error.description == "wait until the copy in eu-central-1 is available"
    assert "in eu-central-1 is failed: copy failed" in str(error)
    assert [i["State"] for i in images_named(region, "amidsl-example-ami", "us-west-2")] == ["available"]
    assert "us-west-2" in str(error).split("stays, with its bundle in S3:")[1]


def test_the_bundles_objects_get_the_bundle_tags(run, native_settings, region):
    simulation = run(native_settings | {"bundle_tags": {"retain": "90d"}})
    assert simulation.error is None, simulation.error
    for key in ("images/example/image.part.0", "images/example/image.manifest.xml"):
        tagging = region.s3.get_object_tagging(Bucket="amidsl-example-bundles", Key=key)
        assert tagging["TagSet"] == [{"Key": "retain", "Value": "90d"}]


def test_a_second_build_of_the_same_name_is_refused_without_force_deregister(run, native_settings, region):
    assert run(native_settings).error is None
    again = run(native_settings | {"s3-path": "images/second"})
    assert "InvalidAMIName.Duplicate" in str(again.error)


def test_force_deregister_removes_the_old_image_and_its_bundle_after_saying_so(run, native_settings, region):
    first = run(native_settings)
    old_id = first.image_id
    second = run(native_settings | {"s3-path": "images/second", "force_deregister": True})
    assert second.error is None, second.error
    [image] = images_named(region, "amidsl-example-ami", "us-east-1")
    assert image["ImageId"] == second.image_id != old_id
    said = next(r.output for r in second.transcript if r.description.startswith("deregister an existing"))
    assert said.startswith(
        f"deregistered image {old_id} ('amidsl-example-ami') in us-east-1, and its bundle "
        "s3://amidsl-example-bundles/images/example/image.manifest.xml with its 1 part(s)"
    )
    assert "s3://amidsl-example-bundles/images/example/image.manifest.xml" in said
    keys = [item["Key"] for item in region.s3.list_objects_v2(Bucket="amidsl-example-bundles")["Contents"]]
    assert sorted(keys) == ["images/second/image.manifest.xml", "images/second/image.part.0"]


def test_force_deregister_keeps_a_bundle_this_build_just_replaced(run, native_settings, region):
    run(native_settings)
    again = run(native_settings | {"force_deregister": True})
    assert again.error is None, again.error
    said = next(r.output for r in again.transcript if r.description.startswith("deregister an existing"))
    assert "is this build's upload: kept" in said
    keys = [item["Key"] for item in region.s3.list_objects_v2(Bucket="amidsl-example-bundles")["Contents"]]
    assert "images/example/image.manifest.xml" in keys


def test_force_deregister_with_nothing_to_remove_says_so(run, native_settings):
    simulation = run(native_settings | {"force_deregister": True, "copy_to_regions": ["us-west-2"]})
    said = next(r.output for r in simulation.transcript if r.description.startswith("deregister an existing"))
    assert said == "no image named 'amidsl-example-ami' in us-east-1, us-west-2"


# -- the fake region's own rules ------------------------------------------------------------------------


def registered(region, name: str = "plain") -> str:
    """An image registered straight in moto (no bundle checks), as the region's own image."""
    image_id = region.ec2.register_image(Name=name)["ImageId"]
    region._new_image(image_id, region.name)
    return image_id


def test_copyimage_refuses_an_image_that_is_not_available(region):
    region.faults.pending_polls = 2
    image_id = registered(region)
    with pytest.raises(ClientError, match="IncorrectState"):
        region.call(
            "ec2",
            "CopyImage",
            {"SourceImageId": image_id, "SourceRegion": "us-east-1", "Name": "c"},
            "us-west-2",
        )


def test_copyimage_refuses_a_name_already_used_in_the_destination(region):
    image_id = registered(region, "shared-name")
    region.client("ec2", "us-west-2").register_image(Name="shared-name")
    params = {"SourceImageId": image_id, "SourceRegion": "us-east-1", "Name": "shared-name"}
    with pytest.raises(ClientError, match=r"InvalidAMIName\.Duplicate"):
        region.call("ec2", "CopyImage", params, "us-west-2")


def test_copyimage_refuses_an_unknown_source(region):
    params = {"SourceImageId": "ami-0123456789abcdef0", "SourceRegion": "us-east-1", "Name": "c"}
    with pytest.raises(ClientError, match=r"InvalidAMIID\.NotFound"):
        region.call("ec2", "CopyImage", params, "us-west-2")


@pytest.mark.parametrize(
    "entry",
    [
        {"UserId": "12345"},
        {"Group": "everyone"},
        {"OrganizationArn": "o-abcde12345"},
        {"OrganizationalUnitArn": ORG},
        {"UserId": "222233334444", "Group": "all"},
    ],
)
def test_launch_permissions_of_another_shape_are_refused(region, entry):
    image_id = registered(region)
    with pytest.raises(ClientError, match="InvalidAMIAttributeItemValue"):
        region.call(
            "ec2", "ModifyImageAttribute", {"ImageId": image_id, "LaunchPermission": {"Add": [entry]}}
        )
    assert permissions_of(region, image_id, "us-east-1") == []


def test_deregistering_frees_the_name(region):
    image_id = registered(region, "reused")
    region.call("ec2", "DeregisterImage", {"ImageId": image_id})
    assert images_named(region, "reused", "us-east-1") == []
    assert registered(region, "reused") != image_id
