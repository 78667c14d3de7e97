"""The bash script renderer: golden scripts, shellcheck, determinism, and exact argv under bash."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl import crate
from amidsl.example import example_config_path
from amidsl.model.actions import (
    AwsCall,
    CheckResult,
    EnvSecret,
    Exec,
    OptionalArg,
    RunnerValue,
    RuntimeValue,
    StagedFile,
    UpdateSettings,
    WaitForImage,
)
from amidsl.model.plan import build_plan, group_spec
from amidsl.model.steps import (
    CREATED_RECORD,
    ByPackageManager,
    Check,
    CollectExisting,
    CollectMatching,
    Command,
    Fail,
    Glob,
    IfMissing,
    IfPresent,
    IfSucceeds,
    ShellVariable,
    created_marker,
    node_steps,
)
from amidsl.node import program_sha256, program_source
from amidsl.render.shell import aws_cli_words, render_action, render_script, wait_cli_words
from amidsl.settings import NODE_STATE_DIR, load_toml
from amidsl.testing import describe_image_phase

GOLDEN = Path(__file__).parent / "golden" / "script"
UPDATE = os.environ.get("AMIDSL_UPDATE_GOLDEN") == "1"


def golden_text(script: str) -> str:
    """The script as its golden file holds it: the node program's text replaced by its SHA-256.

    The program is tested on its own; a golden file pins where it goes and which copy is checked.
    """
    placeholder = f"[the node program amidsl/node/amidsl_node.py, sha256 {program_sha256()}]\n"
    return script.replace(program_source(), placeholder)


# The example's build strategies, by the settings that choose them (and their golden files' folder).
VARIANTS = {"native": {}, "ami-tools": {"bundler": "ami-tools"}, "ebs": {"backing": "ebs"}}


def example_spec(bundler="native"):
    return crate.server_spec(load_toml(example_config_path()) | {"bundler": "native", **VARIANTS[bundler]})


def example_group(bundler="native"):
    return group_spec("ami", extends=[example_spec(bundler)], phases={"test": describe_image_phase})


@pytest.mark.parametrize("bundler", sorted(VARIANTS))
@pytest.mark.parametrize("phase", [*crate.PHASE_FUNCTIONS, "test"])
def test_each_phase_script_matches_its_golden_file(phase, bundler):
    """Golden files pin what each phase runs; regenerate with AMIDSL_UPDATE_GOLDEN=1 and review the diff."""
    text = golden_text(render_script(build_plan(example_group(bundler), phases=[phase])))
    golden = GOLDEN / ("" if bundler == "native" else bundler) / f"{phase}.sh"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("bundler", sorted(VARIANTS))
def test_example_script_passes_shellcheck_and_bash_syntax_check(tmp_path, bundler):
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(example_group(bundler))))
    checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_the_script_labels_notes_as_notes_and_warnings_as_warnings(raw_settings):
    native = render_script(build_plan(crate.server_spec(raw_settings | {"bundler": "native"})))
    assert "\n# note (install): native build: nothing is installed" in native
    assert "# WARNING (install): native build" not in native
    ami_tools = render_script(build_plan(crate.server_spec(raw_settings | {"bundler": "ami-tools"})))
    assert "\n# WARNING (install): OS packages installed by this phase stay in the image" in ami_tools


def test_same_plan_renders_byte_identical():
    assert render_script(build_plan(example_spec())) == render_script(build_plan(example_spec()))


def test_script_checks_run_time_inputs_before_any_phase(tmp_path):
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(example_spec("ami-tools"), phases=["ami-upload"])))
    run = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}
    )
    assert run.returncode != 0
    assert (
        "AMIDSL_ACCESS_KEY" in run.stderr and "set AMIDSL_ACCESS_KEY to the AWS access key id" in run.stderr
    )
    assert "==>" not in run.stdout  # nothing ran


def test_a_native_script_asks_for_no_aws_credential_or_key_file():
    text = render_script(build_plan(example_group()))
    assert "AMIDSL_ACCESS_KEY" not in text and "AMIDSL_SECRET_KEY" not in text
    assert "AMIDSL_PRIVATE_KEY_FILE" not in text and "check_inputs" not in text


@pytest.mark.parametrize("bundler", ["native", "ami-tools"])
def test_the_script_header_lists_only_the_settings_its_bundler_reads(bundler):
    header = render_script(build_plan(example_spec(bundler))).split("set -Eeuo pipefail")[0]
    only_ami_tools = ("ruby_version", "install_ruby", "credential_dir", "private_key_path", "inherit")
    shown = [name for name in only_ami_tools if f"#   {name} = " in header]
    assert shown == ([] if bundler == "native" else list(only_ami_tools))
    assert "#   destination_dir = " in header and "#   region = " in header


def test_a_native_script_embeds_the_node_program_as_is_with_its_checksum():
    text = render_script(build_plan(example_spec(), phases=["install"]))
    assert program_source() in text  # a quoted here-document: readable, byte for byte
    assert program_sha256() in text


def test_failing_action_names_phase_and_action(tmp_path):
    spec = group_spec(
        "t",
        extends=[example_spec()],
        phases={"boom": lambda s: [Exec(("false",), description="a step that fails")]},
    )
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(spec, phases=["boom"])))
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "amidsl: FAILED in phase boom action 1 (a step that fails) (exit 1)" in run.stderr


# -- every value survives rendering: run the commands with the programs swapped for a recorder ------

# Records its argv (and the ami-tools environment) as: count NUL, then each word NUL-terminated.
RECORDER = """#!/bin/bash
{ printf '%s\\0' "$(( $# + 3 ))" "$0" "$@" "EC2_AMITOOL_HOME=${EC2_AMITOOL_HOME-}" "PATH=$PATH"; } \\
  >> "$AMIDSL_TEST_RECORD"
