"""The live back-end: each node phase runs over SSH as exactly the script `amidsl script` renders for it.

Per phase: render the phase's script, make a private temporary directory on the node (mktemp -d, 0700),
upload the script and any staged files (the private key, a local tools zip) there over SFTP with mode
0600, then run a fixed wrapper command that reads the secrets the script needs as NUL-separated
`NAME=value` pairs from standard input, exports them and execs `bash SCRIPT` (under `sudo -n` when the
login user is not root). No secret is ever on a command line or in a file other than its destination;
the temporary directory is removed afterwards. Output streams line by line; the script's step markers
(`==> [phase N] ...`) and its failure line say which action was running.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.config import Config

from amidsl.live.aws import Aws, AwsCredentials, AwsError
from amidsl.live.ssh import (
    LOST_STATUS,
    STOP_POLL_SECONDS,
    STOP_SECONDS,
    CommandInterrupted,
    ConnectionLost,
    NodeConnectionError,
    SshNode,
)
from amidsl.model.actions import (
    Action,
    AwsCall,
    NodeProgram,
    PhasePlan,
    StagedFile,
)
from amidsl.model.plan import Plan
from amidsl.model.steps import References, references_of
from amidsl.render.shell import node_program_argv, render_action, render_script, runtime_inputs
from amidsl.run.block_stream import BlockStream
from amidsl.run.progress import Progress, Transfer
from amidsl.run.runner import ActionFailed, ActionInterrupted, ActionRecord
from amidsl.secrets import Secret, redact
from amidsl.strategies.ami_tools import (
    ACCESS_KEY,
    PRIVATE_KEY_FILE,
    S3_URL_VARIABLE,
    SECRET_KEY,
    SESSION_TOKEN,
)
from amidsl.strategies.ec2_certificate import ec2_certificate
from amidsl.strategies.native_controller import report_lines

# Reads NAME=value pairs (NUL-terminated, an empty one ends the list) from stdin, exports them, then runs
# the script with stdin closed. Fixed text: only it and the script's path are ever on the command line.
ENV_WRAPPER = (
    'while IFS= read -r -d "" pair && [ -n "$pair" ]; do export "$pair"; done; exec bash "$0" </dev/null'
)
_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
STEP_MARKER = re.compile(r"^==> \[(?P<phase>\S+) (?P<index>\d+)\] (?P<description>.*)$")
FAILED_LINE = re.compile(
    r"^amidsl: FAILED in phase (?P<phase>\S+) action (?P<index>\d+) \(.*\) \(exit (?P<status>\d+)\)$"
)
WORKDIR = re.compile(r"/[A-Za-z0-9_./-]*/amidsl\.[A-Za-z0-9]+")
# The node program's first line, and its last when it was stopped (see amidsl/node/amidsl_node.py).
PROGRAM_PID = re.compile(r"amidsl-node: \w+ runs as pid (?P<pid>\d+)")
PROGRAM_STOPPED = re.compile(r"amidsl-node: (?:interrupted|terminated); (?P<what>.*)")
SUDO_REFUSED = ("a password is required", "a terminal is required", "is not in the sudoers file")


def wrapper_command(script_path: str, use_sudo: bool) -> str:
    """The remote command line for a phase: the fixed wrapper, the script path, nothing else."""
    command = f"bash -c {shlex.quote(ENV_WRAPPER)} {shlex.quote(script_path)}"
    return f"sudo -n -- {command}" if use_sudo else command


def env_payload(pairs: Sequence[tuple[str, str]]) -> bytes:
    """The wrapper's standard input: NAME=value pairs, each NUL-terminated, then an empty one."""
    out = b""
    for name, value in pairs:
        if not _NAME.fullmatch(name) or "\0" in value:
            raise ValueError(f"cannot pass {name!r} to the node")
        out += f"{name}={value}".encode() + b"\0"
    return out + b"\0"


class PhaseSetupError(Exception):
    """A phase cannot start: something its script needs is missing (no secret in the message)."""


