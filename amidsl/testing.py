"""Helpers for testing specs, yours and amidsl's own (the fixtures are in the pytest plugin,
`simulator.pytest_plugin`)."""

from __future__ import annotations

from amidsl.model.actions import Action, AwsCall, CheckResult, RuntimeValue
from amidsl.settings import AmiSettings


def describe_image_phase(settings: AmiSettings) -> list[Action]:
    """A `test` phase, as the original crate's live test has: the image id is in the settings and
    DescribeImages returns exactly one image for it."""
    return [
        AwsCall(
            "ec2",
            "DescribeImages",
            (("ImageIds", (RuntimeValue("image_id", "ami-register"),)),),
            region=settings.region,
            result_name="describe_images",
            description="look the new image up",
        ),
        CheckResult("describe_images", "Images", 1, description="exactly one image has the id"),
    ]
