"""Render a plan as one reviewable bash script: what is reviewed is exactly what runs.

Every value is shell-quoted; secrets appear only as environment references (checked at the top);
controller-side API calls are rendered as the equivalent `aws` CLI commands in a marked section. The
same plan always renders to the same bytes.
"""

from __future__ import annotations

import json
import re
import shlex

from amidsl import __version__
from amidsl.actions import (
    CONTROLLER_ACTIONS,
    Action,
    AwsCall,
    CheckResult,
    Directory,
    EnvSecret,
    Exec,
    InstallPackages,
    OptionalArg,
    PhasePlan,
    RemoteDirectory,
    RemoteFile,
    Remove,
    RuntimeValue,
    StagedFile,
    UpdateSettings,
    Value,
)
from amidsl.plan import Plan
from amidsl.render.summary import plan_title, public_settings

_GLOB_SAFE = re.compile(r"[A-Za-z0-9._*-]+")
_NAME_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quote(value: Value) -> str:
    """One shell word for a value: quoted text, or a reference to a run-time value."""
    if isinstance(value, str):
        return shlex.quote(value)
    if isinstance(value, EnvSecret):
        return f'"${{{value.env_var}}}"'
    if isinstance(value, RuntimeValue):
        return f'"${{{value.env_var}:?{value.setting} is set by the {value.produced_by} phase}}"'
    if isinstance(value, OptionalArg):
        var = value.value.env_var
        return f'${{{var}:+{shlex.quote(value.flag)} "${{{var}}}"}}'
    raise TypeError(f"cannot render value of type {type(value).__name__}")


def _words(values: tuple[Value, ...] | list[Value]) -> str:
    return " ".join(quote(v) for v in values)


def _staged_path(staged: StagedFile) -> str:
    return f'"${{{staged.env_var}}}"'


def render_action(action: Action) -> list[str]:
    """The bash lines that carry out one action (also shown in the plan preview)."""
    if isinstance(action, InstallPackages):
        return _install_packages(action)
    if isinstance(action, Directory):
        return [
            f"install -d -m {quote(action.mode)} -o {quote(action.owner)} "
            f"-g {quote(action.group)} -- {quote(action.path)}"
        ]
    if isinstance(action, RemoteFile):
        owner = f"-m {quote(action.mode)} -o {quote(action.owner)} -g {quote(action.group)}"
        if action.staged is not None:
            return [f"install {owner} -- {_staged_path(action.staged)} {quote(action.path)}"]
        assert action.content is not None
        return [
            f"install {owner} /dev/null {quote(action.path)}",
            f"printf '%s' {quote(action.content)} > {quote(action.path)}",
        ]
    if isinstance(action, RemoteDirectory):
        return _remote_directory(action)
    if isinstance(action, Exec):
        return _exec(action)
    if isinstance(action, Remove):
        if action.matching is not None:
            if not _GLOB_SAFE.fullmatch(action.matching):
                raise ValueError(f"unsafe pattern {action.matching!r}")
            return [f"rm -f -- {quote(action.path.rstrip('/') or '/')}/{action.matching}"]
        flags = "-rf" if action.recursive else "-f"
        return [f"rm {flags} -- {quote(action.path)}"]
    if isinstance(action, AwsCall):
        return _aws_call(action)
    if isinstance(action, UpdateSettings):
        lines = []
        for setting, field in action.fields:
            var = f"AMIDSL_{setting.upper()}"
            lines += [
                f'{var}=$(json_field "${_result_var(action.from_result)}" {quote(field)})',
                f"export {var}",
                f"printf '%s=%s\\n' {quote(setting)} \"${var}\"",
            ]
        return lines
    if isinstance(action, CheckResult):
        message = f"expected {action.length} item(s) in {action.field} of {action.from_result}"
        return [
            f'[ "$(json_length "${_result_var(action.from_result)}" {quote(action.field)})" '
            f"-eq {action.length} ] || fail {quote(message)}"
        ]
    raise TypeError(f"the shell renderer does not know the action type {type(action).__name__}")


def _install_packages(action: InstallPackages) -> list[str]:
    apt, rpm = _words(list(action.apt)), _words(list(action.rpm))
    return [
        "if command -v apt-get >/dev/null 2>&1; then",
        "  DEBIAN_FRONTEND=noninteractive apt-get update -q",
        f"  DEBIAN_FRONTEND=noninteractive apt-get install -y -q {apt}",
        "elif command -v dnf >/dev/null 2>&1; then",
        f"  dnf install -y -q {rpm}",
        "elif command -v yum >/dev/null 2>&1; then",
        f"  yum install -y -q {rpm}",
        "else",
        "  fail 'no apt-get, dnf or yum on this node: install the packages by hand'",
        "fi",
    ]


