"""The ami-register phase: what runs after the bundle is uploaded, in what order, for both strategies."""

from __future__ import annotations

import datetime
import json
import re
import subprocess

import pytest

from amidsl import crate
from amidsl.model.actions import (
    AwsCall,
    DeregisterByName,
    PlanWarning,
    RuntimeValue,
    TagBundle,
    UpdateSettings,
    WaitForImage,
)
from amidsl.model.plan import build_plan
from amidsl.render.preview import render_json, render_text
from amidsl.render.shell import render_script
from amidsl.settings import resolve
from amidsl.strategies.register import ami_register

# A year from now: EC2 takes a deprecation time in the future (at most 2 years on for a public image).
DEPRECATE_AT = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)).strftime(
    "%Y-%m-%dT%H:%M:%SZ"
)
ORG = "arn:aws:organizations::111122223333:organization/o-abcde12345"
OU = "arn:aws:organizations::111122223333:ou/o-abcde12345/ou-ab12-cdef3456"
EVERYTHING = {
    "tags": {"team": "web"},
    "bundle_tags": {"retain": "90d"},
    "launch_permissions": ["222233334444", ORG, OU],
    "copy_to_regions": ["us-west-2"],
    "bundler": "native",  # HVM by default
    "imds_support": "v2.0",
    "boot_mode": "legacy-bios",
    "ena_support": True,
    "sriov_net_support": "simple",
    "force_deregister": True,
    "image_wait_seconds": 600,
    "deprecate_at": DEPRECATE_AT,
}


def steps(actions) -> list[str]:
    """Each action as `Type` or `Type:Operation@region`, in order (warnings left out)."""
    out = []
    for action in actions:
        if isinstance(action, AwsCall):
            out.append(f"AwsCall:{action.operation}@{action.region}")
        elif isinstance(action, (WaitForImage, TagBundle, DeregisterByName)):
            out.append(
                f"{type(action).__name__}@{getattr(action, 'region', action.__dict__.get('bundle_region'))}"
            )
        elif not isinstance(action, PlanWarning):
            out.append(type(action).__name__)
    return out


def call(actions, operation: str, region: str) -> AwsCall:
    [found] = [
        a for a in actions if isinstance(a, AwsCall) and (a.operation, a.region) == (operation, region)
    ]
    return found


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
def test_both_strategies_register_through_the_same_phase(raw_settings, bundler):
    s = resolve(raw_settings | {"bundler": bundler})
    assert crate.ami_register(s) == ami_register(s)


def test_by_default_the_image_is_registered_tagged_as_amidsls_and_waited_for(raw_settings):
    actions = ami_register(resolve(raw_settings))
    assert steps(actions) == [
        "AwsCall:RegisterImage@eu-west-1",
        "UpdateSettings",
        "AwsCall:CreateTags@eu-west-1",
        "WaitForImage@eu-west-1",
    ]
    tags = call(actions, "CreateTags", "eu-west-1")
    assert dict(tags.params) == {
        "Resources": (RuntimeValue("image_id", "ami-register"),),
        "Tags": ({"Key": "amidsl:built-by", "Value": "amidsl"},),
    }
    assert actions[-1].timeout_seconds == 1800


def test_everything_after_registering_runs_in_order(raw_settings):
    actions = ami_register(resolve(raw_settings | EVERYTHING))
    assert steps(actions) == [
        "DeregisterByName@eu-west-1",
        "TagBundle@eu-west-1",
        "AwsCall:RegisterImage@eu-west-1",
        "UpdateSettings",
        "AwsCall:CreateTags@eu-west-1",
        "WaitForImage@eu-west-1",
        "AwsCall:EnableImageDeprecation@eu-west-1",
        "AwsCall:ModifyImageAttribute@eu-west-1",
        "AwsCall:CopyImage@us-west-2",
        "UpdateSettings",
        "AwsCall:CreateTags@us-west-2",
        "WaitForImage@us-west-2",
        "AwsCall:EnableImageDeprecation@us-west-2",
        "AwsCall:ModifyImageAttribute@us-west-2",
    ]


def test_registerimage_gets_the_optional_attributes(raw_settings):
    params = dict(call(ami_register(resolve(raw_settings | EVERYTHING)), "RegisterImage", "eu-west-1").params)
    assert (params["ImdsSupport"], params["BootMode"], params["EnaSupport"], params["SriovNetSupport"]) == (
        "v2.0",
        "legacy-bios",
        True,
        "simple",
    )
    assert params["VirtualizationType"] == "hvm"


def test_launch_permissions_have_ec2s_shapes_and_public_is_the_group_all(raw_settings):
    actions = ami_register(resolve(raw_settings | EVERYTHING | {"public_image": True}))
    permission = dict(call(actions, "ModifyImageAttribute", "us-west-2").params)["LaunchPermission"]
    assert permission == {
        "Add": [
            {"UserId": "222233334444"},
            {"OrganizationArn": ORG},
            {"OrganizationalUnitArn": OU},
            {"Group": "all"},
        ]
    }


