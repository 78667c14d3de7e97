"""The EBS-backed native strategy's plan: what the preview and the script say an encrypted build and its
copies do, exactly as they run."""

from __future__ import annotations

import re
import subprocess

import pytest

from amidsl import crate
from amidsl.model.actions import AwsCall, UploadSnapshot
from amidsl.model.plan import build_plan
from amidsl.render.preview import render_text
from amidsl.render.shell import render_script
from amidsl.settings import SettingsError

KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def ebs(raw_settings: dict, **given) -> dict:
    return raw_settings | {"bundler": "native", "backing": "ebs"} | given


def actions(settings: dict, phase: str) -> tuple:
    return build_plan(crate.server_spec(settings), phases=[phase]).phase(phase).actions


def test_an_encrypted_build_starts_its_snapshot_encrypted_with_the_key(raw_settings):
    [upload] = [
        a
        for a in actions(ebs(raw_settings, encrypted=True, kms_key_id=KEY), "ami-upload")
        if isinstance(a, UploadSnapshot)
    ]
    assert upload.encryption == (("Encrypted", True), ("KmsKeyArn", KEY))
    [plain] = [a for a in actions(ebs(raw_settings), "ami-upload") if isinstance(a, UploadSnapshot)]
    assert plain.encryption == ()


def test_the_preview_and_script_say_which_key_encrypts_and_what_a_simulation_cannot_check(raw_settings):
    settings = ebs(raw_settings, encrypted=True, kms_key_id=KEY, launch_permissions=["222233334444"])
    plan = build_plan(crate.server_spec(settings))
    text = render_text(plan)
    assert (
        f"note: encrypted = true: the snapshot, and every instance's root volume, is encrypted with {KEY}"
        in text
    )
    assert "A simulation checks the key ARN's form and region only" in text
    assert "WARNING: the image is shared with 222233334444 and encrypted with" in text
    assert f"encrypted with {KEY}); launched by today's instance types" in text
    script = render_script(plan)
    assert f"StartSnapshot (encrypted with the KMS key {KEY}; tags: " in script


def test_copies_of_an_encrypted_image_are_asked_to_be_encrypted(raw_settings):
    settings = ebs(raw_settings, encrypted=True, copy_to_regions=["us-west-2"])
    [copy] = [
        a for a in actions(settings, "ami-register") if isinstance(a, AwsCall) and a.operation == "CopyImage"
    ]
    assert ("Encrypted", True) in copy.params
    [tagging] = [value for key, value in copy.params if key == "TagSpecifications"]
    assert tagging == (
        {"ResourceType": "snapshot", "Tags": ({"Key": "amidsl:built-by", "Value": "amidsl"},)},
    )
    text = render_text(build_plan(crate.server_spec(settings)))
    assert (
        "the account's default EBS key in eu-west-1 (aws/ebs unless the account set another); the copy in "
        "us-west-2 with the account's default EBS key in us-west-2." in text
    )
    [plain] = [
        a
        for a in actions(ebs(raw_settings, copy_to_regions=["us-west-2"]), "ami-register")
        if isinstance(a, AwsCall) and a.operation == "CopyImage"
    ]
    assert "Encrypted" not in dict(plain.params)


def test_a_copy_region_with_a_key_of_its_own_gets_its_copy_encrypted_with_it(raw_settings):
    west_key = KEY.replace("eu-west-1", "us-west-2")
    settings = ebs(
        raw_settings,
        encrypted=True,
        copy_to_regions=["us-west-2", "us-east-2"],
        copy_kms_key_ids={"us-west-2": west_key},
    )
    copies = {
        a.region: dict(a.params)
        for a in actions(settings, "ami-register")
        if isinstance(a, AwsCall) and a.operation == "CopyImage"
    }
    assert (copies["us-west-2"]["Encrypted"], copies["us-west-2"]["KmsKeyId"]) == (True, west_key)
    assert copies["us-east-2"]["Encrypted"] is True and "KmsKeyId" not in copies["us-east-2"]
    text = render_text(build_plan(crate.server_spec(settings)))
    assert re.search(rf"\n  copy_kms_key_ids +us-west-2={west_key}\n", text)
    assert (
        f"; the copy in us-west-2 with {west_key}; the copy in us-east-2 with the account's default EBS "
        "key in us-east-2." in text
    )


def test_the_script_of_an_encrypted_build_with_copies_passes_shellcheck(raw_settings, tmp_path):
    script = tmp_path / "build.sh"
    west_key = KEY.replace("eu-west-1", "us-west-2")
    settings = ebs(
        raw_settings, encrypted=True, copy_to_regions=["us-west-2"], copy_kms_key_ids={"us-west-2": west_key}
    )
    script.write_text(render_script(build_plan(crate.server_spec(settings))))
    assert "aws ec2 copy-image --region us-west-2" in script.read_text()
    assert "--encrypted" in script.read_text() and "--tag-specifications" in script.read_text()
    assert f"--kms-key-id {west_key}" in script.read_text()
    checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_an_image_without_ena_support_is_said_not_to_launch_on_nitro_types(raw_settings):
    text = render_text(build_plan(crate.server_spec(ebs(raw_settings, ena_support=False))))
    assert "WARNING: ena_support = false: Nitro instance types" in text
    assert "launched by today's instance types" not in text and "no ENA support" in text
    assert "Nitro instance types" not in render_text(build_plan(crate.server_spec(ebs(raw_settings))))


def test_a_build_resumed_at_ami_register_previews_and_scripts_the_snapshot_it_registers(raw_settings):
    settings = ebs(raw_settings, snapshot_id="snap-0123456789abcdef0")
    plan = build_plan(crate.server_spec(settings), phases=["ami-register", "cleanup"])
    assert '"SnapshotId": "snap-0123456789abcdef0"' in render_text(plan)
    script = render_script(plan)
    assert "snap-0123456789abcdef0" in script and "AMIDSL_SNAPSHOT_ID" not in script


def test_a_snapshot_id_given_to_a_build_that_uploads_one_is_refused_before_anything_runs(raw_settings):
    settings = ebs(raw_settings, snapshot_id="snap-0123456789abcdef0")
    with pytest.raises(SettingsError) as refused:
        build_plan(crate.server_spec(settings))
    assert str(refused.value.problems[0]).startswith(
        "snapshot_id: is given (snap-0123456789abcdef0), to resume at ami-register on that snapshot, but the "
        "phases asked for include ami-upload"
    )
