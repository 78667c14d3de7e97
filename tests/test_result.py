"""The result document `build --json` and `simulate --json` share: the same facts in the same fields."""

from __future__ import annotations

import json

import pytest

from amidsl.model.plan import build_plan
from amidsl.run.result import result_document, settings_digest
from amidsl.run.runner import BuildError, run_plan
from amidsl.strategies import server_spec
from tests.test_runner import ScriptedBackend


def test_a_finished_build_reports_its_images_bundle_timings_and_settings_digest(raw_settings):
    plan = build_plan(server_spec(raw_settings | {"copy_to_regions": []}))
    result = run_plan(plan, ScriptedBackend())
    document = result_document(
        "amidsl.build/2", plan.settings, result, None, config=["base.toml", "ci.toml"], config_from="--config"
    )
    assert json.loads(json.dumps(document)) == document  # plain JSON
    s = plan.settings
    assert document["schema"] == "amidsl.build/2"
    assert document["config"] == ["base.toml", "ci.toml"] and document["config_from"] == "--config"
    assert document["image_id"] == "ami-0abc1234" and document["images"] == {s.region: "ami-0abc1234"}
    assert document["image_name"] == s.image_name and document["copies"] == {}
    assert document["bundle"] == f"s3://{s.s3_manifest_path}"
    assert list(document["timings"]) == result.phases
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in document["timings"].values())
    assert document["error"] is None and document["settings_digest"] == settings_digest(s)


def test_a_failed_build_reports_its_error_and_no_image(raw_settings):
    plan = build_plan(server_spec(raw_settings))
    document = result_document(
        "amidsl.build/2", plan.settings, None, "it broke", config=["x.toml"], config_from="--config"
    )
    assert document["error"] == "it broke" and document["image_id"] is None and document["images"] == {}
    assert document["timings"] == {} and document["parts"] is None


def test_a_build_that_fails_after_registering_reports_the_image_and_the_phases_that_finished(raw_settings):
    plan = build_plan(server_spec(raw_settings | {"copy_to_regions": []}))
    with pytest.raises(BuildError) as failed:
        run_plan(plan, ScriptedBackend(fail_at=("cleanup", 1)))
    made = failed.value.made
    document = result_document(
        "amidsl.build/2", plan.settings, made, str(failed.value), config=["x.toml"], config_from="--config"
    )
    assert document["error"].startswith("phase cleanup, action 1")
    assert document["image_id"] == "ami-0abc1234"
    assert document["images"] == {plan.settings.region: "ami-0abc1234"}
    assert list(document["timings"]) == ["install", "configure", "ami-bundle", "ami-upload", "ami-register"]
    assert document["bundle"] == f"s3://{plan.settings.s3_manifest_path}"


def test_a_build_that_fails_in_its_first_phase_reports_that_it_made_nothing(raw_settings):
    plan = build_plan(server_spec(raw_settings))
    with pytest.raises(BuildError) as failed:
        run_plan(plan, ScriptedBackend(fail_at=("install", 1)))
    made = failed.value.made
    document = result_document(
        "amidsl.build/2", plan.settings, made, str(failed.value), config=["x.toml"], config_from="--config"
    )
    assert document["image_id"] is None and document["images"] == {} and document["copies"] == {}
    assert document["timings"] == {} and document["parts"] is None and document["snapshot_id"] is None


def test_the_settings_digest_follows_the_settings_and_holds_no_secret(raw_settings):
    keys = {"access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    one = build_plan(server_spec(raw_settings | keys)).settings
    other = build_plan(server_spec(raw_settings | keys | {"image_description": "another"})).settings
    new_key = build_plan(server_spec(raw_settings | keys | {"secret_key": "another/secret/key/012"})).settings
    assert settings_digest(one).startswith("sha256:") and len(settings_digest(one)) == 7 + 64
    assert settings_digest(one) != settings_digest(other)
    # Only where a key comes from counts: changing the key's value does not change the digest.
    assert settings_digest(one) == settings_digest(new_key)


def test_a_failed_ebs_build_reports_no_bundle_it_never_made(raw_settings):
    plan = build_plan(server_spec(raw_settings | {"bundler": "native", "backing": "ebs"}))
    document = result_document(
        "amidsl.build/2", plan.settings, None, "it broke", config=["x.toml"], config_from="--config"
    )
    assert document["bundle"] is None and document["snapshot_id"] is None
