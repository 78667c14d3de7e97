"""amidsl's deletion code against real AWS: an S3-backed image built under a name and an S3 folder of its
own is deregistered and its bundle deleted (the main live test keeps its image, for a person to launch)."""

from __future__ import annotations

from live_tests.body import live_test_group
from live_tests.images import aws_for, build, removal_build_settings, remove_built_image


def test_live_s3_backed_image_and_its_bundle_are_removed_by_amidsl(live_settings):
    raw, live = live_settings
    raw = removal_build_settings(raw)
    aws = aws_for(raw, live)
    ec2, s3 = aws.client("ec2"), aws.client("s3")
    folder = f"{raw['s3_path']}/"
    try:
        result = build(live_test_group(raw), raw, live)
        assert result.image_id and result.phases[-1] == "test"
        assert s3.list_objects_v2(Bucket=raw["s3_bucket"], Prefix=folder).get("KeyCount", 0) > 0
    finally:
        left = remove_built_image(ec2, s3, raw["image_name"])
    assert not left, f"left behind in {raw['region']}: {left}"
    assert (
        ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [raw["image_name"]]}])[
            "Images"
        ]
        == []
    )
    assert s3.list_objects_v2(Bucket=raw["s3_bucket"], Prefix=folder).get("KeyCount", 0) == 0