@dataclass
class LiveBackend:
    """Runs a plan's node phases on one node over SSH and its AWS calls with boto3 (runner.NodeBackend)."""

    plan: Plan
    node: SshNode
    aws: Aws
    progress: Callable[[str], None] = lambda line: None
    _credentials: AwsCredentials | None = None
    _no_credentials: AwsError | None = None
    _ec2_certificate: str | None = None
    _presigner: Any = None
    _leftover_dirs: list[str] = field(default_factory=list)
    _cut_off: list[tuple[NodeProgram, int]] = field(default_factory=list)  # node programs a drop cut off
    _lines: list[tuple[int, str]] = field(default_factory=list)  # (script action number, line)

    # -- runner.NodeBackend --------------------------------------------------------------------

    def secrets(self) -> list[str]:
        """Every secret in play (signing key, AWS keys and token), for redaction. The access key id is
        one too: S3's error bodies and a tool's debug output name it, and it is shown nowhere."""
        settings = self.plan.settings
        found: list[Secret | str | None] = [
            settings.private_key_pem,
            settings.access_key,
            settings.secret_key,
            settings.session_token,
        ]
        try:
            credentials = self.credentials()
            found += [credentials.access_key, credentials.secret_key, credentials.session_token]
        except AwsError:
            pass  # no credentials yet: a phase that needs them fails with that message
        return [s.reveal() if isinstance(s, Secret) else s for s in found if s]

    def call_aws(self, action: AwsCall, params: dict[str, Any]) -> dict[str, Any]:
        """Make the API call with boto3."""
        return self.aws.call_action(action, params)

    def pause(self, seconds: float) -> None:
        """Wait between two polls of an image's state."""
        time.sleep(seconds)

    def client(self, service: str, region: str) -> Any:
        """The build session's boto3 client in `region`."""
        return self.aws.client(service, region)

    def s3_client(self) -> Any:
        """The build's boto3 S3 client."""
        return self.aws.client("s3")

    def presign_client(self) -> Any:
        """An S3 client of the build's session that presigns with SigV4 (what every region accepts)."""
        if self._presigner is None:
            style = "path" if self.aws.live.endpoint_url else "auto"
            self._presigner = self.aws.session.client(
                "s3",
                region_name=self.plan.settings.region,
                endpoint_url=self.aws.live.endpoint_url,
                config=Config(signature_version="s3v4", s3={"addressing_style": style}),
            )
        return self._presigner

    def ec2_certificate(self) -> str:
        """EC2's certificate for the build's region, fetched and pinned once per build."""
        if self._ec2_certificate is None:
            self._ec2_certificate = ec2_certificate(self.plan.settings)
        return self._ec2_certificate

    def stream_node_program(self, action: NodeProgram, request: bytes) -> BlockStream:
        """Run the node program's `blocks` command line as the script shows it; read its block frames.

        The request travels inside the SSH channel; the blocks come back in it, never through a file.
        """
        command = " ".join(shlex.quote(word) for word in node_program_argv(action))
        if not self.node.is_root:
            command = f"sudo -n -- {command}"
        read, finish, stop = self.node.stream(command, stdin=request)

        def finished() -> tuple[int, str]:
            status, said = finish()
            for line in said.splitlines():
                self.progress(f"    {line}")
            return status, said

        return BlockStream(read, finished, stop)

    def run_node_program(self, action: NodeProgram, request: bytes) -> tuple[int, str, str]:
        """Run exactly the node-program command line the script shows, the request on its stdin.

        The request (key and IV, presigned URLs) travels inside the SSH channel: never on a command line,
        in the environment or in a file on the node. Output is the program's stderr and stdout, merged.
        """
        command = " ".join(shlex.quote(word) for word in node_program_argv(action))
        if not self.node.is_root:
            command = f"sudo -n -- {command}"
        pid: list[int] = []  # the program says its pid first
        transfers = ProgramTransfers(self.progress, request)

        def on_line(line: str) -> None:
            found = PROGRAM_PID.fullmatch(line)
            if found and not pid:
                pid.append(int(found["pid"]))
            report = _json_object(line)
            if report is not None:  # its result: said in sentences (the transcript keeps the JSON)
                transfers.finish()
                for sentence in report_lines(action.command, report):
                    self.progress(f"    {sentence}")
            elif not transfers.shown(line):
                self.progress(f"    {line}")

        def stop() -> bool:
            """Ctrl-C: interrupt the program on the node, once its pid is known."""
            return bool(pid) and self._signal_program(action, pid[0], "INT")

        try:
            status, output = self.node.run(command, stdin=request, on_line=on_line, stop=stop)
        except CommandInterrupted as interrupted:
            raise ActionInterrupted(None, self._stopped_note(action, pid, interrupted)) from None
        except NodeConnectionError as err:
            if pid:
                # Without its connection it may run on (a quiet mke2fs): stopped after a reconnect.
                self._cut_off.append((action, pid[0]))
            return LOST_STATUS, "", str(err)
        finally:
            transfers.finish()
        return status, output, output

    def _stop_cut_off_programs(self) -> None:
        """After a reconnect: stop the node programs a dropped connection cut off, so that they remove
        their temporary files (SIGINT, then SIGKILL after STOP_SECONDS)."""
        while self._cut_off:
            action, pid = self._cut_off.pop()
            try:
                self._signal_program(action, pid, "INT")
                deadline = time.monotonic() + STOP_SECONDS
                while self._run_as_root(_runs_program(action, pid)) == 0:
                    if time.monotonic() > deadline:
                        self._signal_program(action, pid, "KILL")
                        break
                    time.sleep(STOP_POLL_SECONDS)
            except NodeConnectionError:
                return  # gone again: its files, if it dies, go with the next bundle or cleanup

    def _signal_program(self, action: NodeProgram, pid: int, signal: str) -> bool:
        """Send the node program a signal; the pid must still be that program (never another's).

        SIGKILL goes to its children (mke2fs) too, which the killed program could not stop; it is
        frozen first, so that it neither sees them end nor starts another.
        """
        kill = f"kill -{signal} {pid}"
        if signal == "KILL":
            kill = f"{{ kill -STOP {pid}; pkill -KILL -P {pid}; {kill}; }}"
        try:
            self._run_as_root(f"{_runs_program(action, pid)} && {kill}")
        except NodeConnectionError:
            return False
        return True

    def _run_as_root(self, shell: str) -> int:
        """Run a fixed shell command on the node as root; return its exit status."""
        command = f"sh -c {shlex.quote(shell)}"
        return self.node.run(command if self.node.is_root else f"sudo -n -- {command}")[0]

    def _stopped_note(self, action: NodeProgram, pid: list[int], interrupted: CommandInterrupted) -> str:
        """What Ctrl-C did to the node program, and what it left on the node."""
        said = [m["what"] for m in map(PROGRAM_STOPPED.fullmatch, interrupted.output.splitlines()) if m]
        if interrupted.status is not None and said:
            which = f" (pid {pid[0]})" if pid else ""
            return f"The node program was stopped on the node{which}; it {said[-1]}."
        if interrupted.status is not None:
            return (
                f"The node program had ended (exit status {interrupted.status}) before it could be stopped."
            )
        destination = dict(action.request).get("destination_dir", "destination_dir")
        if not pid:
            return (
                f"The node program may still run on the node (it had not said its pid): look for "
                f"`python3 -I {action.program} {action.command}` there and stop it with kill -INT."
            )
        self._signal_program(action, pid[0], "KILL")
        return (
            f"The node program did not stop within {STOP_SECONDS:.0f} s and was killed (pid {pid[0]}); its "
            f"temporary files may remain in {destination} (names with .{pid[0]} in them): the next "
            "bundle, or the cleanup phase, removes them."
        )

    def run_node_actions(
        self, phase: str, actions: Sequence[tuple[int, Action]], values: dict[str, str]
    ) -> list[ActionRecord]:
        """Run the phase's node actions as the rendered script; raise ActionFailed on the first failure."""
        phase_plan = self._phase_plan(phase, actions)
        script_plan = Plan(self.plan.spec_name, self.plan.settings, (phase_plan,))
        script = render_script(script_plan)
        numbers = [index for index, _ in actions]
        if phase == "on-error":
            self._reconnect_if_lost()
        try:
            workdir = self._make_workdir()
        except NodeConnectionError as err:
            raise ActionFailed(numbers[0], LOST_STATUS, str(err)) from None
        self._leftover_dirs.append(workdir)
        self._lines = []
        try:
            pairs = self._stage(workdir, phase_plan.actions, values)
            _check_supplied(script_plan, pairs)
            script_path = f"{workdir}/{_file_name(phase)}.sh"
            self.node.upload(script_path, script.encode("utf-8"))
            status = self._run_script(phase, script_path, pairs)
        except ConnectionLost as err:
            raise ActionFailed(
                self._running(numbers), LOST_STATUS, f"{err}\n{self._left_behind(workdir, phase_plan)}"
            ) from None
        except KeyboardInterrupt:
            self._remove_workdir(workdir)
            raise ActionInterrupted(self._running(numbers)) from None
        except PhaseSetupError as err:
            self._remove_workdir(workdir)
            raise ActionFailed(numbers[0], 1, str(err)) from None
        except BaseException:
            self._remove_workdir(workdir)
            raise
        self._remove_workdir(workdir)
        return self._records(phase, actions, status, self._lines)

    # -- a phase, step by step ------------------------------------------------------------------

    def _running(self, numbers: list[int]) -> int:
        """The plan number of the action the script was running (by its last step marker)."""
        running = max((i for i, _ in self._lines), default=0)
        return max((n for n in numbers if n <= running), default=numbers[0])

    def credentials(self) -> AwsCredentials:
        """The AWS credentials for the node's tools, resolved once per build."""
        if self._credentials is None:
            if self._no_credentials is not None:
                raise self._no_credentials  # looked once (the chain may probe the network): don't again
            try:
                self._credentials = self.aws.credentials()
            except AwsError as err:
                self._no_credentials = err
                raise
        return self._credentials

    def _make_workdir(self) -> str:
        """A private (0700) temporary directory on the node for the phase's script and staged files."""
        output = self.node.check("mktemp -d -t amidsl.XXXXXXXXXX")
        # A login shell may print a banner first: the path is the last line.
        workdir = output.splitlines()[-1].strip() if output else ""
        if not WORKDIR.fullmatch(workdir):
            raise NodeConnectionError(f"mktemp on the node gave {workdir!r}, not a temporary directory path")
        return workdir

    def _phase_plan(self, phase: str, actions: Sequence[tuple[int, Action]]) -> PhasePlan:
        """The phase as the plan has it when these are all its actions (so the script is identical to
        `amidsl script --phase P`), else just these actions."""
        chosen = tuple(action for _, action in actions)
        for planned in self.plan.phases:
            if planned.name == phase and planned.actions == chosen:
                return planned
        # Numbered as in the plan, so that what the script shows and reports names the plan's actions.
        return PhasePlan(phase, chosen, numbers=tuple(index for index, _ in actions))

    def _stage(
        self, workdir: str, actions: Sequence[Action], values: dict[str, str]
    ) -> list[tuple[str, str]]:
        """Upload the phase's staged files; return the environment pairs the script needs."""
        needs = references_of(actions)
        pairs: list[tuple[str, str]] = []
        for staged in needs.files:
            remote = f"{workdir}/{staged.env_var.lower()}"
            self.node.upload(remote, self._staged_content(staged), mode=0o600)
            pairs.append((staged.env_var, remote))
        if needs.secrets or needs.optional:
            pairs += self._secret_pairs(needs)
        for value in needs.values:
            if value.setting in values:
                pairs.append((value.env_var, values[value.setting]))
        for override in needs.overrides:
            if override.env_var == S3_URL_VARIABLE and self.aws.live.endpoint_url:
                pairs.append((override.env_var, self.aws.live.endpoint_url))
        return pairs

    def _staged_content(self, staged: StagedFile) -> bytes:
        if staged.env_var == PRIVATE_KEY_FILE:
            # The validated key text from the settings (from its file or inline content).
            return self.plan.settings.private_key_pem.reveal().encode("ascii")
        if staged.local_path is None:
            raise PhaseSetupError(f"no local file for {staged.what}")
        return Path(staged.local_path).read_bytes()

    def _secret_pairs(self, needs: References) -> list[tuple[str, str]]:
        try:
            credentials = self.credentials()
        except AwsError as err:
            raise PhaseSetupError(str(err)) from None
        if credentials.session_token is not None and ACCESS_KEY in needs.secrets:
            # ec2-upload-bundle drops the token under SigV4: S3 would refuse every part.
            raise PhaseSetupError(
                "the AWS credentials amidsl found are temporary (they carry a session token), which "
                "ec2-upload-bundle cannot use: it drops the token under SigV4. Fix: use long-term keys, "
                'bundler = "native", or upload_credentials = "instance-profile"'
            )
        known = {
            ACCESS_KEY.env_var: credentials.access_key,
            SECRET_KEY.env_var: credentials.secret_key.reveal(),
            SESSION_TOKEN.env_var: credentials.session_token.reveal() if credentials.session_token else None,
        }
        pairs = []
        for secret in needs.secrets + needs.optional:
            value = known.get(secret.env_var)
            if value is None and secret in needs.secrets:
                raise PhaseSetupError(f"amidsl has no value for {secret.env_var} ({secret.what})")
            if value is not None:
                pairs.append((secret.env_var, value))
        return pairs

    def _show_commands(self, phase: str, index: int) -> None:
        """With --verbose, the commands of the action that just started (as the script runs them)."""
        if not isinstance(self.progress, Progress) or not self.progress.verbose:
            return
        actions = next((p.actions for p in self.plan.phases if p.name == phase), ())
        if 1 <= index <= len(actions):
            for command in render_action(actions[index - 1]):
                self.progress.command(command)

    def _run_script(self, phase: str, script_path: str, pairs: list[tuple[str, str]]) -> int:
        """Run the uploaded script; stream its lines with the running action's prefix."""
        secrets = self.secrets()
        current = {"index": 0}
        lines = self._lines

        def on_line(raw: str) -> None:
            line = redact(raw, secrets)
            marker = STEP_MARKER.match(line)
            if marker and marker["phase"] == phase:
                current["index"] = int(marker["index"])
            # Kept before it is shown: a Ctrl-C while showing it then names the right action.
            lines.append((current["index"], line))
            if marker and marker["phase"] == phase:
                self.progress(line)
                self._show_commands(phase, current["index"])
            else:
                self.progress(f"    [{phase} {current['index'] or '-'}] {line}")

        command = wrapper_command(script_path, use_sudo=not self.node.is_root)
        status, _ = self.node.run(command, stdin=env_payload(pairs), on_line=on_line)
        return status

    def _records(
        self, phase: str, actions: Sequence[tuple[int, Action]], status: int, lines: list[tuple[int, str]]
    ) -> list[ActionRecord]:
        """ActionRecords for the actions that ran; raise ActionFailed naming the failed one."""
        numbers = [index for index, _ in actions]  # the plan's numbers, as the script's markers show them
        output_of: dict[int, list[str]] = {}
        failed_at = None
        for index, line in lines:
            output_of.setdefault(index, []).append(line)
            failure = FAILED_LINE.match(line)
            if failure and failure["phase"] == phase:
                failed_at = int(failure["index"])
        ran = max((i for i, _ in lines), default=0)
        if status != 0 and failed_at is None:
            failed_at = max(ran, numbers[0])  # e.g. sudo refused before the first step
        records = []
        for index, action in actions:
            if failed_at is not None and index >= failed_at:
                break
            output = "\n".join(output_of.get(index, []))
            records.append(ActionRecord(phase, index, action.description, _command(action), 0, output))
        if failed_at is None:
            return records
        output = output_of.get(failed_at, []) or output_of.get(0, [])
        first = failed_at == numbers[0]
        if first and any(hint in line for line in output_of.get(0, []) for hint in SUDO_REFUSED):
            output = [
                *output_of[0],
                f"amidsl: the login user {self.node.target.user!r} must be able to run `sudo -n` without "
                "a password (NOPASSWD) and without a tty, or log in as root",
            ]
        index, action = max(((i, a) for i, a in actions if i <= failed_at), default=actions[0])
        records.append(
            ActionRecord(phase, index, action.description, _command(action), status, "\n".join(output))
        )
        raise ActionFailed(index, status, "\n".join(output), records)

    def _remove_workdir(self, workdir: str) -> None:
        """Remove the phase's temporary directory (the staged copies included)."""
        try:
            self.node.check(f"rm -rf -- {shlex.quote(workdir)}")
        except NodeConnectionError:
            return  # stays listed: removed after a reconnect, or named in the failure
        self._leftover_dirs.remove(workdir)

    def _left_behind(self, workdir: str, phase_plan: PhasePlan) -> str:
        staged = references_of(phase_plan.actions).files
        if any(s.secret for s in staged):
            return (
                f"amidsl: a staged copy of the private key may remain on the node in {workdir} "
                "(removed on reconnect; otherwise remove it by hand)"
            )
        return f"amidsl: the temporary directory {workdir} may remain on the node"

    def _reconnect_if_lost(self) -> None:
        """After a drop, reconnect so the credentials (and staged copies) can be removed."""
        try:
            self.node.check("true")
        except NodeConnectionError:
            self.node.reconnect()
        for workdir in list(self._leftover_dirs):
            self._remove_workdir(workdir)
        self._stop_cut_off_programs()


