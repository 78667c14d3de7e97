"""Render a plan as one reviewable bash script: what is reviewed is exactly what runs.

Every value is shell-quoted; secrets appear only as environment references (checked at the top);
controller-side API calls are rendered as the equivalent `aws` CLI commands in a marked section. The
same plan always renders to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass

from amidsl import __version__
from amidsl.model.actions import (
    CONTROLLER_ACTIONS,
    Action,
    AwsCall,
    CheckResult,
    ControllerSecret,
    DeregisterByName,
    EnvSecret,
    MakeBundleKey,
    NodeProgram,
    OptionalArg,
    PhasePlan,
    PresignParts,
    RunnerValue,
    RuntimeValue,
    SignManifest,
    StagedFile,
    TagBundle,
    UpdateSettings,
    UploadManifest,
    UploadSnapshot,
    Value,
    WaitForImage,
)
from amidsl.model.plan import Plan
from amidsl.model.steps import (
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
    Step,
    StepVisitor,
    Word,
    created_marker,
    node_steps,
    references,
    walk_steps,
)
from amidsl.render.summary import plan_title, public_settings
from amidsl.strategies.native_ebs import blocks_program

_NAME_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class JsonWithValues:
    """A JSON parameter holding run-time values (an EBS mapping's SnapshotId): text and values in turn,
    shown as one shell word in which each value is its variable's reference."""

    pieces: tuple[str | RuntimeValue, ...]


# Stands for a run-time value inside json.dumps' text (never in real data: it is not valid UTF-8 text).
_VALUE_MARK = "\udc00amidsl-value-{}\udc00"


def json_with_values(value: object) -> JsonWithValues | None:
    """The JSON text of a parameter holding run-time values, with each value kept apart; else None."""
    found: list[RuntimeValue] = []

    def marked(item: object) -> object:
        if isinstance(item, RuntimeValue):
            found.append(item)
            return _VALUE_MARK.format(len(found) - 1)
        if isinstance(item, (tuple, list)):
            return [marked(v) for v in item]
        if isinstance(item, dict):
            return {k: marked(v) for k, v in item.items()}
        return item

    text = json.dumps(marked(value), sort_keys=True, ensure_ascii=False)
    if not found:
        return None
    pieces: list[str | RuntimeValue] = []
    for part in re.split(r"\udc00amidsl-value-(\d+)\udc00", text):
        pieces.append(found[int(part)] if part.isdigit() and len(pieces) % 2 else part)
    return JsonWithValues(tuple(pieces))


def quote(value: Value | JsonWithValues) -> str:
    """One shell word for a value: quoted text, or a reference to a run-time value."""
    if isinstance(value, str):
        return shlex.quote(value)
    if isinstance(value, JsonWithValues):
        return "".join(quote(piece) for piece in value.pieces if piece != "")
    if isinstance(value, EnvSecret):
        return f'"${{{value.env_var}}}"'
    if isinstance(value, RuntimeValue):
        return f'"${{{value.env_var}:?{value.setting} is set by the {value.produced_by} phase}}"'
    if isinstance(value, OptionalArg):
        var = value.value.env_var
        return f'${{{var}:+{shlex.quote(value.flag)} "${{{var}}}"}}'
    if isinstance(value, RunnerValue):
        return f'"${{{value.env_var}:-{value.default}}}"'
    raise TypeError(f"cannot render value of type {type(value).__name__}")


def _words(values: tuple[Value, ...] | list[Value]) -> str:
    return " ".join(quote(v) for v in values)


def render_word(word: Word) -> str:
    """One shell word of a command: a quoted value, a staged file's path, or a glob."""
    if isinstance(word, StagedFile):
        return f'"${{{word.env_var}}}"'
    if isinstance(word, Glob):
        return f"{quote(word.directory.rstrip('/') or '/')}/{word.pattern}"
    if isinstance(word, ShellVariable):
        return f'"${{{word.name}}}"'
    return quote(word)


def render_steps(steps: tuple[Step, ...] | list[Step]) -> list[str]:
    """Bash lines for node steps (commands, existence checks, package-manager branches)."""
    return [line for lines in walk_steps(steps, ShellSteps()) for line in lines]


class ShellSteps(StepVisitor[list[str]]):
    """The bash lines of each step type."""

    def command(self, step: Command) -> list[str]:
        """The command line."""
        return [_command(step)]

    def if_missing(self, step: IfMissing) -> list[str]:
        """`if [ ! -e PATH ]` (or `-d`) around the indented steps."""
        test = "-d" if step.kind == "d" else "-e"
        return [f"if [ ! {test} {quote(step.path)} ]; then", *_indented(step.then), "fi"]

    def if_present(self, step: IfPresent) -> list[str]:
        """`if [ -d PATH ]` around the indented steps."""
        return [f"if [ -d {quote(step.path)} ]; then", *_indented(step.then), "fi"]

    def check(self, step: Check) -> list[str]:
        """The check's test, failing with its message."""
        return [f"{_check_test(step)} || fail {quote(step.message)}"]

    def by_package_manager(self, step: ByPackageManager) -> list[str]:
        """An if/elif chain on `command -v`, failing with `otherwise`."""
        lines: list[str] = []
        for number, (program, branch) in enumerate(step.branches):
            keyword = "if" if number == 0 else "elif"
            lines.append(f"{keyword} command -v {quote(program)} >/dev/null 2>&1; then")
            lines += _indented(branch)
        return [*lines, "else", f"  fail {quote(step.otherwise)}", "fi"]

    def if_succeeds(self, step: IfSucceeds) -> list[str]:
        """An if/elif/else chain on the test commands."""
        return _if_succeeds(step)

    def collect_existing(self, step: CollectExisting) -> list[str]:
        """A loop setting the variable to the paths that exist."""
        return _collect_existing(step)

    def collect_matching(self, step: CollectMatching) -> list[str]:
        """A `find` whose paths are added to the variable, one by one."""
        return _collect_matching(step)

    def fail(self, step: Fail) -> list[str]:
        """`fail MESSAGE`."""
        return [f"fail {quote(step.message)}"]


def _indented(steps: tuple[Step, ...]) -> list[str]:
    return [f"  {line}" for line in render_steps(steps)]


def _if_succeeds(step: IfSucceeds, keyword: str = "if") -> list[str]:
    tests = " && ".join(f"{_command(test)} >/dev/null 2>&1" for test in step.tests)
    lines = [f"{keyword} {tests}; then", *_indented(step.then)]
    otherwise = step.otherwise
    if len(otherwise) == 1 and isinstance(otherwise[0], IfSucceeds):
        return lines + _if_succeeds(otherwise[0], "elif")
    if otherwise:
        lines += ["else", *_indented(otherwise)]
    return [*lines, "fi"]


def _collect_existing(step: CollectExisting) -> list[str]:
    var, separator = step.variable, quote(step.separator)
    if not step.paths:
        return [f"{var}=''"]
    return [
        f"{var}=''",
        f"for amidsl_path in {' '.join(quote(p) for p in step.paths)}; do",
        '  if [ -e "$amidsl_path" ]; then',
        f'    {var}="${{{var}:+${{{var}}}{separator}}}$amidsl_path"',
        "  else",
        "    printf 'amidsl: leaving out %s: it does not exist on this node\\n' \"$amidsl_path\"",
        "  fi",
        "done",
    ]


def _collect_matching(step: CollectMatching) -> list[str]:
    var, separator, m = step.variable, quote(step.separator), step.matching
    other_types = " ".join(f"! -fstype {quote(t)}" for t in m.fs_types)
    patterns = " -o ".join(f"-path {quote(p)}" for p in m.patterns)
    # NUL-separated and sorted, so any name is read whole and the value is the same on every run.
    find = (
        f"find {quote(m.root)} \\( {other_types} \\) -prune -o \\( {patterns} \\) -print0 -prune"
        " | LC_ALL=C sort -z"
    )
    split = quote(f" ({m.why}): its name holds {step.separator!r} or a new line, which would split the list")
    say = f"  printf 'amidsl: %s %s (%s)\\n' {quote(m.saying)} \"$amidsl_path\" {quote(m.why)}"
    count = f"printf 'amidsl: %s %s paths (%s)\\n' {quote(m.saying)} \"$amidsl_count\" {quote(m.why)}"
    search = [
        *([] if m.say_each else ["amidsl_count=0"]),
        "while IFS= read -r -d '' amidsl_path; do",
        '  case "$amidsl_path" in',
        f"    *{separator}*|*$'\\n'*) fail \"cannot pass on $amidsl_path\"{split} ;;",
        "  esac",
        say if m.say_each else "  amidsl_count=$((amidsl_count + 1))",
        f'  {var}="${{{var}:+${{{var}}}{separator}}}$amidsl_path"',
        f"done < <({find})",
        *([] if m.say_each else [count]),
    ]
    start = f'{var}="${{{var}-}}"'
    if not m.when_any:
        return [start, *search]
    test = " || ".join(f"[ -e {quote(p)} ]" for p in m.when_any)
    otherwise = f"printf 'amidsl: %s\\n' {quote(m.otherwise)}"
    return [start, f"if {test}; then", *(f"  {line}" for line in search), "else", f"  {otherwise}", "fi"]


def _check_test(check: Check) -> str:
    path = quote(check.path)
    if check.kind == "absent":
        return f"{{ [ ! -e {path} ] && [ ! -L {path} ]; }}"
    if check.kind == "empty":
        return f'[ -z "$(ls -A -- {path} 2>/dev/null)" ]'
    # Recorded: amidsl created it, or nothing is there (a phase that failed before creating it).
    return f"{{ {{ [ ! -e {path} ] && [ ! -L {path} ]; }} || [ -d {quote(created_marker(check.path))} ]; }}"


def _command(command: Command) -> str:
    env = [f"{name}={quote(value)}" for name, value in command.env]
    if command.user != "root":
        env = ["runuser", "-u", quote(command.user), "--", "env", *env]
    words = [render_word(w) for w in command.argv]
    options = sum(1 for w in words[1:] if w.startswith("-") and w != "--")
    if len(" ".join(env + words)) > 100 and options >= 4:
        # A long command with many options reads better one option (with its value) per line.
        parts = env + _option_groups(words)
        text = " \\\n    ".join(parts)
    else:
        text = " ".join(env + words)
    if command.stdout is not None:
        text += f" > {quote(command.stdout)}"
    if command.stdin is not None:
        text += _here_document(command.stdin)
    if command.cwd is not None:
        text = f"cd -- {quote(command.cwd)} && {text}"
    if command.umask is not None:
        text = f"umask {quote(command.umask)} && {text}"
    if command.cwd is not None or command.umask is not None:
        text = f"({text})"  # a subshell: the directory and umask are this command's alone
    return text


HEREDOC_END = "AMIDSL_END_OF_FILE"


def _here_document(text: str) -> str:
    """A quoted here-document: bash expands nothing in it, so the text is exactly what reaches stdin."""
    if not text.endswith("\n") or HEREDOC_END in text.splitlines():
        raise ValueError("here-document text must end with a line break and not hold its end marker")
    return f" <<'{HEREDOC_END}'\n{text}{HEREDOC_END}"


_HERE_DOCUMENT = re.compile(f"<<'{HEREDOC_END}'\n(?P<text>.*)^{HEREDOC_END}$", re.DOTALL | re.MULTILINE)


def shown_command(command: str) -> str:
    """A command as progress and logs show it: a here-document's text as its size and SHA-256 (the
    node program is thousands of lines; the script, which is what runs, carries the text)."""

    def summary(found: re.Match[str]) -> str:
        data = found["text"].encode("utf-8")
        return (
            f"<<'{HEREDOC_END}' ({found['text'].count(chr(10))} lines, {len(data)} bytes, SHA-256 "
            f"{hashlib.sha256(data).hexdigest()}; `amidsl script` shows the text)"
        )

    return _HERE_DOCUMENT.sub(summary, command)


def _option_groups(words: list[str]) -> list[str]:
    groups: list[str] = [words[0]] if words else []
    for word in words[1:]:
        if word.startswith("-") or word.startswith("${") or len(groups) == 1:
            groups.append(word)
        else:
            groups[-1] += f" {word}"
    return groups


def render_action(action: Action) -> list[str]:
    """The bash lines that carry out one action (also shown in the plan preview)."""
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
    if isinstance(action, NodeProgram):
        return _node_program(action)
    if isinstance(action, WaitForImage):
        return _wait_for_image(action)
    if isinstance(action, (MakeBundleKey, SignManifest, PresignParts, UploadManifest, TagBundle)):
        return [*_controller_comment(action), f"controller_only {quote(action.description)}"]
    if isinstance(action, UploadSnapshot):
        return _upload_snapshot(action)
    if isinstance(action, DeregisterByName):
        return _deregister_by_name(action)
    return render_steps(node_steps(action))


def _wait_for_image(action: WaitForImage) -> list[str]:
    """The aws CLI's waiter; amidsl itself polls with its own timeout and reports EC2's state reason."""
    return [
        f"# amidsl polls the image's state for up to {action.timeout_seconds} s (image_wait_seconds), "
        "printing it as it goes;",
        "# a failed image stops the build with EC2's state reason.",
        _words(wait_cli_words(action)),
    ]


def wait_cli_words(action: WaitForImage) -> list[Value]:
    """The aws CLI command that waits for the image (by hand; its own timeout is ten minutes)."""
    return [
        "aws",
        "ec2",
        "wait",
        "image-available",
        "--region",
        action.region,
        "--image-ids",
        action.image_id,
    ]


def _deregister_by_name(action: DeregisterByName) -> list[str]:
    """What force_deregister will remove, listed by the aws CLI; the removal is amidsl's own step."""
    lines = [
        f"# force_deregister: every image of this account named {_comment(action.image_name)} in the regions",
        "# below is deregistered, and its EBS snapshots in its region unless another image uses them;",
        f"# in {action.bundle_region} an S3-backed image's bundle is deleted too (the manifest and exactly",
        "# the parts it lists) unless it is this build's own location.",
        *[f"# The snapshot {s} stays: this build registers it." for s in action.keep_snapshots],
        "# What would go:",
    ]
    for region in action.regions:
        query = "Images[].[ImageId,Name,ImageLocation]"
        words: list[Value] = ["aws", "ec2", "describe-images", "--region", region, "--owners", "self"]
        words += ["--filters", f"Name=name,Values={action.image_name}", "--query", query, "--output", "text"]
        lines.append(_words(words))
    return [*lines, f"controller_only {quote(action.description)}"]


def node_program_argv(action: NodeProgram) -> tuple[str, ...]:
    """The node program's command line: no request data on it (that arrives on stdin)."""
    return ("python3", "-I", action.program, action.command)


def node_program_request_text(action: NodeProgram) -> str:
    """The request as a reviewer sees it: JSON, with each run-time secret shown as <what it is>."""
    shown = {
        key: f"<{value.what}>" if isinstance(value, ControllerSecret) else value
        for key, value in action.request
    }
    return json.dumps(shown, ensure_ascii=False)


def _node_program(action: NodeProgram) -> list[str]:
    """amidsl runs exactly this command over SSH and writes the request to its standard input."""
    lines = ["# standard input: this JSON request, sent by amidsl (<...> made at run time, never stored):"]
    lines.append(f"#   {_comment(node_program_request_text(action))}")
    if action.refresh_expired:
        lines.append("# (exit status 3: some URLs expired; amidsl presigns those parts again and re-runs)")
    return [*lines, _words(list(node_program_argv(action)))]


def _upload_snapshot(action: UploadSnapshot) -> list[str]:
    """The node command whose output amidsl uploads; the upload itself runs only on the controller."""
    tags = ", ".join(f"{tag['Key']}={tag['Value']}" for tag in action.tags)
    argv = _words(list(node_program_argv(blocks_program(action, ""))))
    return [
        '# amidsl runs this on the node, its standard input {"disk": <the disk ami-bundle kept>}:',
        f"#   {argv}",
        "# and reads the disk's blocks that hold data from its standard output (an 8-byte index,",
        "# then 512 KiB each). From here it uploads them into a new EBS snapshot in",
        f"# {action.region}: StartSnapshot ({_comment(_encryption_words(action))}tags: {_comment(tags)}), "
        "PutSnapshotBlock for each",
        f"# block ({action.concurrency} at a time, each with its SHA-256), CompleteSnapshot with the block",
        "# count and the LINEAR checksum the node's report gave; then it waits until the snapshot is",
        "# completed. No AWS credential or URL reaches the node.",
        f"{_result_var(action.result_name)}=$(controller_only {quote(action.description)})",
    ]


def _encryption_words(action: UploadSnapshot) -> str:
    params = dict(action.encryption)
    if not params.get("Encrypted"):
        return ""
    key = params.get("KmsKeyArn") or "the account's default EBS key"
    return f"encrypted with the KMS key {key}; "


def _controller_comment(action: Action) -> list[str]:
    if isinstance(action, MakeBundleKey):
        return ["# amidsl makes 16 random bytes each for the AES key and IV, in memory only."]
    if isinstance(action, SignManifest):
        return [
            "# amidsl builds <prefix>.manifest.xml from the node's bundle report, encrypts key and IV for",
            "# your certificate and EC2's, and signs it with your private key (which stays here).",
        ]
    if isinstance(action, PresignParts):
        return [
            f"# amidsl presigns a PUT URL per part for s3://{action.bucket}/{action.key_prefix} with",
            "# x-amz-acl: aws-exec-read, skipping parts whose S3 ETag already is the part's MD5.",
        ]
    if isinstance(action, TagBundle):
        tags = ", ".join(f"{key}={value}" for key, value in action.tags)
        return [
            f"# amidsl reads s3://{action.bucket}/{action.manifest_key} and puts these tags on it and on",
            f"# exactly the parts it lists (PutObjectTagging): {_comment(tags)}",
        ]
    assert isinstance(action, UploadManifest)
    return [f"# amidsl uploads the signed manifest to s3://{action.bucket}/{action.key} (aws-exec-read)."]


def aws_cli_words(action: AwsCall) -> list[Value]:
    """The `aws` CLI command equivalent to an API call (operation and params in CLI spelling)."""
    words: list[Value] = ["aws", action.service, _kebab(action.operation), "--region", action.region]
    for key, value in action.params:
        if isinstance(value, bool):  # the CLI's boolean parameters are flags: --ena-support, --no-...
            words.append(f"--{'' if value else 'no-'}{_kebab(key)}")
            continue
        words.append(f"--{_kebab(key)}")
        if isinstance(value, (str, RuntimeValue)):
            words.append(value)
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (str, RuntimeValue)) for v in value):
            words += list(value)  # the CLI takes a list of plain values as separate words
        else:
            words.append(json_with_values(value) or json.dumps(value, sort_keys=True, ensure_ascii=False))
    words += ["--output", "json"]
    return words