def test_a_copy_takes_the_images_id_name_and_tags_and_keeps_its_own_id(raw_settings):
    actions = ami_register(resolve(raw_settings | EVERYTHING))
    copy = dict(call(actions, "CopyImage", "us-west-2").params)
    assert copy == {
        "SourceImageId": RuntimeValue("image_id", "ami-register"),
        "SourceRegion": "eu-west-1",
        "Name": "web-server-2026-11",
        "Description": "web server base image",
    }
    kept = [a for a in actions if isinstance(a, UpdateSettings)][1]
    assert kept.fields == (("image_id_us_west_2", "ImageId"),)
    tags = dict(call(actions, "CreateTags", "us-west-2").params)
    assert tags["Resources"] == (RuntimeValue("image_id_us_west_2", "ami-register"),)
    assert tags["Tags"] == ({"Key": "amidsl:built-by", "Value": "amidsl"}, {"Key": "team", "Value": "web"})


def test_force_deregister_covers_every_region_and_keeps_this_builds_own_bundle(raw_settings):
    actions = ami_register(resolve(raw_settings | EVERYTHING))
    [deregister] = [a for a in actions if isinstance(a, DeregisterByName)]
    assert deregister == DeregisterByName(
        "web-server-2026-11",
        ("eu-west-1", "us-west-2"),
        "eu-west-1",
        "acme-ami-bundles/web/2026-11/image.manifest.xml",
    )


def test_the_preview_warns_of_a_public_image_and_of_what_force_deregister_removes(raw_settings):
    spec = crate.server_spec(raw_settings | EVERYTHING | {"public_image": True})
    text = render_text(build_plan(spec, phases=["ami-register"]))
    assert (
        "WARNING: public_image = true: every AWS account can launch 'web-server-2026-11' and its copies"
        in text
    )
    assert (
        "WARNING: force_deregister: any image of this account named 'web-server-2026-11' in eu-west-1, "
        "us-west-2 is deregistered before registering; in eu-west-1 the S3 bundle it was registered from "
        "is deleted, and an EBS-backed one's snapshots (unless another image uses them)"
    ) in text
    assert re.search(r"\n  tags +team=web\n", text)


def test_a_private_image_has_no_public_warning(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings | EVERYTHING), phases=["ami-register"]))
    assert "public_image" in text and "every AWS account can launch" not in text


def test_the_json_preview_shows_the_new_steps_on_the_controller(raw_settings):
    plan = json.loads(
        render_json(build_plan(crate.server_spec(raw_settings | EVERYTHING), phases=["ami-register"]))
    )
    actions = plan["phases"][0]["actions"]
    assert {a["type"] for a in actions} >= {"wait_for_image", "tag_bundle", "deregister_by_name"}
    assert {a["runs_on"] for a in actions} == {"controller"}
    wait = next(a for a in actions if a["type"] == "wait_for_image")
    assert wait["fields"]["image_id"] == {"runtime": "image_id", "produced_by": "ami-register"}


def test_the_script_with_every_option_passes_shellcheck(raw_settings, tmp_path):
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(crate.server_spec(raw_settings | EVERYTHING))))
    checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    text = script.read_text()
    assert "aws ec2 copy-image --region us-west-2 --source-image-id" in text
    assert "--imds-support v2.0 --ena-support --sriov-net-support simple" in text  # a boolean is a flag
    assert "aws ec2 wait image-available --region us-west-2 --image-ids" in text
    assert "aws ec2 enable-image-deprecation --region us-west-2 --image-id" in text
    assert f"--deprecate-at {DEPRECATE_AT}" in text
    assert "--owners self --filters Name=name,Values=web-server-2026-11" in text


def test_without_deprecate_at_no_image_is_deprecated(raw_settings):
    actions = ami_register(resolve(raw_settings | EVERYTHING | {"deprecate_at": None}))
    assert not [step for step in steps(actions) if "EnableImageDeprecation" in step]


def test_on_an_ebs_build_force_deregister_speaks_of_the_snapshots_in_every_region(raw_settings):
    given = {"bundler": "native", "backing": "ebs", "force_deregister": True}
    given["copy_to_regions"] = ["us-west-2"]
    plan = build_plan(crate.server_spec(raw_settings | given), phases=["ami-register"])
    text = render_text(plan)
    assert (
        "WARNING: force_deregister: any image of this account named 'web-server-2026-11' in eu-west-1, "
        "us-west-2 is deregistered before registering, and in each of those regions its EBS snapshots are "
        "deleted (unless another image uses them)"
    ) in text
    assert "1. deregister an existing image of the same name and delete its snapshots [controller]" in text
    assert "the S3 bundle it was registered from is deleted" not in text
    assert "# below is deregistered, and its EBS snapshots in its region unless another image uses" in (
        render_script(plan)
    )
