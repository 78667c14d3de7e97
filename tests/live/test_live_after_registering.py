"""After RegisterImage, live and offline: a real build over SSH on 127.0.0.1 against moto's server, with
tags, bundle tags, launch permissions, a copy to another region, and force_deregister on a rebuild.

moto keeps tags, launch permissions (organization and OU ARNs included) and copies; it ignores
RegisterImage's ImdsSupport, BootMode, EnaSupport and SriovNetSupport (they are sent, and accepted), and
its ImageLocation (the rebuild test sets it on moto's record, as EC2 keeps it).
"""

from __future__ import annotations

from moto.backends import get_backend

from tests.live.node_settings import ACCOUNT, BUCKET, aws_client, build_over_ssh, build_settings

ORG = "arn:aws:organizations::111122223333:organization/o-abcde12345"
AFTER = {
    "tags": {"team": "web"},
    "bundle_tags": {"retain": "90d"},
    "launch_permissions": ["222233334444", ORG],
    "copy_to_regions": ["us-west-2"],
    "imds_support": "v2.0",  # sent; moto ignores it (an ami-tools build here is paravirtual: no ENA)
    "image_wait_seconds": 60,
}


def named(endpoint: str, region: str, name: str) -> list[dict]:
    found = aws_client("ec2", endpoint, region).describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
    )
    return found["Images"]


def test_a_live_build_tags_shares_and_copies_the_image(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"] |= AFTER
    recorded = build_over_ssh(config)
    result, name = recorded.result, config["ami"]["image_name"]

    assert list(result.copies) == ["us-west-2"]
    for region, image_id in (("us-east-1", result.image_id), ("us-west-2", result.copies["us-west-2"])):
        [image] = named(aws_endpoint, region, name)
        assert image["ImageId"] == image_id and image["State"] == "available"
        assert {t["Key"]: t["Value"] for t in image["Tags"]} == {"amidsl:built-by": "amidsl", "team": "web"}
        shared = aws_client("ec2", aws_endpoint, region).describe_image_attribute(
            ImageId=image_id, Attribute="launchPermission"
        )["LaunchPermissions"]
        assert {"UserId": "222233334444"} in shared and {"OrganizationArn": ORG} in shared
        assert any(
            line.endswith(f"image {image_id} is available in {region} (after about 0 s)")
            for line in recorded.progress
        )

    s3 = aws_client("s3", aws_endpoint)
    prefix = f"{config['ami']['s3_path']}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert keys and all(
        s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"] == [{"Key": "retain", "Value": "90d"}]
        for key in keys
    )


def test_a_live_rebuild_with_force_deregister_replaces_the_image_and_deletes_the_old_bundle(
    node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"] |= {"copy_to_regions": ["us-west-2"], "image_wait_seconds": 60}
    first = build_over_ssh(config).result
    old_prefix = f"{config['ami']['s3_path']}/"
    # moto's RegisterImage drops ImageLocation; EC2 keeps it, and force_deregister finds the bundle by it.
    moto_image = get_backend("ec2")[ACCOUNT]["us-east-1"].amis[first.image_id]
    moto_image.image_location = f"{BUCKET}/{old_prefix}image.manifest.xml"

    config["ami"] |= {"force_deregister": True, "s3_path": config["ami"]["s3_path"] + "-again"}
    second = build_over_ssh(config)
    name = config["ami"]["image_name"]

    said = [line for line in second.progress if "force_deregister: removing" in line]
    assert (
        f"force_deregister: removing image {first.image_id} ({name!r}) in us-east-1, and its bundle"
        in said[0]
    )
    assert f"s3://{BUCKET}/{old_prefix}image.manifest.xml" in said[0]
    assert said[1].endswith(
        f"force_deregister: removing image {first.copies['us-west-2']} ({name!r}) in us-west-2"
    )
    assert [i["ImageId"] for i in named(aws_endpoint, "us-east-1", name)] == [second.result.image_id]
    assert [i["ImageId"] for i in named(aws_endpoint, "us-west-2", name)] == [
        second.result.copies["us-west-2"]
    ]
    assert (
        aws_client("s3", aws_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=old_prefix).get("KeyCount") == 0
    )
