"""Node steps run on a FakeNode as bash runs them in the rendered script (amidsl.model.steps).

Each command goes through the node's command models; a step's failure stops the steps after it, as
`set -e` does; the output is what the script would print, its failure messages included.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from amidsl.model.actions import EnvSecret, OptionalArg, RunnerValue, RuntimeValue, StagedFile
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
    created_marker,
    walk_steps,
)
from amidsl.secrets import redact
from simulator.node import CommandResult, FakeNode


class StepRunner(StepVisitor[CommandResult]):
    """Runs steps on a node with the environment the script would have (secrets, staged files, values).

    `env` is the action's own: a CollectExisting step sets a variable in it for the steps after it.
    `secrets` are redacted from the commands the node's progress shows.
    """

    def __init__(self, node: FakeNode, env: dict[str, str], secrets: Sequence[str] = ()) -> None:
        self.node = node
        self.env = env
        self.secrets = list(secrets)

    def run(self, steps: Sequence[Step]) -> CommandResult:
        """Run steps in order, stopping at the first that fails; its status and every step's output."""
        output = []
        for result in walk_steps(steps, self):
            output.append(result.output)
            if result.status != 0:
                return CommandResult(result.status, "".join(output))
        return CommandResult(0, "".join(output))

    # -- one handler per step type ----------------------------------------------------------------

    def command(self, step: Command) -> CommandResult:
        """Run the command through the node's command models."""
        try:
            argv = [word for w in step.argv for word in self._words(w)]
            extra = {name: self._words(value)[0] for name, value in step.env}
        except KeyError as missing:
            return CommandResult(1, f"bash: {missing.args[0]}: unbound variable\n")
        self.node.progress.command(redact(shlex.join(argv), self.secrets))
        if step.stdin is not None:
            # Only `cat <<'END'` takes standard input in a plan: it passes the text through.
            result = CommandResult(0, step.stdin) if argv == ["cat"] else CommandResult(2, "no stdin\n")
        else:
            result = self.node.run(argv, extra, step.cwd or "/", step.user)
        if step.stdout is None or result.status != 0:
            return result
        target = step.stdout
        # A redirect creates the file with 0666 less the umask: the command's own, else the script's 022.
        new_mode = 0o666 & ~int(step.umask or "022", 8)
        mode = self.node.mode(target) if self.node.exists(target) else new_mode
        self.node.write_bytes(target, result.output.encode(), mode=mode, owner=self.node.owner(target))
        return CommandResult(0)

    def if_missing(self, step: IfMissing) -> CommandResult:
        """Run `then` unless the path exists (is a directory, for kind "d")."""
        present = self.node.is_dir(step.path) if step.kind == "d" else self.node.exists(step.path)
        return CommandResult(0) if present else self.run(step.then)

    def if_present(self, step: IfPresent) -> CommandResult:
        """Run `then` when the path is a directory."""
        return self.run(step.then) if self.node.is_dir(step.path) else CommandResult(0)

    def check(self, step: Check) -> CommandResult:
        """Fail with the check's message unless the script's test would pass."""
        return CommandResult(0) if self._passes(step) else CommandResult(1, f"amidsl: {step.message}\n")

    def by_package_manager(self, step: ByPackageManager) -> CommandResult:
        """Run the branch of the first program the node has, else fail with `otherwise`."""
        branch = next((b for program, b in step.branches if self.node.has_command(program)), None)
        if branch is None:
            return CommandResult(1, f"amidsl: {step.otherwise}\n")
        return self.run(branch)

    def if_succeeds(self, step: IfSucceeds) -> CommandResult:
        """Run `then` when every test command succeeds, else `otherwise`."""
        passed = all(self.command(test).status == 0 for test in step.tests)
        return self.run(step.then if passed else step.otherwise)

    def collect_existing(self, step: CollectExisting) -> CommandResult:
        """Set the variable to the paths that exist; say which do not."""
        found = [p for p in step.paths if self.node.exists(p)]
        self.env[step.variable] = step.separator.join(found)
        missing = [p for p in step.paths if p not in found]
        return CommandResult(
            0, "".join(f"amidsl: leaving out {p}: it does not exist on this node\n" for p in missing)
        )

    def collect_matching(self, step: CollectMatching) -> CommandResult:
        """Add the paths `find` would print (sorted as `sort -z` in the C locale) to the variable."""
        m = step.matching
        self.env.setdefault(step.variable, "")
        if m.when_any and not any(self.node.exists(p) for p in m.when_any):
            return CommandResult(0, f"amidsl: {m.otherwise}\n")
        found = self.node.find_matching(m.root, m.patterns, m.fs_types)
        value, output = self.env.get(step.variable, ""), []
        for path in sorted(found, key=os.fsencode):
            if step.separator in path or "\n" in path:
                output.append(
                    f"amidsl: cannot pass on {path} ({m.why}): its name holds {step.separator!r} or a "
                    "new line, which would split the list\n"
                )
                return CommandResult(1, "".join(output))
            if m.say_each:
                output.append(f"amidsl: {m.saying} {path} ({m.why})\n")
            value = f"{value}{step.separator}{path}" if value else path
        if not m.say_each:
            output.append(f"amidsl: {m.saying} {len(found)} paths ({m.why})\n")
        self.env[step.variable] = value
        return CommandResult(0, "".join(output))

    def fail(self, step: Fail) -> CommandResult:
        """Stop with the message."""
        return CommandResult(1, f"amidsl: {step.message}\n")

    # -- what bash makes of words and tests -------------------------------------------------------

    def _passes(self, check: Check) -> bool:
        """What the script's test for a Check finds on the node."""
        node = self.node
        absent = not node.exists(check.path) and not node.host_path(check.path).is_symlink()
        if check.kind == "absent":
            return absent
        if check.kind == "empty":
            return not node.is_dir(check.path) or not any(node.host_path(check.path).iterdir())
        return absent or node.is_dir(created_marker(check.path))

    def _words(self, word: object) -> list[str]:
        """What bash makes of one word: expansions resolved, globs matched."""
        if isinstance(word, str):
            return [word]
        if isinstance(word, (EnvSecret, StagedFile, RuntimeValue)):
            return [self.env[word.env_var]]
        if isinstance(word, ShellVariable):
            return [self.env[word.name]]
        if isinstance(word, OptionalArg):
            value = self.env.get(word.value.env_var)
            return [word.flag, value] if value else []
        if isinstance(word, RunnerValue):
            return [self.env.get(word.env_var) or word.default]
        if isinstance(word, Glob):
            return self.node.glob(word.directory, word.pattern) or [
                f"{word.directory.rstrip('/')}/{word.pattern}"
            ]
        raise TypeError(f"the simulator cannot expand {type(word).__name__}")
