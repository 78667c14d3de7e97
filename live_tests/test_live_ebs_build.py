"""The live build, EBS-backed: the node program's disk goes into an EBS snapshot through the EBS direct
APIs and is registered as an EBS-backed image; the test checks what EC2 says of it, then removes the
image and its snapshot with amidsl's own deletion code, also when a check fails."""

from __future__ import annotations

from live_tests.body import live_test_group
from live_tests.images import (
    assert_registered_ebs_image,
    aws_for,
    build,
    ebs_build_settings,
    remove_built_image,
)


def test_live_ebs_build_registers_an_ebs_backed_image_on_its_completed_snapshot(live_settings):
    raw, live = live_settings
    raw = ebs_build_settings(raw)
    aws = aws_for(raw, live)
    ec2 = aws.client("ec2")
    try:
        result = build(live_test_group(raw), raw, live)
        assert result.phases[-1] == "test"
        assert_registered_ebs_image(ec2, aws.client("ebs"), result)
    finally:
        left = remove_built_image(ec2, None, raw["image_name"])
    assert not left, f"left behind in {raw['region']}: {left}"
