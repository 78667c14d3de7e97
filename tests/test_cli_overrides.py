"""Layered --config files, --set KEY=VALUE and variables, as the commands take them."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from amidsl.cli.main import run
from amidsl.cli.support import find_config, load_live_config, load_plan
from amidsl.cli.table import COMMANDS
from amidsl.example import example_config_path
from amidsl.render.preview import render_text
from amidsl.render.shell import render_script
from simulator import simulate
from tests.live.node_settings import write_toml


@pytest.fixture(autouse=True)
def no_config_from_the_environment(monkeypatch):
    monkeypatch.delenv("AMIDSL_CONFIG", raising=False)


def amidsl(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: (status, stdout, stderr)."""
    status = run(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def config(tmp_path, raw_settings) -> Path:
    return write_toml(tmp_path / "base.toml", {"ami": raw_settings})


def test_every_command_that_takes_config_takes_set():
    takes_config = [command for command in COMMANDS if any(o.name == "config" for o in command.options)]
    assert {c.name for c in takes_config} >= {"plan", "script", "validate", "simulate", "build"}
    for command in takes_config:
        config = next(o for o in command.options if o.name == "config")
        assert isinstance(config.default, tuple), command.name  # repeatable: files are layered
        assert any(o.name == "set" for o in command.options), command.name


def test_set_values_reach_the_plan_typed_as_their_settings(capsys, config):
    status, out, _ = amidsl(
        capsys,
        "plan",
        "-c",
        str(config),
        "--set",
        "upload_concurrency=8",
        "--set",
        "bundler=native",
        "--set",
        'copy_to_regions=["us-east-2"]',
        "--set",
        "image_name=web {date}",
    )
    assert status == 0
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert f'image_name              "web {today}"' in out
    assert "upload_concurrency      8" in out and "us-east-2" in out


def test_a_later_config_file_wins_per_key(capsys, tmp_path, config):
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"image_name": "web-ci"}})
    status, out, _ = amidsl(capsys, "validate", "-c", str(config), "-c", str(ci))
    assert status == 0
    assert f"using settings {config} + {ci} (from --config)" in out
    assert "settings OK: image 'web-ci' (x86_64) in eu-west-1" in out  # region still from base.toml


def test_a_problem_names_the_file_or_the_set_its_value_came_from(capsys, tmp_path, config):
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"region": "eu-west-9"}, "aws": {"x": "y"}})
    status, _, err = amidsl(
        capsys, "validate", "-c", str(config), "-c", str(ci), "--set", "s3_bucket=Bad_Bucket"
    )
    assert status == 2
    assert f"{config} + {ci} + --set: 3 problem(s):" in err
    assert f"region (from {ci}): 'eu-west-9' is not a region AWS has" in err
    assert "s3_bucket (set by --set): 'Bad_Bucket' is not a valid S3 bucket name" in err
    assert f"[aws] (in {ci}): is not a table amidsl knows" in err


def test_an_unknown_set_key_gets_the_suggestion_a_file_key_gets(capsys, config):
    status, _, err = amidsl(capsys, "plan", "-c", str(config), "--set", "image_nme=web")
    assert status == 2
    assert (
        "image_nme (set by --set): is not a known setting. Fix: remove it (did you mean 'image_name'?)" in err
    )
    status, _, err = amidsl(capsys, "validate", "-c", str(config), "--set", "live.hots=node")
    assert status == 2 and "live.hots (set by --set): is not a known [live] setting" in err
    assert "did you mean 'host'?" in err


def test_set_reaches_a_live_setting_as_the_file_s_live_table_would(config):
    choice = find_config([str(config)], ["live.endpoint_url=http://127.0.0.1:9000", "live.port=2222"])
    live = load_live_config(choice).live
    assert live.endpoint_url == "http://127.0.0.1:9000" and live.port == 2222


def test_time_variables_are_fixed_once_per_run_so_plan_and_script_agree(config):
    choice = find_config([str(config)], ["image_name=web-{timestamp}"])
    first = load_plan(choice, None)
    time.sleep(1.1)
    again = load_plan(choice, None)
    expected = f"web-{choice.started.strftime('%Y%m%dT%H%M%SZ')}"
    assert first.settings.image_name == again.settings.image_name == expected
    assert expected in render_text(first) and expected in render_script(again)