"""
# Every program the node commands and API calls use, as a shell function that records its argv.
RECORDED_PROGRAMS = (
    "aws git mkdir install curl unzip rm rmdir mv chown apt-get apt-cache dnf yum ln ruby printf find ls fail"
)
SHELL_RECORDERS = f"""
record() {{ {{ builtin printf '%s\\0' "$#" "$@"; }} >> "$AMIDSL_TEST_RECORD"; }}
for program in {RECORDED_PROGRAMS}; do eval "$program() {{ record $program \\"\\$@\\"; }}"; done
"""


def read_records(path: Path) -> list[list[str]]:
    fields = path.read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
    records = []
    while fields:
        count, fields = int(fields[0]), fields[1:]
        records.append(fields[:count])
        fields = fields[count:]
    return records


def resolved(words, env: dict[str, str]) -> list[str]:
    out = []
    for word in words:
        if isinstance(word, (EnvSecret, RuntimeValue)):
            out.append(env[word.env_var])
        elif isinstance(word, OptionalArg):
            if env.get(word.value.env_var):
                out += [word.flag, env[word.value.env_var]]
        elif isinstance(word, RunnerValue):
            out.append(env.get(word.env_var) or word.default)
        else:
            out.append(word)
    return out


# Quotes, command substitutions, backticks, globs, expansions and unicode, in any mix.
awkward = st.lists(
    st.sampled_from([*"aZ09 '\"$()`*?[]{}~!;&|<>#\\é✓", "$(id)", "`id`", "${HOME}", "\\n"]),
    min_size=1,
    max_size=8,
).map("".join)
path_segment = awkward.map(lambda s: s.replace("/", "")).filter(lambda s: s not in (".", ".."))
# Free text: no control characters but line breaks and tabs (settings refuse the rest).
description = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), whitelist_characters="\n\t"),
    max_size=60,
)
ec2_name = st.text(alphabet=list("aZ09()[]./-'@_ "), min_size=3, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    install=path_segment,
    creds=path_segment,
    dest=path_segment,
    name=ec2_name,
    description=description,
    secret=awkward,
    token=st.one_of(st.just(""), awkward),
)
def test_awkward_values_reach_programs_exactly(
    raw_settings, tmp_path, install, creds, dest, name, description, secret, token
):
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    raw = raw_settings | {
        "install_dir": f"{base}/{install}",
        "credential_dir": f"{base}/{install}/{creds}",
        "destination_dir": f"{base}/d{dest}",
        "image_name": name,
        "image_description": description,
        "access_key": "AKIAEXAMPLEEXAMPLE12",
        "secret_key": secret,
        "extra_exclusions": [f"/srv/{install}"],
    }
    plan = build_plan(example_group_for(raw))
    s = plan.settings
    tools_bin = Path(s.tools_dir) / "bin"
    tools_bin.mkdir(parents=True)
    rbenv_bin = Path(s.install_dir) / ".rbenv" / "bin"
    rbenv_bin.mkdir(parents=True)
    tools = ("ec2-bundle-vol", "ec2-upload-bundle", "ec2-ami-tools-version")
    for program in (*(tools_bin / tool for tool in tools), rbenv_bin / "rbenv"):
        program.write_text(RECORDER)
        program.chmod(0o755)

    Path(s.credential_dir).mkdir(parents=True, exist_ok=True)  # for `printf ... > cert` to land
    env = {
        "AMIDSL_ACCESS_KEY": "AKIAEXAMPLEEXAMPLE12",
        "AMIDSL_SECRET_KEY": secret,
        "AMIDSL_SESSION_TOKEN": token,
        "AMIDSL_IMAGE_ID": "ami-0123456789abcdef0",
        "AMIDSL_PRIVATE_KEY_FILE": f"{base}/staged key",
    }
    actions = [a for p in plan.phases for a in p.actions if not isinstance(a, (UpdateSettings, CheckResult))]
    lines = [SHELL_RECORDERS] + ["\n".join(render_action(a)) for a in actions]
    record = base / "record"
    for _ in range(5):
        # The script looks at this machine's amidsl state directory, which a test beside this one
        # (pytest -n: a build on the local sshd node) may create or remove: run again if it changed.
        state = node_state()
        # What bash should run, worked out from the same data before anything runs.
        planned = dict(env)
        expected = [argv for action in actions for argv in expected_argvs(action, planned)]
        record.unlink(missing_ok=True)
        run = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + "\n".join(lines)],
            env={**planned, "PATH": os.environ["PATH"], "AMIDSL_TEST_RECORD": str(record)},
            capture_output=True,
        )
        if node_state() == state:
            break
    assert run.returncode == 0, run.stderr
    assert read_records(record) == expected
    shutil.rmtree(base)


def test_a_command_with_a_umask_creates_its_files_under_it_and_leaves_the_shells_alone(tmp_path):
    private, after = tmp_path / "private", tmp_path / "after"
    actions = [Exec(("touch", str(private)), umask="077"), Exec(("touch", str(after)))]
    lines = ["umask 022", *("\n".join(render_action(a)) for a in actions)]
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(lines)], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert (private.stat().st_mode & 0o777, after.stat().st_mode & 0o777) == (0o600, 0o644)


def node_state() -> tuple[bool, bool]:
    """Whether this machine has amidsl's state directory and its record of created directories."""
    return (Path(NODE_STATE_DIR).is_dir(), Path(CREATED_RECORD).is_dir())


