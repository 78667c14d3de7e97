"""The original crate's live test: build a real AMI, then the test phase finds it with DescribeImages."""

from __future__ import annotations

from amidsl.live.build import build_on_host, make_ami
from live_tests.body import live_test_group


def test_live_build_registers_an_image_describe_images_finds(live_settings):
    raw, live = live_settings
    group = live_test_group(raw)
    if live.host:
        # An existing node: every phase, cleanup included, then the test phase.
        result = build_on_host(live.host, raw, spec=group, live=live, progress=print)
        image_id = result.image_id
        assert result.phases[-1] == "test"
    else:
        # A node launched for the build and terminated afterwards (the test phase runs before that).
        image_id = make_ami(group, raw, live=live, progress=print)
    assert image_id is not None and image_id.startswith("ami-")
    print(f"registered {image_id}: deregister it and delete s3://{raw['s3_bucket']}/{raw.get('s3_path', '')}")