def _aws_call(action: AwsCall) -> list[str]:
    if not action.result_name:  # nothing reads the result: the CLI just prints it
        return [_words(aws_cli_words(action))]
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


def phase_inputs(plan: Plan) -> dict[str, list[tuple[str, str]]]:
    """Per phase, the environment variables it needs from the runner: (name, what for), in order.

    A run-time value that an earlier phase of the plan produces (the image id) is not an input.
    """
    inputs: dict[str, list[tuple[str, str]]] = {}
    produced: set[str] = set()
    for phase in plan.phases:
        needed: dict[str, str] = {}
        for action in phase.actions:
            if isinstance(action, UpdateSettings):
                produced.update(f"AMIDSL_{setting.upper()}" for setting, _ in action.fields)
            for ref in references(action).required:
                if isinstance(ref, EnvSecret):
                    needed.setdefault(ref.env_var, f"{ref.what} ({phase.name})")
                elif isinstance(ref, StagedFile):
                    source = f" (copy of {ref.local_path})" if ref.local_path else ""
                    needed.setdefault(ref.env_var, f"path on the node of {ref.what}{source}")
                elif isinstance(ref, RuntimeValue) and ref.env_var not in produced:
                    needed.setdefault(ref.env_var, f"{ref.setting} from the {ref.produced_by} phase")
        inputs[phase.name] = list(needed.items())
    return inputs


