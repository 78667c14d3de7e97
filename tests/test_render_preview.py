"""The plan preview (text and JSON), and that no secret reaches any rendered output."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl import crate
from amidsl.model.plan import build_plan, group_spec
from amidsl.render.preview import SCHEMA, render_json, render_text
from amidsl.render.shell import render_script
from amidsl.testing import describe_image_phase


def test_text_preview_lists_phases_numbered_actions_and_commands(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings)))
    assert text.startswith("amidsl plan for spec 'ami': image 'web-server-2026-11' (x86_64) in eu-west-1")
    assert "phase ami-bundle (7 actions)" in text
    assert "  6. bundle the volume with ec2-bundle-vol" in text
    assert "/opt/ami-tools/ec2-ami-tools/bin/ec2-bundle-vol \\" in text
    assert "  1. register the image with EC2 [controller]" in text
    assert "install the private signing key [secret content not shown]" in text


def test_text_preview_warns_that_a_ruby_package_stays_in_the_image(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings | {"install_strategy": "package"})))
    assert "where the distribution's ruby3.1 or ruby3.0 package is installed, it stays in the image" in text


def test_plain_notes_are_labelled_note_and_only_warnings_warning(raw_settings):
    native = build_plan(crate.server_spec(raw_settings | {"bundler": "native"}))
    text = render_text(native)
    assert "\n  note: native build: nothing is installed; amidsl's node program is copied to" in text
    assert "\n  note: native build: no key or certificate is written to the node" in text
    assert "WARNING: native build" not in text
    ami_tools = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": "ami-tools"})))
    assert "\n  WARNING: OS packages installed by this phase stay in the image" in ami_tools
    assert "\n  note: image hygiene (ec2-bundle-vol's -e): the node finds the paths of" in ami_tools
    assert "\n  WARNING: ec2-bundle-vol cannot empty a file or keep a directory empty" in ami_tools
    assert "WARNING: WARNING" not in ami_tools


def test_a_paravirtual_image_without_a_kernel_is_a_warning_and_with_one_a_note(raw_settings):
    raw = raw_settings | {"bundler": "native", "virtualization_type": "paravirtual"}
    without = render_text(build_plan(crate.server_spec(raw), phases=["install"]))
    assert "\n  WARNING: paravirtual image: a bare ext4 filesystem image" in without
    with_kernel = render_text(
        build_plan(crate.server_spec(raw | {"kernel_id": "aki-12345678"}), phases=["install"])
    )
    assert "\n  note: paravirtual image: a bare ext4 filesystem image" in with_kernel


def test_json_preview_keeps_notes_apart_from_warnings(raw_settings):
    document = json.loads(render_json(build_plan(crate.server_spec(raw_settings | {"bundler": "native"}))))
    (install,) = [phase for phase in document["phases"] if phase["name"] == "install"]
    assert any(note.startswith("native build: nothing is installed") for note in install["notes"])
    assert not any(warning.startswith("native build") for warning in install["warnings"])


def test_text_preview_says_what_partition_none_means_for_hvm(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings)))
    assert "--partition none: a plain filesystem image" in text
    assert "an HVM instance cannot boot it" in text


def test_text_preview_says_the_instance_profile_route_needs_imdsv1(raw_settings):
    raw = raw_settings | {"upload_credentials": "instance-profile"}
    text = render_text(build_plan(crate.server_spec(raw)))
    assert "reads the node's instance profile credentials" in text and "allow IMDSv1" in text


def test_json_preview_follows_the_documented_schema(raw_settings):
    group = group_spec(
        "ami", extends=[crate.server_spec(raw_settings)], phases={"test": describe_image_phase}
    )
    plan_settings = build_plan(group).settings
    data = json.loads(render_json(build_plan(group)))
    assert data["schema"] == SCHEMA and data["spec"] == "ami"
    assert [p["name"] for p in data["phases"]] == [*crate.PHASE_FUNCTIONS, "test"]
    bundle = data["phases"][2]["actions"][5]
    assert bundle["index"] == 6 and bundle["type"] == "exec" and bundle["runs_on"] == "node"
    assert bundle["fields"]["argv"][0] == "/opt/ami-tools/ec2-ami-tools/bin/ec2-bundle-vol"
    assert {"existing_paths": list(plan_settings.exclusions), "separator": ","} in bundle["fields"]["argv"]
    assert bundle["commands"][0] == "AMIDSL_EXISTING_PATHS=''"
    assert any(c.startswith("(umask 077 && cd -- /opt/ami-tools") for c in bundle["commands"])
    register = data["phases"][4]["actions"][0]
    assert register["type"] == "aws_call" and register["runs_on"] == "controller"
    assert register["fields"]["params"]["ImageLocation"] == "acme-ami-bundles/web/2026-11/image.manifest.xml"
    upload_argv = data["phases"][3]["actions"][0]["fields"]["argv"]
    assert {"env": "AMIDSL_SECRET_KEY", "what": "the AWS secret access key"} in upload_argv
    image_ids = data["phases"][6]["actions"][0]["fields"]["params"]["ImageIds"]
    assert image_ids == [{"runtime": "image_id", "produced_by": "ami-register"}]
    inputs = {entry["env"]: entry["what"] for entry in data["runtime_inputs"]}
    assert inputs["AMIDSL_PRIVATE_KEY_FILE"].startswith(
        "path on the node of the private signing key (copy of"
    )
    assert "AMIDSL_IMAGE_ID" not in inputs  # produced by ami-register in the same plan
    assert data["settings"]["secret_key"].endswith("supplied at run time as AMIDSL_SECRET_KEY")


def test_json_preview_is_byte_identical_for_the_same_plan(raw_settings):
    plan = build_plan(crate.server_spec(raw_settings))
    assert render_json(plan) == render_json(build_plan(crate.server_spec(raw_settings)))


secret = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret_key=secret, token=secret, inline_key=st.booleans(), node_uploads_with_keys=st.booleans())
def test_no_secret_in_any_preview_script_or_json(
    raw_settings, credentials, secret_key, token, inline_key, node_uploads_with_keys
):
    secret_key, token = f"SK{secret_key}kS", f"TK{token}kT"  # markers: never equal to ordinary text
    raw = raw_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": secret_key}
    if node_uploads_with_keys:  # temporary keys cannot upload with the tools
        token = "TK-no-session-token-kT"
    else:  # the node's instance profile uploads; the keys and token are the controller's
        raw |= {"session_token": token, "upload_credentials": "instance-profile"}
    if inline_key:
        raw["private_key_source"] = {"content": credentials.key_pem}
    plan = build_plan(
        group_spec("ami", extends=[crate.server_spec(raw)], phases={"test": describe_image_phase})
    )
    key_body = [line for line in credentials.key_pem.splitlines() if "-----" not in line]
    for output in (render_text(plan), render_json(plan), render_script(plan), repr(plan)):
        assert secret_key not in output and "AKIAEXAMPLEEXAMPLE12" not in output
        assert token not in output
        assert not any(line in output for line in key_body)


@pytest.mark.parametrize(
    ("bundler", "on_node", "in_destination", "in_image", "needs"),
    [
        (
            "native",
            "amidsl's node program",
            "the image file and the bundle parts in /var/tmp/bundles",
            "nothing amidsl brings: no package is installed",
            "python3 >= 3.8, e2fsprogs (mke2fs >= 1.43) and libcrypto (openssl)",
        ),
        (
            "ami-tools",
            "ec2-ami-tools and Ruby",
            "the image file /var/tmp/bundles/image, a 10240 MB sparse file, and the bundle parts",
            "the OS packages installed: ca-certificates",
            "apt-get, dnf or yum with network access; rsync, losetup, mount and modprobe",
        ),
    ],
)
def test_the_preview_says_what_each_strategy_puts_on_the_node_leaves_in_the_image_and_needs(
    raw_settings, bundler, on_node, in_destination, in_image, needs
):
    plan = build_plan(
        crate.server_spec(raw_settings | {"bundler": bundler, "destination_dir": "/var/tmp/bundles"})
    )
    text = render_text(plan)
    assert f"build strategy: {bundler}" in text
    assert f"  on the node: {on_node}" in text and in_destination in text
    assert f"  stays in the image: {in_image}" in text
    assert f"  the node needs: {needs}" in text
    strategy = json.loads(render_json(plan))["strategy"]
    assert strategy["bundler"] == bundler and strategy["the node needs"].startswith(needs)
    assert in_destination in strategy["on the node"] and in_image in strategy["stays in the image"]


def test_the_native_preview_summarises_the_node_program_instead_of_printing_it(raw_settings):
    from amidsl.node import program_source

    text = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": "native"})))
    assert program_source() not in text
    assert "bytes (`amidsl script` shows the content)" in text


def test_the_native_preview_says_how_the_volume_is_read_without_changing_the_node(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": "native"})))
    assert "read-only bind mounts in the program's own mount namespace" in text
    assert "nothing of the node's is mounted or changed" in text
    assert (
        f"temporary tree of hard links to its files (in {raw_settings.get('destination_dir', '/tmp')}" in text
    )


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
def test_the_preview_says_which_instance_types_launch_the_image(raw_settings, bundler):
    text = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": bundler})))
    assert (
        "  instance types: only Xen instance types (C1, C3, D2, I2, M1, M2, M3, R3, X1) launch "
        "instance-store AMIs" in text
    )


def test_an_ebs_preview_makes_no_parts_and_names_no_signing_key(raw_settings):
    text = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": "native", "backing": "ebs"})))
    assert "bundle parts" not in text
    [secrets] = [line for line in text.splitlines() if line.strip().startswith("secrets:")]
    assert "AWS credentials stay on the controller" in secrets and "signing key" not in secrets


def test_keys_given_in_the_settings_are_shown_as_used_without_a_session_token(raw_settings):
    keys = {"access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    text = render_text(build_plan(crate.server_spec(raw_settings | {"bundler": "native"} | keys)))
    assert "session_token" in text and "none (the keys in the settings are used without one)" in text
    assert keys["secret_key"] not in text and keys["access_key"] not in text