# The node program's progress: "bundled 12 MiB of 40 MiB (30 MiB/s)" every few seconds, and
# "uploaded image.part.3 (4 of 9)" for each part.
BUNDLED = re.compile(r"bundled (?P<done>\d+) MiB of (?P<total>\d+) MiB \(\d+ MiB/s\)")
UPLOADED = re.compile(r"uploaded (?P<filename>\S+) \(\d+ of \d+\)")
MIB = 1024 * 1024


class ProgramTransfers:
    """The node program's bundling and upload progress shown as the controller's transfers (bytes, rate,
    ETA; a bar on a terminal, a line every few seconds otherwise), as `simulate` shows an upload."""

    def __init__(self, progress: Callable[[str], None], request: bytes) -> None:
        self.progress = progress if isinstance(progress, Progress) else None
        try:
            parts = json.loads(request).get("parts", [])
        except (ValueError, AttributeError):
            parts = []
        self.sizes = {p["filename"]: int(p.get("size", 0)) for p in parts if isinstance(p, dict)}
        self.bundling: Transfer | None = None
        self.uploading: Transfer | None = None

    def shown(self, line: str) -> bool:
        """Show a progress line of the program as a transfer; False for any other line."""
        if self.progress is None:
            return False
        bundled = BUNDLED.fullmatch(line)
        if bundled:
            if self.bundling is None:
                self.bundling = self.progress.transfer("bundling", int(bundled["total"]) * MIB)
            self.bundling.advance(int(bundled["done"]) * MIB - self.bundling.done)
            return True
        uploaded = UPLOADED.fullmatch(line)
        if uploaded and uploaded["filename"] in self.sizes:
            if self.uploading is None:
                self.uploading = self.progress.transfer("uploading", sum(self.sizes.values()))
            self.uploading.advance(self.sizes[uploaded["filename"]])
            return True
        return False

    def finish(self) -> None:
        """The program is done with them: the transfers' last state (once)."""
        for transfer in (self.bundling, self.uploading):
            if transfer is not None:
                transfer.finish()
        self.bundling = self.uploading = None


def _json_object(line: str) -> dict[str, Any] | None:
    """A line that is a JSON object (the node program's result), else None."""
    if not line.startswith("{"):
        return None
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _check_supplied(script_plan: Plan, pairs: list[tuple[str, str]]) -> None:
    """Every input the rendered script checks for at its top is supplied (else fail before running)."""
    supplied = {name for name, _ in pairs}
    missing = [f"{name} ({what})" for name, what in runtime_inputs(script_plan) if name not in supplied]
    if missing:
        raise PhaseSetupError(f"the script needs {', '.join(missing)}, which amidsl has no value for")


def _runs_program(action: NodeProgram, pid: int) -> str:
    """A shell test: pid is still the node program (not a process that got the pid since)."""
    return f"grep -qaF -- {shlex.quote(action.program)} /proc/{pid}/cmdline"


def _command(action: Action) -> str:
    return "\n".join(render_action(action))


def _file_name(phase: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", phase)