def expected_argvs(action, env: dict[str, str]) -> list[list[str]]:
    """The argv (plus, for the executable recorders, the tools' environment) each program should get."""
    if isinstance(action, AwsCall):
        return [resolved(aws_cli_words(action), env)]
    if isinstance(action, WaitForImage):
        return [resolved(wait_cli_words(action), env)]
    found: list[list[str]] = []

    def walk(steps) -> None:
        for step in steps:
            if isinstance(step, Command):
                argv = [expand(word, env) for word in step.argv]
                argv = [w for word in argv for w in (word if isinstance(word, list) else [word])]
                if "/" in argv[0]:  # an executable recorder also reports the tools' environment
                    tool_env = dict(step.env)
                    home = tool_env.get("EC2_AMITOOL_HOME", "")
                    path = tool_env.get("PATH", os.environ["PATH"])
                    argv += [f"EC2_AMITOOL_HOME={home}", f"PATH={path}"]
                found.append(argv)
            elif isinstance(step, IfMissing):
                present = Path(step.path).is_dir() if step.kind == "d" else Path(step.path).exists()
                if not present:
                    walk(step.then)
            elif isinstance(step, IfPresent):
                if Path(step.path).is_dir():
                    walk(step.then)
            elif isinstance(step, Check):
                # The recorders print nothing and succeed: only a path still there makes a check fail.
                if step.kind == "empty":
                    found.append(["ls", "-A", "--", step.path])
                elif (
                    step.kind == "absent" and (Path(step.path).exists() or Path(step.path).is_symlink())
                ) or (step.kind == "recorded" and not Path(created_marker(step.path)).is_dir()):
                    found.append(["fail", step.message])
            elif isinstance(step, ByPackageManager):
                walk(step.branches[0][1])  # the recorders make apt-get the first one found
            elif isinstance(step, IfSucceeds):
                walk(step.tests + step.then)  # the recorders succeed
            elif isinstance(step, CollectExisting):
                present = [p for p in step.paths if Path(p).exists()]
                env[step.variable] = step.separator.join(present)
                message = "amidsl: leaving out %s: it does not exist on this node\\n"
                found.extend(["printf", message, p] for p in step.paths if p not in present)
            elif isinstance(step, CollectMatching):
                m = step.matching
                if m.when_any and not any(Path(p).exists() for p in m.when_any):
                    found.append(["printf", "amidsl: %s\\n", m.otherwise])
                    continue
                # The recorded find prints nothing: nothing is added, and the count is 0.
                types = [w for t in m.fs_types for w in ("!", "-fstype", t)]
                tests = [w for i, p in enumerate(m.patterns) for w in ((["-o"] if i else []) + ["-path", p])]
                found.append(
                    ["find", m.root, "(", *types, ")", "-prune", "-o", "(", *tests, ")", "-print0", "-prune"]
                )
                if not m.say_each:
                    found.append(["printf", "amidsl: %s %s paths (%s)\\n", m.saying, "0", m.why])
            elif isinstance(step, Fail):
                found.append(["fail", step.message])

    walk(node_steps(action))
    return found