def runtime_overrides(plan: Plan) -> list[tuple[str, str]]:
    """The plain values a runner may set at run time: (name, what it is and the default used)."""
    found: dict[str, str] = {}
    for phase in plan.phases:
        for action in phase.actions:
            for value in references(action).overrides:
                found.setdefault(value.env_var, f"{value.what}; default {value.default}")
    return list(found.items())


def runtime_inputs(plan: Plan) -> list[tuple[str, str]]:
    """Every environment variable the script may need from its runner: (name, what for), in order."""
    merged: dict[str, str] = {}
    for needed in phase_inputs(plan).values():
        for name, what in needed:
            merged.setdefault(name, what)
    return list(merged.items())


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
  # Subshells inherit the trap (set -E): report once, from the main shell, and only for an action.
  if [ "$BASH_SUBSHELL" -eq 0 ] && [ -n "${AMIDSL_STEP:-}" ]; then
    printf 'amidsl: FAILED in phase %s (exit %s)\n' "${AMIDSL_STEP:-?}" "$status" >&2
  fi
}
trap on_error ERR
"""

_JSON_HELPERS = r"""# Controller-side helpers: read fields of the aws CLI's JSON output.
controller_only() {
  fail "this step runs inside amidsl on the controller ($1): run the build with amidsl"
}
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
    for index, action in phase.numbered():
        on_controller = isinstance(action, CONTROLLER_ACTIONS)
        if on_controller and not in_controller:
            lines += [
                "  # ---- CONTROLLER SIDE: done on the machine driving the build, not on the node",
                "  # ---- (amidsl makes AWS calls with boto3; by hand, run `aws` commands where the aws",
                "  # ---- CLI and your AWS credentials are; `controller_only` steps need amidsl itself).",
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
    overrides = runtime_overrides(plan)
    if overrides:
        out += ["#", "# May be set at run time through the environment (else the default):"]
        out += [f"#   {name}: {_comment(what)}" for name, what in overrides]
    out += ["", "set -Eeuo pipefail", ""]
    if inputs:
        out += _input_checks(plan)
    out += _PREAMBLE.splitlines()
    if any(isinstance(a, CONTROLLER_ACTIONS) for p in plan.phases for a in p.actions):
        out += ["", *_JSON_HELPERS.splitlines()]
    for phase in plan.phases:
        out.append("")
        out += [f"# note ({phase.name}): {_comment(note)}" for note in phase.notes]
        out += [f"# WARNING ({phase.name}): {_comment(warning)}" for warning in phase.warnings]
        out += render_phase_function(phase)
    known = "|".join(phases)
    out += [
        "",
        "main() {",
        '  if [ "$#" -eq 0 ]; then',
        f"    set -- {' '.join(phases)}",
        "  fi",
        "  local phase",
        "  # Every phase name is checked before anything runs.",
        '  for phase in "$@"; do',
        '    case "$phase" in',
        f"      {known}) ;;",
        f'      *) fail "unknown phase: $phase (phases: {" ".join(phases)})" ;;',
        "    esac",
        "  done",
    ]
    if inputs:
        out.append('  check_inputs "$@"')
    out += ['  for phase in "$@"; do', '    case "$phase" in']
    out += [f"      {p}) {phase_function_name(p)} ;;" for p in phases]
    out += [
        "    esac",
        "  done",
        "}",
        "",
        'main "$@"',
        "",
    ]
    return "\n".join(out)


def _input_checks(plan: Plan) -> list[str]:
    """A function, run before any phase, checking the inputs of the phases chosen to run."""
    lines = [
        "# The run-time inputs of the chosen phases are checked before any phase runs.",
        "check_inputs() {",
        "  local phase",
        '  for phase in "$@"; do',
        '    case "$phase" in',
    ]
    for phase, needed in phase_inputs(plan).items():
        if needed:
            lines.append(f"      {phase})")
            for name, what in needed:
                lines.append(f'        : "${{{name}:?{_braced_safe(f"set {name} to {what}")}}}"')
            lines.append("        ;;")
    return [*lines, "    esac", "  done", "}", ""]


def _comment(value: str) -> str:
    """Text safe on one comment line: JSON-escaped when it holds line breaks or control chars."""
    text = str(value)
    if any(ord(c) < 32 or c in "\x7f\u2028\u2029\x85" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _braced_safe(text: str) -> str:
    # Inside "${VAR:?word}" the word undergoes expansion: keep it to plain characters.
    return re.sub(r"[^A-Za-z0-9 ._,()/-]", "", text)