def _remote_directory(action: RemoteDirectory) -> list[str]:
    path = quote(action.path)
    lines = [f"install -d -m 0755 -o {quote(action.owner)} -g {quote(action.group)} -- {path}"]
    if action.url is not None:
        archive = quote(f"{action.path}/.download.zip")
        lines += [
            f"curl -fsSL --retry 3 -o {archive} {quote(action.url)}",
            f"unzip -q -o {archive} -d {path}",
            f"rm -f -- {archive}",
        ]
    else:
        assert action.staged is not None
        lines.append(f"unzip -q -o {_staged_path(action.staged)} -d {path}")
    if action.rename_glob is not None and action.rename_to is not None:
        if not _GLOB_SAFE.fullmatch(action.rename_glob):
            raise ValueError(f"unsafe pattern {action.rename_glob!r}")
        target = quote(f"{action.path}/{action.rename_to}")
        lines += [
            f"if [ ! -d {target} ]; then",
            f"  mv -- {path}/{action.rename_glob} {target}",
            "fi",
        ]
    lines.append(f"chown -R {quote(f'{action.owner}:{action.group}')} -- {path}")
    return lines


def _command_words(action: Exec) -> list[str]:
    """The command's shell words, long ones grouped one option (with its value) per line."""
    words = [quote(v) for v in action.argv]
    groups: list[str] = [words[0]] if words else []
    for word in words[1:]:
        if word.startswith("-") or word.startswith("${") or len(groups) == 1:
            groups.append(word)
        else:
            groups[-1] += f" {word}"
    return groups


def _exec(action: Exec) -> list[str]:
    for name, _ in action.env:
        if not _NAME_SAFE.fullmatch(name):
            raise ValueError(f"bad environment variable name {name!r}")
    env = [f"{name}={quote(value)}" for name, value in action.env]
    if action.user != "root":
        env = ["runuser", "-u", quote(action.user), "--", "env", *env]
    parts = env + _command_words(action)
    # A long command reads better one option per line; the words are the same either way.
    separator = " \\\n    " if sum(len(p) + 1 for p in parts) > 100 else " "
    command = separator.join(parts)
    if action.cwd is not None:
        command = f"(cd -- {quote(action.cwd)} && {command})"
    if action.creates is None:
        return [command]
    return [f"if [ ! -e {quote(action.creates)} ]; then", f"  {command}", "fi"]


def aws_cli_words(action: AwsCall) -> list[Value]:
    """The `aws` CLI command equivalent to an API call (operation and params in CLI spelling)."""
    words: list[Value] = ["aws", action.service, _kebab(action.operation), "--region", action.region]
    for key, value in action.params:
        words.append(f"--{_kebab(key)}")
        if isinstance(value, str | RuntimeValue):
            words.append(value)
        elif isinstance(value, tuple | list) and all(isinstance(v, str | RuntimeValue) for v in value):
            words += list(value)  # the CLI takes a list of plain values as separate words
        else:
            words.append(json.dumps(value, sort_keys=True, ensure_ascii=False))
    words += ["--output", "json"]
    return words


def _aws_call(action: AwsCall) -> list[str]:
    return [f"{_result_var(action.result_name)}=$({_words(aws_cli_words(action))})"]


def _result_var(name: str) -> str:
    if not _NAME_SAFE.fullmatch(name):
        raise ValueError(f"bad result name {name!r}")
    return f"{name}_result"


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()


def phase_function_name(phase: str) -> str:
    """The bash function that runs a phase (`ami-bundle` -> `phase_ami_bundle`)."""
    name = "phase_" + re.sub(r"[^A-Za-z0-9_]", "_", phase)
    return name


def runtime_inputs(plan: Plan) -> list[tuple[str, str]]:
    """The environment variables the script needs from its runner: (name, what for), in order."""
    needed: dict[str, str] = {}
    produced: set[str] = set()
    for phase in plan.phases:
        for action in phase.actions:
            if isinstance(action, UpdateSettings):
                produced.update(f"AMIDSL_{setting.upper()}" for setting, _ in action.fields)
            for ref in _references(action):
                if isinstance(ref, EnvSecret):
                    needed.setdefault(ref.env_var, f"{ref.what} ({phase.name})")
                elif isinstance(ref, StagedFile):
                    source = f" (copy of {ref.local_path})" if ref.local_path else ""
                    needed.setdefault(ref.env_var, f"path on the node of {ref.what}{source}")
                elif isinstance(ref, RuntimeValue) and ref.env_var not in produced:
                    needed.setdefault(ref.env_var, f"{ref.setting} from the {ref.produced_by} phase")
    return list(needed.items())


def _references(action: Action) -> list[EnvSecret | StagedFile | RuntimeValue]:
    refs: list[EnvSecret | StagedFile | RuntimeValue] = []
    values: list[object] = []
    if isinstance(action, Exec):
        values = list(action.argv) + [v for _, v in action.env]
    elif isinstance(action, RemoteFile | RemoteDirectory) and action.staged is not None:
        values = [action.staged]
    elif isinstance(action, AwsCall):
        values = [v for _, v in action.params]
    for value in values:
        if isinstance(value, OptionalArg):
            continue  # optional: the runner may leave it unset
        if isinstance(value, EnvSecret | StagedFile | RuntimeValue):
            refs.append(value)
    return refs


