"""Settings a careless user or an attacker may give: control characters, a key hidden in the certificate
file, and directories whose cleanup would wreck the node. Each must be refused before anything runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from amidsl import crate
from amidsl.example import example_config_path
from amidsl.model.plan import build_plan
from amidsl.printable import printable
from amidsl.render.preview import render_json, render_text
from amidsl.render.shell import render_script
from amidsl.settings import SettingsError, resolve


def problems_of(raw: dict) -> list:
    with pytest.raises(SettingsError) as caught:
        resolve(raw)
    return caught.value.problems


@pytest.mark.parametrize(
    ("setting", "fix"),
    [("certificate_source", "only the certificate"), ("private_key_source", "only your private key")],
)
def test_a_credential_file_holding_both_the_key_and_the_certificate_is_refused(
    raw_settings, credentials, tmp_path, setting, fix
):
    combined = tmp_path / "combined.pem"
    combined.write_text(credentials.key_pem + credentials.cert_pem)
    problems = problems_of({**raw_settings, setting: {"local_file": str(combined)}})
    assert [p.setting for p in problems] == [setting]
    assert fix in str(problems[0])
    assert "PRIVATE KEY" not in str(problems[0])


def test_text_around_the_certificate_never_reaches_the_script_or_the_plan(
    raw_settings, credentials, tmp_path
):
    wrapped = tmp_path / "wrapped.pem"
    wrapped.write_text("Bag Attributes: smuggled-note\n" + credentials.cert_pem + "trailing-smuggled-text\n")
    raw = {**raw_settings, "certificate_source": {"local_file": str(wrapped)}}
    plan = build_plan(crate.server_spec(raw))
    for output in (render_script(plan), render_text(plan), render_json(plan)):
        assert "smuggled" not in output
    assert plan.settings.certificate_pem.strip() == credentials.cert_pem.strip()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("install_dir", "/usr/share"),
        ("install_dir", "/home/admin"),
        ("install_dir", "/root"),
        ("credential_dir", "/root/.ssh"),
        ("credential_dir", "/tmp"),
        ("credential_dir", "/home/admin/.ssh"),
        ("install_dir", "/var/tmp"),
        ("credential_dir", "/etc/ssh"),
    ],
)
def test_system_and_home_directories_are_refused_for_directories_amidsl_removes(raw_settings, setting, value):
    problems = problems_of({**raw_settings, setting: value})
    assert setting in [p.setting for p in problems]
    message = str(next(p for p in problems if p.setting == setting))
    assert value in message and "Fix:" in message


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("image_description", "web\0server"),
        ("image_description", "web \x1b[2Jserver"),
        ("image_name", "web-server\x07"),
        ("exclusions", ["/srv/data\0/etc"]),
        ("extra_exclusions", ["/srv/\x1bdata"]),
        ("s3_path", "web/\x00x"),
        ("session_token", "token\0value"),
        ("secret_key", "secret\x1bvalue"),
    ],
)
def test_control_characters_are_refused_in_every_setting(raw_settings, setting, value):
    raw = {**raw_settings, setting: value}
    if setting in ("session_token", "secret_key"):
        raw |= {"access_key": "AKIAABCDEFGHIJKLMNOP", "secret_key": "s" * 40}
        raw[setting] = value
    problems = problems_of(raw)
    messages = [str(p) for p in problems if p.setting == setting]
    assert messages and "control character" in messages[0]
    if setting in ("session_token", "secret_key"):
        assert value not in str(problems)


def test_a_control_character_in_a_live_setting_is_refused(raw_settings):
    from amidsl.live.settings import resolve_live

    with pytest.raises(SettingsError) as caught:
        resolve_live({"host": "node\0.example"})
    assert "control character" in str(caught.value)


def test_a_description_may_span_lines(raw_settings):
    plan = build_plan(crate.server_spec({**raw_settings, "image_description": "line one\nline two"}))
    assert plan.settings.image_description == "line one\nline two"
    assert "\x1b" not in render_text(plan)


def test_printable_escapes_control_characters_but_keeps_line_breaks():
    assert printable("a\x1b[2Jb\0c\td\ne") == "a\\x1b[2Jb\\x00c\\x09d\ne"


def test_the_plan_preview_escapes_a_control_character_that_got_past_validation(raw_settings):
    plan = build_plan(crate.server_spec(raw_settings))
    settings = plan.settings.with_values(image_description="x\x1b[2Jy")
    phases = tuple(
        dataclasses.replace(p, actions=tuple(crate.ami_register(settings))) if p.name == "ami-register" else p
        for p in plan.phases
    )
    text = render_text(dataclasses.replace(plan, settings=settings, phases=phases))
    assert "\x1b" not in text and "x\\x1b[2Jy" in text


def test_the_cli_refuses_a_nul_in_the_description_without_a_traceback(tmp_path):
    config = tmp_path / "ami.toml"
    text = Path(example_config_path()).read_text()
    config.write_text(
        text.replace('image-description = "amidsl example AMI"', 'image-description = "a\\u0000b"')
    )
    assert "\\u0000" in config.read_text()
    for command in ("validate", "simulate", "script"):
        done = subprocess.run(
            [sys.executable, "-m", "amidsl", command, "--config", str(config)], capture_output=True, text=True
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "image_description: contains a control character (U+0000)" in done.stderr
        assert "Traceback" not in done.stderr


def test_an_install_dir_too_long_to_record_on_the_node_is_refused(raw_settings):
    problems = problems_of({**raw_settings, "install_dir": "/srv/" + "/".join(["d" * 40] * 6)})
    assert "install_dir" in [p.setting for p in problems]


def test_printable_escapes_bidirectional_overrides_that_would_reorder_node_output():
    assert printable("ok\u202etxt.exe\u2028next") == "ok\\u202etxt.exe\\u2028next"
