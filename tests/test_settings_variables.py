"""Variables in string settings and table values: what each gives, the errors naming setting and variable."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from amidsl.settings.variables import RunValues, expand_tables

NOW = datetime(2026, 11, 5, 14, 30, 7, tzinfo=timezone.utc)
TEXT = {"ami": {"image_name", "image_description", "secret_key", "region"}, "live": {"host"}}
SECRET = {"ami": {"secret_key"}}
COLLECTIONS = {"ami": {"tags", "copy_kms_key_ids", "copy_to_regions"}}  # tables and lists of strings


def expand(tables: dict, environ: dict | None = None, git_dir: Path = Path("/")) -> tuple[dict, list[str]]:
    """Expand with a fixed clock; the tables and the problems as text."""
    run = RunValues(now=NOW, environ=environ or {}, git_dir=git_dir)
    expanded, problems = expand_tables(
        tables,
        lambda table, key: key in TEXT.get(table, ()),
        lambda table, key: key in SECRET.get(table, ()),
        run,
        is_text_collection=lambda table, key: key in COLLECTIONS.get(table, ()),
    )
    return expanded, [str(problem) for problem in problems]


def test_date_and_timestamp_are_the_run_s_utc_time_in_forms_an_image_name_takes():
    expanded, problems = expand({"ami": {"image_name": "web-{date}", "image_description": "at {timestamp}"}})
    assert problems == []
    assert expanded["ami"] == {"image_name": "web-2026-11-05", "image_description": "at 20261105T143007Z"}


def test_an_environment_variable_fills_a_setting_in_either_table():
    expanded, problems = expand(
        {"ami": {"region": "{env:REGION}"}, "live": {"host": "{env:NODE}.internal"}},
        environ={"REGION": "eu-west-1", "NODE": "builder"},
    )
    assert problems == []
    assert expanded == {"ami": {"region": "eu-west-1"}, "live": {"host": "builder.internal"}}


def test_doubled_braces_are_literal_and_other_values_are_left_alone():
    tables = {
        "ami": {
            "image_description": "a {{b}} c",
            "upload_concurrency": 4,
            "install_source": {"url": "{date}"},  # a table, but not one of strings by key
        }
    }
    expanded, problems = expand(tables)
    assert problems == []
    assert expanded["ami"] == {
        "image_description": "a {b} c",
        "upload_concurrency": 4,
        "install_source": {"url": "{date}"},
    }


def test_the_values_of_a_table_of_strings_expand_and_its_keys_stay_as_written():
    tables = {"ami": {"tags": {"Day": "{date}", "Env": "{env:DEPLOY_ENV}", "{date}": "x {{y}}"}}}
    expanded, problems = expand(tables, environ={"DEPLOY_ENV": "prod"})
    assert problems == []
    assert expanded["ami"]["tags"] == {"Day": "2026-11-05", "Env": "prod", "{date}": "x {y}"}


def test_a_key_arn_per_region_may_come_from_the_environment():
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    tables = {"ami": {"copy_kms_key_ids": {"eu-west-1": "{env:EU_KEY}"}}}
    expanded, problems = expand(tables, environ={"EU_KEY": arn})
    assert problems == [] and expanded["ami"]["copy_kms_key_ids"] == {"eu-west-1": arn}


def test_expanding_a_table_leaves_the_table_it_was_given_unchanged():
    tags = {"Day": "{date}"}
    expanded, _ = expand({"ami": {"tags": tags}})
    assert tags == {"Day": "{date}"} and expanded["ami"]["tags"] == {"Day": "2026-11-05"}


def test_a_problem_in_a_table_value_names_the_setting_and_the_key():
    _, problems = expand({"ami": {"tags": {"Build": "{git_sha_shrot}", "Env": "{env:UNSET_HERE}"}}})
    assert problems[0].startswith("tags.Build: uses an unknown variable {git_sha_shrot}. Fix: use one of")
    assert problems[1].startswith("tags.Env: uses {env:UNSET_HERE}, but UNSET_HERE is not set")


def test_a_value_of_another_type_in_a_table_of_strings_is_left_for_its_reader():
    expanded, problems = expand(
        {"ami": {"tags": {"Count": 3, "Day": "{date}"}, "copy_kms_key_ids": "{date}"}}
    )
    assert problems == []
    assert expanded["ami"] == {"tags": {"Count": 3, "Day": "2026-11-05"}, "copy_kms_key_ids": "{date}"}


def test_a_secret_s_environment_variable_may_not_be_shown_through_a_tag():
    environ = {"CI_SECRET": "hush-hush-value"}
    expanded, problems = expand(
        {"ami": {"secret_key": "{env:CI_SECRET}", "tags": {"Key": "{env:CI_SECRET}"}}}, environ
    )
    assert problems == [
        "tags.Key: uses {env:CI_SECRET}, which the secret setting secret_key uses too. "
        "Fix: give this setting its own value: a secret's variable is never shown."
    ]
    assert "hush-hush-value" not in str(expanded["ami"]["tags"])


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    ],
)
def test_the_credential_chains_secret_environment_variables_may_not_be_shown_through_a_tag(name):
    # Without secret_key, the build's AWS secret comes from the credential chain, which reads these
    # variables: a tag showing one would put the build's secret into the preview, the script and EC2.
    expanded, problems = expand({"ami": {"tags": {"Key": f"{{env:{name}}}"}}}, {name: "hush-hush-value"})
    assert [problem for problem in problems if problem.startswith(f"tags.Key: uses {{env:{name}}}")]
    assert "hush-hush-value" not in str(expanded["ami"]["tags"])


def test_an_unknown_variable_names_the_setting_and_the_variable():
    _, problems = expand({"ami": {"image_name": "web-{data}"}, "live": {"host": "{hostname}"}})
    assert problems[0].startswith("image_name: uses an unknown variable {data}. Fix: use one of {date},")
    assert problems[1].startswith("live.host: uses an unknown variable {hostname}.")


def test_an_unset_environment_variable_is_named_with_its_setting():
    _, problems = expand({"ami": {"region": "{env:NOT_SET_HERE}"}})
    assert problems == [
        "region: uses {env:NOT_SET_HERE}, but NOT_SET_HERE is not set in the environment. "
        "Fix: export NOT_SET_HERE before running amidsl."
    ]


def test_an_unmatched_brace_says_how_to_write_a_literal_one():
    _, problems = expand({"ami": {"image_description": "a } b"}})
    assert problems[0].startswith("image_description: has an unmatched '}' at position 2. Fix: write }}")


def test_a_secret_takes_an_environment_variable_that_no_message_shows():
    environ = {"CI_SECRET": "hush-hush-value"}
    expanded, problems = expand({"ami": {"secret_key": "{env:CI_SECRET}"}}, environ=environ)
    assert problems == [] and expanded["ami"]["secret_key"] == "hush-hush-value"
    _, problems = expand({"ami": {"secret_key": "{env:CI_SECRET}{bad}"}}, environ=environ)
    assert problems and "hush-hush-value" not in " ".join(problems)


def test_a_secret_s_environment_variable_may_not_be_shown_through_another_setting():
    environ = {"CI_SECRET": "hush-hush-value"}
    expanded, problems = expand(
        {"ami": {"secret_key": "{env:CI_SECRET}", "image_description": "key {env:CI_SECRET}"}}, environ
    )
    assert problems == [
        "image_description: uses {env:CI_SECRET}, which the secret setting secret_key uses too. "
        "Fix: give this setting its own value: a secret's variable is never shown."
    ]
    assert "hush-hush-value" not in expanded["ami"]["image_description"]


def commit_in(folder: Path) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    (folder / "amidsl.toml").write_text("[ami]\n")
    subprocess.run([*git, "add", "amidsl.toml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "settings"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_git_sha_is_the_commit_where_the_settings_are(tmp_path):
    sha = commit_in(tmp_path)
    expanded, problems = expand(
        {"ami": {"image_name": "web-{git_sha_short}", "image_description": "{git_sha}"}}, git_dir=tmp_path
    )
    assert problems == []
    assert expanded["ami"] == {"image_name": f"web-{sha[:12]}", "image_description": sha}


def test_git_sha_outside_a_git_work_tree_is_a_clear_error(tmp_path):
    _, problems = expand({"ami": {"image_name": "web-{git_sha}"}}, git_dir=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"image_name: uses {{git_sha}}, but {str(tmp_path)!r} is not in a git work tree"
    )
    assert "Fix: run amidsl where the settings file is in a git checkout" in problems[0]


@pytest.mark.parametrize("text", ["{date}", "x{timestamp}y"])
def test_a_value_without_a_string_type_is_never_expanded(text):
    expanded, _ = expand({"ami": {"upload_concurrency": text}})  # not a string setting: its reader says so
    assert expanded["ami"]["upload_concurrency"] == text


def test_the_strings_of_a_list_expand_and_a_problem_names_the_entry():
    expanded, problems = expand(
        {"ami": {"copy_to_regions": ["{env:DR_REGION}", "eu-west-1", 7, "{nope}"]}},
        {"DR_REGION": "us-west-2"},
    )
    assert expanded["ami"]["copy_to_regions"][:3] == [
        "us-west-2",
        "eu-west-1",
        7,
    ]  # not a string: its reader's
    assert problems == [
        "copy_to_regions[3]: uses an unknown variable {nope}. "
        "Fix: use one of {date}, {timestamp}, {git_sha}, {git_sha_short}, {env:NAME}, or write {{ and }} "
        "for literal braces."
    ]
