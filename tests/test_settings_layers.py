"""Layered settings: files merged per key in order, --set items typed as their settings, origins."""

from __future__ import annotations

from pathlib import Path

import pytest

from amidsl.settings import Problem, SettingsError
from amidsl.settings.layers import Layer, TableKeys, merge_layers, override_layer

HERE = Path("settings")
KEYS = TableKeys(
    known={
        "ami": frozenset(
            {
                "image_name",
                "upload_concurrency",
                "copy_to_regions",
                "public_image",
                "secret_key",
                "private_key_source",
                "tags",
            }
        ),
        "live": frozenset({"endpoint_url", "port"}),
    },
    text={"ami": frozenset({"image_name", "secret_key"}), "live": frozenset({"endpoint_url"})},
    secret={"ami": frozenset({"secret_key", "private_key_source"})},
)


def overrides(*items: str) -> dict:
    return dict(override_layer(items, KEYS).document)


def problems_of(*items: str) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        override_layer(items, KEYS)
    return [str(problem) for problem in caught.value.problems]


def test_a_later_file_wins_per_key_and_the_merge_remembers_which_file_gave_each():
    base = Layer("base.toml", {"ami": {"image_name": "a", "tags": {"x": "1"}}, "live": {"port": 22}}, HERE)
    ci = Layer("ci.toml", {"ami": {"tags": {"y": "2"}}, "live": {"endpoint_url": "http://s3"}}, HERE)
    layered = merge_layers([base, ci])
    assert layered.document == {
        "ami": {"image_name": "a", "tags": {"y": "2"}},  # a table-valued setting is replaced whole
        "live": {"port": 22, "endpoint_url": "http://s3"},
    }
    assert layered.origin_of("image_name") == "base.toml" and layered.origin_of("tags") == "ci.toml"
    assert layered.origin_of("live.port") == "base.toml" and layered.origin == "base.toml + ci.toml"


def test_a_later_spelling_replaces_an_earlier_one_but_two_in_one_file_stay_to_be_reported():
    layered = merge_layers(
        [
            Layer("a.toml", {"ami": {"image-name": "a"}}, HERE),
            Layer("b.toml", {"ami": {"image_name": "b"}}, HERE),
        ]
    )
    assert layered.document["ami"] == {"image_name": "b"}
    twice = merge_layers([Layer("a.toml", {"ami": {"image-name": "a", "image_name": "b"}}, HERE)])
    assert twice.document["ami"] == {"image-name": "a", "image_name": "b"}


def test_problems_name_the_file_or_set_their_value_came_from_when_there_are_several():
    layered = merge_layers(
        [Layer("base.toml", {"ami": {"image_name": "a"}}, HERE), Layer("--set", {"live": {"port": 0}}, HERE)]
    )
    annotated = layered.annotate(
        [Problem("image_name", "bad", "fix"), Problem("live.port", "bad", "fix"), Problem("region", "x", "y")]
    )
    assert [p.setting for p in annotated] == [
        "image_name (from base.toml)",
        "live.port (set by --set)",
        "region",
    ]
    single = merge_layers([Layer("base.toml", {"ami": {"image_name": "a"}}, HERE)])
    assert single.annotate([Problem("image_name", "bad", "fix")])[0].setting == "image_name"


def test_set_values_are_typed_as_their_settings_are():
    assert overrides(
        "upload_concurrency=8",
        "public_image=true",
        'copy_to_regions=["eu-west-1", "us-east-2"]',
        "tags={ Team = 'ops' }",
        "image_name=web true 8",
    ) == {
        "ami": {
            "upload_concurrency": 8,
            "public_image": True,
            "copy_to_regions": ["eu-west-1", "us-east-2"],
            "tags": {"Team": "ops"},
            "image_name": "web true 8",  # a string setting takes the text as it is
        }
    }


def test_a_string_setting_takes_toml_quotes_too_and_a_number_stays_text():
    assert overrides('image_name="web image"', "image_name=2026")["ami"] == {"image_name": "2026"}
    assert overrides('image_name="web image"')["ami"] == {"image_name": "web image"}


def test_live_keys_are_given_as_in_the_file_s_live_table():
    assert overrides("live.endpoint_url=http://127.0.0.1:9000", "live.port=2222", "ami.image_name=x") == {
        "live": {"endpoint_url": "http://127.0.0.1:9000", "port": 2222},
        "ami": {"image_name": "x"},
    }


def test_an_unknown_key_is_kept_as_text_for_the_unknown_key_check_to_suggest_a_name():
    assert overrides("imge_name=web")["ami"] == {"imge_name": "web"}


def test_a_value_that_is_not_toml_for_a_typed_setting_is_refused_with_examples():
    assert problems_of("upload_concurrency=eight") == [
        "--set upload_concurrency: 'eight' is not a TOML value. Fix: write it as in the file, e.g. "
        "--set image_name=web-{date}, --set upload_concurrency=8, --set 'copy_to_regions=[\"eu-west-1\"]'."
    ]


@pytest.mark.parametrize("item", ["image_name", "=x", "aws.region=x", "tags.Team=ops", "live.a.b=1"])
def test_a_malformed_item_is_refused_and_says_how_to_write_one(item):
    (problem,) = problems_of(item)
    assert problem.startswith("--set")
    assert "Fix:" in problem


def test_a_secret_never_goes_on_the_command_line_except_as_an_environment_reference():
    problems = problems_of("secret_key=hush-hush-value", "private_key_source={ content = 'hush-hush-value' }")
    assert len(problems) == 2 and "hush-hush-value" not in " ".join(problems)
    assert problems[0].startswith("--set secret_key: would put a secret on the command line")
    assert overrides("secret_key={env:CI_SECRET}")["ami"] == {"secret_key": "{env:CI_SECRET}"}
    assert overrides("private_key_source={ local_file = 'pk.pem' }")["ami"]["private_key_source"] == {
        "local_file": "pk.pem"
    }
