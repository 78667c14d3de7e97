"""The `amidsl` command: help, usage errors, config discovery, plan/script/validate and their output."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amidsl.cli.table import COMMANDS, FORMAT_ALIAS
from amidsl.example import example_config_path
from tests.live.node_settings import write_toml

REPO = Path(__file__).resolve().parents[1]


def amidsl(*args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "AMIDSL_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "amidsl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=300,
    )


def usage_error(run: subprocess.CompletedProcess) -> bool:
    return run.returncode == 2 and "Traceback" not in run.stderr and run.stdout == ""


# -- help, version and usage errors ------------------------------------------------------------


def test_help_lists_every_command_on_one_line_each():
    run = amidsl("--help")
    assert run.returncode == 0
    for command in (
        "plan",
        "script",
        "validate",
        "simulate",
        "build",
        "bundle-image",
        "verify-bundle",
        "unbundle",
        "image-ls",
        "help",
    ):
        assert re.search(rf"\n  {command} +\S", run.stdout), command
    assert "--prompt-for-sudo-password" not in run.stdout and "Docstring" not in run.stdout


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_command_help_three_ways_is_the_same(command):
    long, short, word = amidsl(command, "--help"), amidsl(command, "-h"), amidsl("help", command)
    assert long.returncode == short.returncode == word.returncode == 0
    assert long.stdout == short.stdout == word.stdout
    assert long.stdout.startswith(f"usage: amidsl {command} ")


def test_every_option_of_the_table_is_in_the_command_help():
    for command in COMMANDS:
        text = amidsl(command.name, "--help").stdout
        for option in command.options:
            assert (option.name if option.positional else option.flag) in text, (command.name, option)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.name)
def test_each_command_names_a_function_that_exists(command):
    """The table names handlers as "module:function", imported only when the command runs."""
    import importlib
    import inspect

    module, _, function = command.target.partition(":")
    handler = getattr(importlib.import_module(module), function)
    parameters = inspect.signature(handler).parameters.values()
    if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        # (--format is no parameter: the table turns its older spelling into --json)
        options = {option.name for option in command.options if option is not FORMAT_ALIAS}
        assert options <= {parameter.name for parameter in parameters}


def test_version():
    run = amidsl("--version")
    assert run.returncode == 0 and re.fullmatch(r"amidsl \d+\.\d+\.\d+\n", run.stdout)


def test_a_mistyped_command_suggests_the_nearest():
    run = amidsl("pln")
    assert usage_error(run)
    assert "'pln' is not an amidsl command (did you mean plan?)" in run.stderr


def test_a_mistyped_option_suggests_the_nearest():
    run = amidsl("plan", "--fromat", "json")
    assert usage_error(run) and "unrecognized arguments: --fromat" in run.stderr
    assert "(did you mean --format?)" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--dry"],
        ["plan", "--config"],
        ["validate", "plan"],
        ["build", "-h", "node"],  # -h is help everywhere, never --host: this is help, exit 0
        ["plan", "--format", "yaml"],
        ["simulate", "--payload-mb", "many"],
        ["bundle-image", "--image", "disk.img"],
        ["help", "nope"],
    ],
)
def test_nothing_a_user_types_ends_in_a_traceback(args):
    run = amidsl(*args)
    assert "Traceback" not in run.stderr + run.stdout
    assert run.returncode == (0 if "-h" in args else 2), run.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_has_help_of_its_own(flag):
    run = amidsl("help", flag)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: amidsl help [COMMAND]\n")


def test_every_command_with_a_phase_option_takes_it_as_p_too():
    with_phase = [command for command in COMMANDS if any(o.name == "phase" for o in command.options)]
    assert {command.name for command in with_phase} >= {"plan", "script", "simulate", "build"}
    for command in with_phase:
        (option,) = [o for o in command.options if o.name == "phase"]
        assert option.short == "-p", command.name
    assert "-p PHASE, --phase PHASE" in amidsl("build", "--help").stdout


REGION_COMMANDS = [c for c in COMMANDS if any(o.name == "region" for o in c.options)]


@pytest.mark.parametrize("command", REGION_COMMANDS, ids=lambda command: command.name)
def test_a_mistyped_region_is_a_usage_error_with_a_suggestion_before_any_aws_call(
    command, capsys, monkeypatch
):
    import boto3

    from amidsl.cli.main import run as run_in_process

    def no_aws(*args, **kwargs):
        raise AssertionError("AWS was called")

    monkeypatch.setattr(boto3.session, "Session", no_aws)
    assert run_in_process([command.name, "--region", "eu-wset-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "--region: 'eu-wset-1' is not a region AWS has" in captured.err
    assert "did you mean 'eu-west-1'?" in captured.err


def test_the_inv_tasks_refuse_a_mistyped_region_too(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "images", "--region", "eu-wset-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "did you mean 'eu-west-1'?" in run.stderr, run.stderr


def test_required_options_are_named_together():
    run = amidsl("verify-bundle")
    assert usage_error(run) and "the following arguments are required: --manifest, --cert" in run.stderr


def test_a_required_word_shows_as_required_in_the_usage_and_is_asked_for():
    shown = amidsl("delete", "--help")
    assert shown.returncode == 0 and "[IMAGE]" not in shown.stdout
    usage = shown.stdout.split("\n\n")[0]
    assert usage.split()[-1] == "IMAGE", usage
    run = amidsl("delete")
    assert usage_error(run) and "the following arguments are required: IMAGE" in run.stderr


# `true` exits before Python has started, so the first write meets a closed pipe.
@pytest.mark.parametrize("command", ["amidsl --help | true", "amidsl plan | true"])
def test_a_closed_pipe_ends_the_command_quietly(command):
    python = f"{sys.executable} -m amidsl"
    run = subprocess.run(
        ["bash", "-c", f"{command.replace('amidsl', python, 1)}; echo status=${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
    )
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr
    assert run.stdout.splitlines()[-1] == "status=141"


def loaded_by_plan_script_and_validate(modules: set[str], top_level: bool = False) -> list[str]:
    """Which of `modules` a fresh process has loaded after `plan`, `script` and `validate` (by top-level
    package name, with top_level)."""
    name = "m.split('.')[0]" if top_level else "m"
    probe = (
        "import sys\n"
        "from amidsl.cli.main import run\n"
        "for command in ('plan', 'script', 'validate'):\n"
        "    assert run([command]) == 0\n"
        f"print('LOADED', sorted({{{name} for m in sys.modules}} & {set(modules)!r}), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return ast.literal_eval(run.stderr.split("LOADED ", 1)[1].strip())


def test_plan_script_and_validate_load_no_aws_ssh_moto_or_invoke_code():
    heavy = {"boto3", "botocore", "moto", "paramiko", "invoke"}
    assert loaded_by_plan_script_and_validate(heavy, top_level=True) == []


def test_plan_script_and_validate_load_no_thread_pool_or_logging():
    # The node program, imported for its constants, loads concurrent.futures (and with it logging)
    # only where it bundles or uploads.
    assert loaded_by_plan_script_and_validate({"concurrent.futures", "logging"}) == []


def test_plan_of_the_built_in_example_reads_no_endpoints_json():
    # The example's region is in botocore's partitions.json; endpoints.json (1.2 MB) is read only for
    # a region that file does not list.
    probe = (
        "import builtins, io, sys\n"
        "from amidsl.cli.main import run\n"
        "opened = []\n"
        "real_open = io.open\n"
        "def watched(file, *args, **kwargs):\n"
        "    opened.append(str(file))\n"
        "    return real_open(file, *args, **kwargs)\n"
        "io.open = builtins.open = watched\n"
        "assert run(['plan']) == 0\n"
        "names = sorted(p.rsplit('/', 1)[-1] for p in opened if p.endswith('.json'))\n"
        "print('READ', names, file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "READ ['partitions.json']" in run.stderr


@pytest.mark.parametrize(("argv", "status"), [(["--version"], 0), (["no-such-command"], 2)])
def test_once_moto_is_loaded_amidsl_still_exits_with_its_status_its_output_and_exit_handlers(argv, status):
    # After a simulation (the only command that loads moto) amidsl leaves without freeing each object.
    probe = (
        "import atexit, sys, threading, time\n"
        "import moto\n"
        "from amidsl.cli.main import main\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread finished'))).start()\n"
        f"main({argv!r})\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == status, run.stderr
    assert run.stdout.endswith("thread finished\nexit handler ran\n")
    assert "Traceback" not in run.stderr


def test_bash_completion_script_is_valid_and_knows_the_commands():
    run = amidsl("completion", "bash")
    assert run.returncode == 0
    check = subprocess.run(["bash", "-n"], input=run.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    completed = subprocess.run(
        ["bash", "-c", run.stdout + 'COMP_WORDS=(amidsl pl); COMP_CWORD=1; _amidsl; echo "${COMPREPLY[@]}"'],
        capture_output=True,
        text=True,
    )
    assert completed.stdout.split() == ["plan"]
    formats = subprocess.run(
        ["bash", "-c", run.stdout + 'COMP_WORDS=(amidsl plan --format ""); COMP_CWORD=3; _amidsl; '
         'echo "${COMPREPLY[@]}"'],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert formats.stdout.split() == ["text", "json"]


def test_invoke_tasks_are_made_from_the_same_table():
    run = subprocess.run([sys.executable, "-m", "invoke", "--list"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    for command in COMMANDS:
        assert f"  {command.name} " in run.stdout
    simulate = subprocess.run(
        [sys.executable, "-m", "invoke", "--help", "simulate"], capture_output=True, text=True, cwd=REPO
    )
    for flag in ("--fault", "--payload-mb", "--inspect", "--quiet", "--verbose"):
        assert flag in simulate.stdout
    plan = subprocess.run(
        [sys.executable, "-m", "invoke", "plan", "--phase", "cleanup", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert [p["name"] for p in json.loads(plan.stdout)["phases"]] == ["cleanup"]


# The commands that run offline on their defaults (the built-in example); the others need an argument,
# a node or AWS, and must say so.
OFFLINE_ON_DEFAULTS = ("plan", "script", "validate", "simulate", "completion", "init")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.name)
def test_every_inv_task_runs_on_its_defaults_or_says_what_it_needs(command, tmp_path):
    # AWS is a closed port on loopback: a command that calls it fails at once, and nothing leaves.
    env = os.environ | {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE0000000000",
    }
    env |= {"AWS_SECRET_ACCESS_KEY": "example", "AWS_DEFAULT_REGION": "us-east-1", "AMIDSL_CONFIG": ""}
    run = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), command.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert "Traceback" not in run.stderr and "choose one of" not in run.stderr, run.stderr
    required = [option.flag for option in command.options if option.required]
    if command.name in OFFLINE_ON_DEFAULTS:
        assert run.returncode == 0, run.stderr
    elif required:
        assert run.returncode == 2 and f"{required[0]} is required" in run.stderr, run.stderr
    else:
        assert run.returncode in (1, 2) and run.stderr.strip(), run.stderr


# -- config discovery ----------------------------------------------------------------------------


def test_plan_on_the_built_in_example_says_so_on_stderr(tmp_path):
    run = amidsl("plan", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "image 'amidsl-example-ami'" in run.stdout and "phase cleanup" in run.stdout
    assert "using the built-in example settings" in run.stderr


def test_amidsl_toml_in_the_current_directory_is_used(tmp_path, raw_settings):
    write_toml(tmp_path / "amidsl.toml", {"ami": raw_settings})
    run = amidsl("validate", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "using settings amidsl.toml (from ./amidsl.toml)" in run.stdout
    assert "settings OK: image 'web-server-2026-11'" in run.stdout


def test_amidsl_config_beats_the_current_directory_and_config_beats_both(tmp_path, raw_settings):
    write_toml(tmp_path / "amidsl.toml", {"ami": raw_settings})
    other = write_toml(tmp_path / "other.toml", {"ami": raw_settings | {"image_name": "from-env"}})
    run = amidsl("plan", cwd=tmp_path, env={"AMIDSL_CONFIG": str(other)})
    assert "image 'from-env'" in run.stdout and "(from $AMIDSL_CONFIG)" in run.stderr
    given = amidsl(
        "plan", "--config", str(example_config_path()), cwd=tmp_path, env={"AMIDSL_CONFIG": str(other)}
    )
    assert "image 'amidsl-example-ami'" in given.stdout and "(from --config)" in given.stderr


# -- plan, script, validate ------------------------------------------------------------------------


def test_plan_json_parses_and_honours_phases():
    run = amidsl("plan", "--format", "json", "--phase", "ami-upload", "--phase", "ami-bundle")
    data = json.loads(run.stdout)
    assert data["schema"] == "amidsl.plan/1"
    assert [p["name"] for p in data["phases"]] == ["ami-bundle", "ami-upload"]


def test_json_output_is_spelled_json_everywhere_and_plan_format_json_is_its_alias():
    with_json = {c.name for c in COMMANDS if any(o.name == "json" for o in c.options)}
    assert {"plan", "simulate", "build", "images"} <= with_json
    assert [c.name for c in COMMANDS if any(o.name == "format" for o in c.options)] == ["plan"]
    documents = [
        amidsl("plan", *flags).stdout for flags in (["--json"], ["--format", "json"], ["-f", "json"])
    ]
    assert json.loads(documents[0])["schema"] == "amidsl.plan/1" and len(set(documents)) == 1
    assert not amidsl("plan", "--format", "text").stdout.startswith("{")


def test_the_json_option_names_the_schema_its_command_writes():
    from amidsl.cli import build_commands, simulate_commands
    from amidsl.render import preview

    writes = {"plan": preview.SCHEMA, "simulate": simulate_commands.SCHEMA, "build": build_commands.SCHEMA}
    for command in COMMANDS:
        if command.name in writes:
            json_option = next(o for o in command.options if o.name == "json")
            assert f"(schema {writes[command.name]})" in json_option.help, command.name


def test_plan_text_quotes_only_strings_and_counts_in_words(tmp_path):
    config = tmp_path / "ami.toml"  # the example with ami-tools, whose settings include booleans
    config.write_text(
        example_config_path().read_text().replace("[ami]\n", '[ami]\nbundler = "ami-tools"\n', 1)
    )
    text = amidsl("plan", "--config", str(config)).stdout
    assert re.search(r"\n  install_ruby +true\n", text)
    assert re.search(r"\n  image_size_mb +\(none\)\n", text)
    assert re.search(r'\n  region +"us-east-1"\n', text)
    assert "phase ami-register (4 actions)" in text and "action(s)" not in text


def test_script_for_the_example_file_is_identical_across_runs():
    first = amidsl("script", "--config", str(example_config_path()))
    second = amidsl("script", "--config", str(example_config_path()))
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith("#!/usr/bin/env bash\n")


def test_script_header_shows_where_keys_come_from_never_a_key(tmp_path, raw_settings):
    raw = raw_settings | {"access_key": "AKIAEXAMPLEEXAMPLE12", "secret_key": "hush-hush"}
    run = amidsl("script", "--config", str(write_toml(tmp_path / "ami.toml", {"ami": raw})))
    assert run.returncode == 0, run.stderr
    assert "AKIAEXAMPLEEXAMPLE12" not in run.stdout and "hush-hush" not in run.stdout
    assert "from the settings; supplied at run time as AMIDSL_ACCESS_KEY" in run.stdout


def test_script_to_a_file_follows_the_umask_and_is_not_executable(tmp_path):
    target = tmp_path / "build.sh"
    run = subprocess.run(
        [
            "bash",
            "-c",
            f'umask 077 && exec "$0" -m amidsl script -o {target} --phase cleanup',
            sys.executable,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout == f"wrote {target}\n"
    assert "phase_cleanup()" in target.read_text() and "phase_install()" not in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o600


def test_validate_good_settings(tmp_path, raw_settings):
    run = amidsl("validate", "--config", str(write_toml(tmp_path / "ami.toml", {"ami": raw_settings})))
    assert run.returncode == 0
    assert run.stdout.splitlines()[1].startswith(
        "settings OK: image 'web-server-2026-11' (x86_64) in eu-west-1"
    )


def test_an_ebs_build_needs_only_a_name_and_a_region_and_says_where_the_disk_goes(tmp_path):
    settings = {"image_name": "web", "region": "eu-west-1", "backing": "ebs"}
    config = str(write_toml(tmp_path / "ami.toml", {"ami": settings}))
    run = amidsl("validate", "--config", config)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1].startswith(
        "settings OK: image 'web' (x86_64) in eu-west-1, root disk to an EBS snapshot, phases: install"
    )
    plan = amidsl("plan", "--config", config)
    assert "image 'web' (x86_64) in eu-west-1, root disk to an EBS snapshot" in plan.stdout
    assert "s3://" not in plan.stdout


def test_a_resumed_ebs_registration_validates_for_the_phases_it_runs(tmp_path):
    settings = {
        "image_name": "web",
        "region": "eu-west-1",
        "backing": "ebs",
        "snapshot_id": "snap-0123456789abcdef0",
    }
    config = str(write_toml(tmp_path / "ami.toml", {"ami": settings}))
    resumed = amidsl("validate", "--config", config, "--phase", "ami-register", "--phase", "cleanup")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[1].endswith("phases: ami-register, cleanup")
    whole = amidsl("validate", "--config", config)
    assert whole.returncode == 2
    assert "snapshot_id: is given (snap-0123456789abcdef0)" in whole.stderr
    simulated = amidsl("simulate", "--config", config, "--phase", "ami-register", "--phase", "cleanup")
    assert simulated.returncode == 2
    assert "a simulation starts from a fresh node and a fresh fake region, where no snapshot exists" in (
        simulated.stderr
    )


def test_one_config_switched_to_ebs_is_not_refused_for_a_signing_key_file_it_never_opens(
    tmp_path, raw_settings
):
    gone = str(tmp_path / "gone-pk.pem")
    raw = raw_settings | {"bundler": "native", "private_key_source": {"local_file": gone}}
    config = str(write_toml(tmp_path / "ami.toml", {"ami": raw}))
    refused = amidsl("validate", "--config", config)
    assert refused.returncode == 2
    assert (
        f"private_key_source: local_file {gone!r} does not exist. Fix: point local_file at the signing "
        "key's PEM file (its RSA private key, `pk-*.pem`)." in refused.stderr
    )
    ebs = ("--config", config, "--set", "backing=ebs")
    validated = amidsl("validate", *ebs)
    assert validated.returncode == 0, validated.stderr
    planned = amidsl("plan", *ebs)
    assert planned.returncode == 0, planned.stderr
    [unused] = [line for line in planned.stdout.splitlines() if line.strip().startswith("unused_by_backing")]
    assert "private_key_source" in unused and "s3_bucket" in unused and 'backing = "ebs"' in unused
    simulated = amidsl("simulate", *ebs, "--quiet")
    assert simulated.returncode == 0, simulated.stderr


def test_validate_reports_live_typos_and_unknown_tables(tmp_path, raw_settings):
    config = write_toml(
        tmp_path / "ami.toml", {"ami": raw_settings, "live": {"hots": "node"}, "aws": {"region": "x"}}
    )
    run = amidsl("validate", "--config", str(config))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "live.hots: is not a known [live] setting" in run.stderr and "did you mean 'host'?" in run.stderr
    assert "[aws]: is not a table amidsl knows" in run.stderr


@pytest.mark.parametrize("command", [["validate", "--live"], ["build", "--host", "node"]])
def test_live_commands_refuse_the_example_credentials_before_any_aws_or_node_work(
    tmp_path, raw_settings, command
):
    raw = raw_settings | {"private_key_source": {"example": True}, "certificate_source": {"example": True}}
    config = write_toml(tmp_path / "ami.toml", {"ami": raw, "live": {"endpoint_url": "http://127.0.0.1:9"}})
    run = amidsl(*command, "--config", str(config))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "{ example = true } is amidsl's throwaway example pair, which AWS never accepts" in run.stderr
    assert "AWS OK" not in run.stdout and "ok:" not in run.stdout


def test_the_example_credentials_are_said_of_every_layered_file(tmp_path, raw_settings):
    raw = raw_settings | {"private_key_source": {"example": True}, "certificate_source": {"example": True}}
    base = write_toml(tmp_path / "ami.toml", {"ami": raw, "live": {"endpoint_url": "http://127.0.0.1:9"}})
    top = write_toml(tmp_path / "ci.toml", {"ami": {"image_name": "web-ci"}})
    run = amidsl("validate", "--live", "--config", str(base), "--config", str(top))
    assert run.returncode == 2 and f"{base} + {top}: private_key_source and certificate_source" in run.stderr


def test_live_commands_refuse_the_built_in_example(tmp_path):
    for command in (["validate", "--live"], ["build", "--host", "node"]):
        run = amidsl(*command, cwd=tmp_path)
        assert run.returncode == 2 and "live builds and AWS checks need your settings file" in run.stderr


def test_bad_config_lists_every_problem_and_exits_2_without_traceback(tmp_path, raw_settings):
    raw = raw_settings | {
        "s3_bucket": "Bad_Bucket",
        "user_id": "AKIAEXAMPLEEXAMPLE12",
        "secret_key": "hush-hush",
        "region": "eu-west-9",
    }
    config = str(write_toml(tmp_path / "ami.toml", {"ami": raw}))
    for command in ("plan", "script", "validate"):
        run = amidsl(command, "--config", config)
        assert run.returncode == 2
        assert "Traceback" not in run.stderr
        assert "s3_bucket: 'Bad_Bucket' is not a valid S3 bucket name" in run.stderr
        assert "user_id: the value is an access key id, not an account id" in run.stderr
        assert "AKIAEXAMPLEEXAMPLE12" not in run.stderr + run.stdout
        assert "region: 'eu-west-9' is not a region AWS has" in run.stderr
        assert "secret_key: is missing" not in run.stderr  # access_key is missing instead
        assert "hush-hush" not in run.stderr + run.stdout


def test_arm64_with_the_native_strategy_is_refused_before_anything_runs(tmp_path, raw_settings):
    config = str(
        write_toml(tmp_path / "ami.toml", {"ami": raw_settings | {"bundler": "native", "arch": "arm64"}})
    )
    for command in ("plan", "script", "validate"):
        run = amidsl(command, "--config", config)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert "phase" not in run.stdout and "settings OK" not in run.stdout  # no plan, script or OK
        assert "arch: no instance type launches an arm64 instance-store AMI" in run.stderr
        assert 'build from an x86_64 node with arch = "x86_64"' in run.stderr


def test_missing_config_file(tmp_path):
    run = amidsl("plan", "--config", str(tmp_path / "nope.toml"))
    assert run.returncode == 2 and "does not exist" in run.stderr and "Traceback" not in run.stderr


def test_unknown_phase_and_format():
    run = amidsl("plan", "--phase", "bundle")
    assert run.returncode == 2 and "--phase: 'bundle' is not a phase of 'ami'" in run.stderr
    run = amidsl("plan", "--format", "yaml")
    assert usage_error(run) and "invalid choice: 'yaml' (choose from 'text', 'json')" in run.stderr


def test_a_failed_build_s_json_and_result_file_say_what_it_made_before_failing(
    tmp_path, raw_settings, monkeypatch, capsys
):
    from amidsl.cli import build_commands
    from amidsl.cli.main import run as run_command_line
    from amidsl.run.runner import BuildError, BuildResult

    def build_failing_after_registering(host, settings, **options):
        made = BuildResult(settings.with_values(image_id="ami-0abc1234"), node=f"root@{host}:22")
        made.timings = {"install": 1.5, "configure": 0.5, "ami-bundle": 9.0, "ami-upload": 3.0}
        raise BuildError(
            "ami-register", 4, "wait until the image is available", None, "failed", "", made=made
        )

    monkeypatch.setattr(build_commands, "Aws", lambda settings, live: None)
    monkeypatch.setattr(build_commands, "check_aws_side", lambda settings, aws, **checks: [])
    monkeypatch.setattr(build_commands, "build_on_host", build_failing_after_registering)
    config = write_toml(tmp_path / "ami.toml", {"ami": raw_settings, "live": {"host": "node"}})
    result = tmp_path / "result.json"
    status = run_command_line(["build", "--config", str(config), "--json", "--result", str(result)])
    document = json.loads(capsys.readouterr().out)
    assert status == 1 and document == json.loads(result.read_text())
    assert document["error"].startswith("build failed: phase ami-register, action 4")
    assert document["image_id"] == "ami-0abc1234" and document["images"] == {"eu-west-1": "ami-0abc1234"}
    assert set(document["timings"]) == {"install", "configure", "ami-bundle", "ami-upload"}
    assert document["node"] == "root@node:22"


@pytest.mark.parametrize("command", ["plan", "script"])
def test_output_dash_is_standard_output_as_for_other_tools(tmp_path, command):
    plain = amidsl(command, "--phase", "cleanup", cwd=tmp_path)
    dashed = amidsl(command, "--phase", "cleanup", "-o", "-", cwd=tmp_path)
    assert dashed.returncode == 0, dashed.stderr
    assert dashed.stdout == plain.stdout and "cleanup" in dashed.stdout
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_every_output_option_says_that_dash_is_standard_output():
    outputs = [o for c in COMMANDS for o in c.options if o.name == "output"]
    assert len(outputs) >= 4
    assert all("'-' for standard output" in o.help for o in outputs)