def expand(word, env: dict[str, str]):
    """What bash makes of one word of a command (a list when it is zero or several words)."""
    if isinstance(word, StagedFile):
        return env[word.env_var]
    if isinstance(word, ShellVariable):
        return env[word.name]
    if isinstance(word, Glob):
        pattern = f"{word.directory.rstrip('/')}/{word.pattern}"
        return sorted(glob.glob(f"{glob.escape(word.directory.rstrip('/'))}/{word.pattern}")) or [pattern]
    return resolved([word], env)


def example_group_for(raw):
    return group_spec("ami", extends=[crate.server_spec(raw)], phases={"test": describe_image_phase})


def test_a_phase_runs_without_the_inputs_of_other_phases(tmp_path):
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(example_spec("ami-tools"))))
    run = subprocess.run(["bash", str(script), "ami-upload"], capture_output=True, text=True, env={})
    assert "AMIDSL_ACCESS_KEY" in run.stderr  # ami-upload's own input is checked first...
    assert "AMIDSL_PRIVATE_KEY_FILE" not in run.stderr  # ...and configure's is not asked for


def test_an_unknown_phase_stops_the_script_before_any_phase_runs(tmp_path):
    script = tmp_path / "build.sh"
    script.write_text(render_script(build_plan(example_spec(), phases=["cleanup"])))
    run = subprocess.run(["bash", str(script), "cleanup", "cleanupp"], capture_output=True, text=True)
    assert run.returncode != 0 and "unknown phase: cleanupp" in run.stderr
    assert "==>" not in run.stdout


def test_a_here_document_is_shown_as_its_size_and_sha256_not_its_text(raw_settings):
    import hashlib

    from amidsl.render.shell import render_action, shown_command
    from amidsl.strategies import server_spec

    plan = build_plan(server_spec(raw_settings | {"bundler": "native"}), phases=["install"])
    write = next(a for a in plan.phases[0].actions if "node program (its full source)" in a.description)
    rendered = "\n".join(render_action(write))
    source = rendered.split("<<'AMIDSL_END_OF_FILE'\n", 1)[1].rsplit("AMIDSL_END_OF_FILE", 1)[0]
    assert source.count("\n") > 1000  # the script carries the whole program
    shown = [shown_command(line) for line in render_action(write)]
    text = "\n".join(shown)
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    assert f"<<'AMIDSL_END_OF_FILE' ({source.count(chr(10))} lines, {len(source.encode())} bytes, " in text
    assert f"SHA-256 {digest}; `amidsl script` shows the text)" in text
    assert "amidsl_node.py" in text and "def command_bundle" not in text and len(text.splitlines()) < 5
    # A command without a here-document is shown as it is.
    assert shown_command("mkdir -p -- /tmp") == "mkdir -p -- /tmp"
