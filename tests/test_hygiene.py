"""The preview of image hygiene: what is done to the image, and loud warnings for what is kept."""

from __future__ import annotations

from pathlib import Path

from amidsl import crate
from amidsl.model.plan import build_plan
from amidsl.node.amidsl_node import HYGIENE_NAMES
from amidsl.render.preview import render_text


def preview(raw: dict, phase: str) -> str:
    return render_text(build_plan(crate.server_spec(raw), phases=[phase]))


def test_the_native_preview_says_what_hygiene_leaves_out_empties_and_keeps_empty(raw_settings):
    text = preview(raw_settings | {"bundler": "native"}, "ami-bundle")
    assert (
        "image hygiene (the node program applies it as it images the volume): left out: ssh_host_keys" in text
    )
    assert "kept as empty files (same owner and mode): machine_id, logs" in text
    assert "kept as empty directories: /tmp, /var/tmp" in text
    assert "The filter's includes keep /etc/ssl/certs/*.pem" in text
    assert "keep_" not in text
    assert "warns when nothing installs the launch key pair" in text


def test_each_kept_item_gets_a_warning_naming_its_setting(raw_settings):
    text = preview(raw_settings | {"bundler": "native", "keep_ssh_host_keys": True}, "ami-bundle")
    assert "WARNING: keep_ssh_host_keys = true: the image keeps SSH host keys; every instance" in text
    assert "left out: private_keys" in text  # the others still apply


def test_a_kept_item_the_filter_still_leaves_out_is_said_with_how_to_keep_it(raw_settings):
    text = preview(raw_settings | {"bundler": "native", "keep_histories": True}, "ami-bundle")
    assert "The filter still leaves out what it matches (" in text and "*/.bash_history" in text
    assert "add such a path to `includes` to keep it too" in text


def test_a_shared_image_that_keeps_hygiene_items_gets_a_loud_warning(raw_settings):
    shared = raw_settings | {
        "bundler": "native",
        "keep_histories": True,
        "launch_permissions": ["222233334444"],
    }
    text = preview(shared, "ami-register")
    assert (
        "WARNING: the image is shared with the accounts 222233334444 and keeps what image hygiene would "
        "leave out (keep_histories)"
    ) in text
    public = preview(shared | {"public_image": True, "launch_permissions": []}, "ami-register")
    assert "shared with every AWS account" in public


def test_a_shared_image_with_every_item_applied_gets_no_hygiene_warning(raw_settings):
    text = preview(raw_settings | {"bundler": "native", "public_image": True}, "ami-register")
    assert "keeps what image hygiene would leave out" not in text


def test_the_ami_tools_preview_says_what_ec2_bundle_vol_is_given_and_what_it_cannot_do(raw_settings):
    text = preview(raw_settings | {"bundler": "ami-tools"}, "ami-bundle")
    assert (
        "image hygiene (ec2-bundle-vol's -e): the node finds the paths of ssh_host_keys, private_keys" in text
    )
    assert "SSH host keys only when cloud-init or sshd-keygen will make new ones at first boot" in text
    assert "ec2-bundle-vol cannot empty a file or keep a directory empty, so machine_id, logs" in text
    assert "except where an exclusion leaves them out whole (destination_dir /tmp, for one)" in text
    assert 'use bundler = "native"' in text


def test_the_ami_tools_preview_leaves_kept_items_out_of_what_the_node_finds(raw_settings):
    kept = raw_settings | {"bundler": "ami-tools", "keep_histories": True, "keep_machine_id": True}
    text = preview(kept, "ami-bundle")
    assert "histories" not in text.split("the node finds the paths of")[1].split(" and exclude_patterns")[0]
    assert "'*/.*_history'" not in text


def test_every_hygiene_item_has_a_keep_setting_in_the_settings_reference():
    reference = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    assert [name for name in HYGIENE_NAMES if f"`keep_{name}`" not in reference] == []