_PREAMBLE = r"""step() {
  printf '==> [%s %s] %s\n' "$1" "$2" "$3"
  AMIDSL_STEP="$1 action $2 ($3)"
}
fail() {
  printf 'amidsl: %s\n' "$*" >&2
  return 1
}
on_error() {
  local status=$?
  # Subshells inherit the trap (set -E); report once, from the main shell.
  if [ "$BASH_SUBSHELL" -eq 0 ]; then
    printf 'amidsl: FAILED in phase %s (exit %s)\n' "${AMIDSL_STEP:-?}" "$status" >&2
  fi
}
trap on_error ERR
"""

_JSON_HELPERS = r"""# Controller-side helpers: read fields of the aws CLI's JSON output.
json_field() {
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}
json_length() {
  python3 -c 'import json, sys; print(len(json.loads(sys.argv[1])[sys.argv[2]]))' "$1" "$2"
}
"""


def render_phase_function(phase: PhasePlan) -> list[str]:
    """One bash function carrying out a phase, controller-side actions in a marked section."""
    lines = [f"{phase_function_name(phase.name)}() {{"]
    if not phase.actions:
        lines.append("  :  # nothing to do")
    in_controller = False
    for index, action in enumerate(phase.actions, start=1):
        on_controller = isinstance(action, CONTROLLER_ACTIONS)
        if on_controller and not in_controller:
            lines += [
                "  # ---- CONTROLLER SIDE: AWS API calls, made from the machine driving the build",
                "  # ---- (amidsl build makes them with boto3; by hand, run them where the aws CLI",
                "  # ---- and your AWS credentials are, not on the node).",
            ]
        elif in_controller and not on_controller:
            lines.append("  # ---- end of controller side")
        in_controller = on_controller
        lines.append(f"  step {quote(phase.name)} {index} {quote(action.description)}")
        # Only the first line of a multi-line quoted value is indented; its text stays exact.
        lines += [f"  {line}" for line in render_action(action)]
    if in_controller:
        lines.append("  # ---- end of controller side")
    lines.append("}")
    return lines


def render_script(plan: Plan) -> str:
    """The whole plan as one bash script: header, run-time checks, a function per phase, main."""
    phases = [p.name for p in plan.phases]
    out = [
        "#!/usr/bin/env bash",
        f"# amidsl {__version__} build script: {_comment(plan_title(plan))}",
        "# Generated from the settings below; review it: this text is exactly what amidsl runs.",
        "# Node phases run as root on the node; the controller-side section of a phase calls the",
        "# AWS API (amidsl does that itself with boto3).",
        "#",
        f"# Usage: bash SCRIPT [PHASE ...]   (default: {' '.join(phases)})",
        "#",
        "# Settings:",
    ]
    out += [f"#   {key} = {_comment(value)}" for key, value in public_settings(plan.settings)]
    inputs = runtime_inputs(plan)
    if inputs:
        out += ["#", "# Supplied at run time through the environment (never written into this file):"]
        out += [f"#   {name}: {_comment(what)}" for name, what in inputs]
    out += ["", "set -Eeuo pipefail", ""]
    for name, what in inputs:
        message = f"set {name} to {what}"
        out.append(f': "${{{name}:?{_braced_safe(message)}}}"')
    if inputs:
        out.append("")
    out += _PREAMBLE.splitlines()
    if any(isinstance(a, CONTROLLER_ACTIONS) for p in plan.phases for a in p.actions):
        out += ["", *_JSON_HELPERS.splitlines()]
    for phase in plan.phases:
        out.append("")
        for warning in phase.warnings:
            out.append(f"# WARNING ({phase.name}): {_comment(warning)}")
        out += render_phase_function(phase)
    out += [
        "",
        "main() {",
        '  if [ "$#" -eq 0 ]; then',
        f"    set -- {' '.join(phases)}",
        "  fi",
        '  for phase in "$@"; do',
        '    case "$phase" in',
    ]
    out += [f"      {p}) {phase_function_name(p)} ;;" for p in phases]
    out += [
        f'      *) fail "unknown phase: $phase (phases: {" ".join(phases)})" ;;',
        "    esac",
        "  done",
        "}",
        "",
        'main "$@"',
        "",
    ]
    return "\n".join(out)


def _comment(value: str) -> str:
    """Text safe on one comment line: JSON-escaped when it holds line breaks or control chars."""
    text = str(value)
    if any(ord(c) < 32 or c in "\x7f\u2028\u2029\x85" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _braced_safe(text: str) -> str:
    # Inside "${VAR:?word}" the word undergoes expansion: keep it to plain characters.
    return re.sub(r"[^A-Za-z0-9 ._,()/-]", "", text)
