"""The settings table: every fact about a setting comes from its row."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amidsl.cli.table import find_command
from amidsl.node.amidsl_node import HYGIENE_NAMES
from amidsl.render.summary import public_settings
from amidsl.settings import (
    FREE_TEXT_KEYS,
    REQUIRED,
    ROWS,
    SECRET_KEYS,
    SETTINGS,
    STRATEGY_RULES,
    USER_KEYS,
    AmiSettings,
    SettingsError,
    resolve,
)
from amidsl.settings.reference import UPDATE_ENV, settings_document, settings_reference

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOC = ROOT / "docs" / "settings.md"


def test_every_row_has_a_doc_and_a_known_strategy():
    for row in ROWS:
        assert row.doc, row.name
        assert set(row.used_by) <= set(SETTINGS["bundler"].choices), row.name


def test_docs_settings_md_is_the_reference_made_from_the_rows():
    expected = settings_document()
    if os.environ.get(UPDATE_ENV) == "1":
        SETTINGS_DOC.parent.mkdir(exist_ok=True)
        SETTINGS_DOC.write_text(expected, encoding="utf-8")
    assert SETTINGS_DOC.is_file(), f"docs/settings.md is missing: run with {UPDATE_ENV}=1"
    assert SETTINGS_DOC.read_text(encoding="utf-8") == expected, (
        f"docs/settings.md is out of date: run with {UPDATE_ENV}=1"
    )


def test_the_readme_points_to_the_reference_instead_of_holding_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[docs/settings.md](docs/settings.md)" in readme and f"{UPDATE_ENV}=1" in readme
    rows = settings_reference().splitlines()[2:]
    assert not [row for row in rows if row in readme]


def test_the_references_links_into_the_readme_find_their_sections():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    links = re.findall(r"\]\(\.\./README\.md#([^)]+)\)", settings_document())
    assert links and set(links) <= anchors


def test_the_reference_names_every_key_a_user_may_give_and_no_other():
    reference = settings_reference()
    for key in USER_KEYS:
        assert f"`{key}`" in reference, key
    for row in ROWS:
        if not row.given:
            assert f"`{row.name}`" not in reference, row.name


def test_amisettings_fields_are_the_rows_in_order():
    fields = [f.name for f in dataclasses.fields(AmiSettings)]
    assert fields == [row.name for row in ROWS if row.field]


def test_user_keys_required_secret_and_free_text_come_from_the_rows():
    assert set(USER_KEYS) == {row.name for row in ROWS if row.given}
    assert {f"keep_{name}" for name in HYGIENE_NAMES} <= set(USER_KEYS)
    assert not {"certificate_pem", "private_key_pem", "ec2_certificate_pem", "hygiene_keep"} & set(USER_KEYS)
    assert set(REQUIRED) == {
        "image_name",
        "region",
        "user_id",
        "s3_bucket",
        "private_key_source",
        "certificate_source",
    }
    # An S3 bundle's own: its bucket, and the account and pair its manifest is signed for.
    # (user_id is read by an EBS build too, which checks it where given)
    assert {row.name for row in ROWS if row.required and row.required_in == ("instance-store",)} == {
        "user_id",
        "s3_bucket",
        "private_key_source",
        "certificate_source",
    }
    assert {"access_key", "secret_key", "session_token"} <= SECRET_KEYS
    assert "image_description" in FREE_TEXT_KEYS


def test_the_simulate_commands_bundler_choices_are_the_rows():
    (option,) = [o for o in find_command("simulate").options if o.name == "bundler"]
    assert option.choices == SETTINGS["bundler"].choices


def test_bundle_image_offers_exactly_the_architectures_the_arch_setting_accepts(raw_settings):
    (option,) = [o for o in find_command("bundle-image").options if o.name == "arch"]
    assert option.choices == SETTINGS["arch"].choices
    for bundler in SETTINGS["bundler"].choices:
        for arch in option.choices:
            assert resolve(raw_settings | {"bundler": bundler, "arch": arch}).arch == arch
        with pytest.raises(SettingsError):
            resolve(raw_settings | {"bundler": bundler, "arch": "arm64"})


def test_every_strategy_has_its_rules():
    assert tuple(STRATEGY_RULES) == SETTINGS["bundler"].choices


def test_the_command_table_loads_no_more_of_the_settings_than_their_constants():
    code = (
        "import sys, amidsl.cli.table; "
        "print(sorted(m for m in sys.modules if m.startswith('amidsl.settings')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['amidsl.settings', 'amidsl.settings.constants']"


def test_an_unknown_key_still_gets_the_nearest_known_one(raw_settings):
    with pytest.raises(SettingsError) as caught:
        resolve(raw_settings | {"upload_concurency": 2})
    (problem,) = caught.value.problems
    assert problem.setting == "upload_concurency" and "did you mean 'upload_concurrency'?" in problem.fix


@pytest.mark.parametrize(
    ("bundler", "backing"), [("native", "instance-store"), ("ami-tools", "instance-store"), ("native", "ebs")]
)
def test_a_preview_shows_the_settings_its_strategy_and_backing_read(raw_settings, bundler, backing):
    settings = resolve(raw_settings | {"bundler": bundler, "backing": backing})
    shown = {name for name, _ in public_settings(settings)}
    for row in ROWS:
        if row.field and row.name not in ("private_key_pem", "unused_by_backing"):
            assert (row.name in shown) == row.used_in(bundler, backing), row.name
    # The settings given that the backing does not read get one line, and only when there are some.
    assert ("unused_by_backing" in shown) == bool(settings.unused_by_backing) == (backing == "ebs")
    if backing == "ebs":
        assert not {"s3_bucket", "s3_manifest_path", "certificate_source", "bundle_tags"} & shown
        assert {"encrypted", "kms_key_id", "snapshot_id"} <= shown
    else:
        assert "encrypted" not in shown and "s3_bucket" in shown


def test_a_secret_rows_value_never_appears_in_a_message(raw_settings):
    secret = "SeCrEt-value-that-must-not-show"
    for row in ROWS:
        if not (row.secret and row.given):
            continue
        for wrong in (12345, [secret], {"content": 5, "x": secret}, secret):
            try:
                resolve(raw_settings | {row.name: wrong})
            except SettingsError as err:
                assert secret not in str(err) + repr(err.problems), row.name
                assert "12345" not in str(err), row.name


def test_a_default_may_come_from_other_settings(raw_settings):
    s = resolve(raw_settings | {"install_dir": "/srv/tools", "bundler": "native"})
    assert s.credential_dir == "/srv/tools/credentials" and s.private_key_path == "/srv/tools/credentials/pk"
    assert s.virtualization_type == "hvm"
    assert resolve(raw_settings | {"bundler": "ami-tools"}).virtualization_type is None