def test_an_environment_variable_in_a_secret_setting_is_never_shown(capsys, monkeypatch, config):
    monkeypatch.setenv("CI_ACCESS_KEY", "AKIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("CI_SECRET_KEY", "hush-hush-value")
    args = (
        "-c",
        str(config),
        "--set",
        "access_key={env:CI_ACCESS_KEY}",
        "--set",
        "secret_key={env:CI_SECRET_KEY}",
    )
    for command in ("plan", "script", "validate"):
        status, out, err = amidsl(capsys, command, *args)
        assert status == 0, err
        assert "hush-hush-value" not in out + err and "AKIAEXAMPLEEXAMPLE12" not in out + err
    status, out, err = amidsl(capsys, "plan", *args, "--set", "image_description=k {env:CI_SECRET_KEY}")
    assert status == 2 and "hush-hush-value" not in out + err
    assert "image_description (set by --set): uses {env:CI_SECRET_KEY}, which the secret setting" in err


def test_a_secret_value_given_on_the_command_line_is_refused_and_not_echoed(capsys, config):
    status, out, err = amidsl(capsys, "plan", "-c", str(config), "--set", "secret_key=hush-hush-value")
    assert status == 2 and "hush-hush-value" not in out + err
    assert "--set secret_key: would put a secret on the command line" in err
    assert "--set secret_key" in err  # the announcement names the key only


def test_a_variable_in_a_setting_the_backing_does_not_read_is_not_worked_out(
    capsys, monkeypatch, tmp_path, config
):
    # One file for both backings: the jobs that make an S3 bundle export its bucket, an EBS job need not,
    # as an EBS build reads neither s3_bucket nor s3_path (the preview names them as unused_by_backing).
    monkeypatch.delenv("BUNDLE_BUCKET", raising=False)
    shared = write_toml(
        tmp_path / "shared.toml",
        {"ami": {"s3_bucket": "{env:BUNDLE_BUCKET}", "s3_path": "web/{git_sha_short}"}},
    )
    ebs = ("--set", "bundler=native", "--set", "backing=ebs")
    status, out, err = amidsl(capsys, "validate", "-c", str(config), "-c", str(shared), *ebs)
    assert status == 0, err
    assert "root disk to an EBS snapshot" in out
    status, out, err = amidsl(capsys, "plan", "-c", str(config), "-c", str(shared), *ebs)
    assert status == 0, err
    assert "unused_by_backing" in out and "s3_bucket, s3_path" in out


def commit_in(repo: Path) -> str:
    """Commit the repository's amidsl.toml; the commit's id."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "amidsl.toml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "settings"], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_git_sha_is_the_commit_of_the_settings_file_s_repository(capsys, tmp_path, raw_settings):
    repo = tmp_path / "repo"
    repo.mkdir()
    config = write_toml(repo / "amidsl.toml", {"ami": raw_settings | {"image_name": "web-{git_sha_short}"}})
    sha = commit_in(repo)
    status, out, _ = amidsl(capsys, "plan", "-c", str(config))
    assert status == 0 and f'"web-{sha[:12]}"' in out
    outside = write_toml(tmp_path / "elsewhere.toml", {"ami": raw_settings | {"image_name": "web-{git_sha}"}})
    status, _, err = amidsl(capsys, "plan", "-c", str(outside))
    assert status == 2 and "image_name: uses {git_sha}, but" in err and "is not in a git work tree" in err


TAGS_WITH_VARIABLES = 'tags={ Build = "{git_sha_short}", Env = "{env:DEPLOY_ENV}", "{date}" = "{{x}}" }'


def test_variables_in_tag_values_are_what_the_plan_the_script_and_the_simulated_image_show(
    capsys, monkeypatch, tmp_path
):
    repo = tmp_path / "repo"
    repo.mkdir()
    config = repo / "amidsl.toml"
    config.write_bytes(example_config_path().read_bytes())
    sha = commit_in(repo)
    monkeypatch.setenv("DEPLOY_ENV", "prod")
    tags = f"Build={sha[:12]}, Env=prod, {{date}}={{x}}"  # keys as written; {{ }} a literal brace
    for command in ("plan", "script"):
        status, out, err = amidsl(capsys, command, "-c", str(config), "--set", TAGS_WITH_VARIABLES)
        assert status == 0, err
        assert tags in out and "{git_sha_short}" not in out and "{env:" not in out
    plan = load_plan(find_config([str(config)], [TAGS_WITH_VARIABLES]), None)
    simulation = simulate(plan, payload_mb=1)
    try:
        ec2 = simulation.region.client("ec2", "us-east-1")
        image = ec2.describe_images(ImageIds=[simulation.image_id])["Images"][0]
    finally:
        simulation.close()
    assert {tag["Key"]: tag["Value"] for tag in image["Tags"]} == {
        "amidsl:built-by": "amidsl",
        "Build": sha[:12],
        "Env": "prod",
        "{date}": "{x}",
    }


def test_an_unknown_variable_in_a_tag_names_the_tag_and_the_file(capsys, tmp_path, config):
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"tags": {"Build": "{git_sha_shrot}"}}})
    status, _, err = amidsl(capsys, "plan", "-c", str(config), "-c", str(ci))
    assert status == 2
    assert f"tags.Build (from {ci}): uses an unknown variable {{git_sha_shrot}}" in err


def test_variables_in_a_list_are_what_the_plan_shows_and_a_problem_names_the_entry_and_the_file(
    capsys, monkeypatch, tmp_path, config
):
    monkeypatch.setenv("DR_REGION", "us-west-2")
    status, out, err = amidsl(
        capsys, "plan", "-c", str(config), "--set", 'copy_to_regions=["{env:DR_REGION}"]'
    )
    assert status == 0, err
    assert re.search(r"copy_to_regions +us-west-2\n", out)
    ci = write_toml(tmp_path / "ci.toml", {"ami": {"copy_to_regions": ["eu-west-1", "{env:DR_REGOIN}"]}})
    status, _, err = amidsl(capsys, "plan", "-c", str(config), "-c", str(ci))
    assert status == 2
    assert f"copy_to_regions[1] (from {ci}): uses {{env:DR_REGOIN}}, but DR_REGOIN is not set" in err


def test_an_unknown_variable_is_an_error_naming_setting_and_variable(capsys, config):
    status, _, err = amidsl(capsys, "script", "-c", str(config), "--set", "image_name=web-{today}")
    assert status == 2 and "image_name (set by --set): uses an unknown variable {today}" in err


def test_relative_files_are_relative_to_the_file_that_names_them_and_to_the_current_folder_for_set(
    monkeypatch, tmp_path, config
):
    (tmp_path / "ci").mkdir()
    ci = write_toml(tmp_path / "ci" / "ci.toml", {"live": {"known_hosts": "hosts", "ssh_config": "ssh.conf"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOSTS_DIR", "/srv/amidsl")
    choice = find_config([str(config), str(ci)], ["live.ssh_config=here.conf"])
    live = load_live_config(choice).live
    assert live.known_hosts == str(tmp_path / "ci" / "hosts")  # from ci.toml, next to it
    assert live.ssh_config == str(tmp_path / "here.conf")  # from --set, in the current folder
    choice = find_config([str(config)], ["live.known_hosts={env:HOSTS_DIR}/known_hosts"])
    assert load_live_config(choice).live.known_hosts == "/srv/amidsl/known_hosts"  # anchored as expanded


@pytest.mark.parametrize("command", ["plan", "script", "simulate", "validate"])
def test_a_typo_in_live_is_refused_by_every_command_that_reads_the_file(
    capsys, tmp_path, raw_settings, command
):
    config = write_toml(tmp_path / "ami.toml", {"ami": raw_settings, "live": {"hots": "node"}})
    status, out, err = amidsl(capsys, command, "-c", str(config))
    assert status == 2, out
    assert "live.hots: is not a known [live] setting" in err and "did you mean 'host'?" in err
    status, _, err = amidsl(
        capsys, command, "-c", str(config), "--set", "live.host=node", "--set", "live.prot=22"
    )
    assert status == 2
    assert "live.hots (from" in err and "live.prot (set by --set): is not a known [live] setting" in err


@pytest.mark.parametrize("command", ["plan", "script", "simulate"])
def test_an_unknown_table_is_refused_by_every_command_that_reads_the_file(
    capsys, tmp_path, raw_settings, command
):
    config = write_toml(tmp_path / "ami.toml", {"ami": raw_settings, "Live": {"host": "node"}})
    status, _, err = amidsl(capsys, command, "-c", str(config))
    assert status == 2 and "[Live]: is not a table amidsl knows. Fix: remove it (did you mean [live]?)" in err


def test_a_missing_file_named_by_amidsl_config_says_it_came_from_there(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AMIDSL_CONFIG", "nonexist.toml")
    status, _, err = amidsl(capsys, "validate")
    assert status == 2 and "--config" not in err
    assert "$AMIDSL_CONFIG: file 'nonexist.toml' does not exist" in err
    assert "set AMIDSL_CONFIG to an existing TOML file, or unset it" in err
