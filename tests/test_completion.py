"""`amidsl completion`: scripts for bash, zsh and fish that offer what the command table defines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from amidsl.cli.completion import SCRIPTS, bash_script, fish_script, zsh_script
from amidsl.cli.simulate_commands import FAULT_NAMES
from amidsl.cli.table import find_command
from amidsl.model.plan import AMI_PHASES
from amidsl.run.runner import ON_ERROR_POLICIES
from amidsl.settings.constants import BUNDLERS


def bash_completes(*words: str) -> list[str]:
    """What the bash script offers for the last word of `amidsl WORDS...`."""
    line = " ".join(f'"{word}"' for word in ("amidsl", *words))
    shell = f'{bash_script()}COMP_WORDS=({line}); COMP_CWORD={len(words)}; _amidsl; echo "${{COMPREPLY[@]}}"'
    run = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True)
    return run.stdout.split()


def test_the_command_prints_the_script_of_each_shell_it_offers():
    (shell,) = find_command("completion").options
    assert shell.choices == tuple(SCRIPTS)
    for name, script in SCRIPTS.items():
        run = subprocess.run(
            [sys.executable, "-m", "amidsl", "completion", name], capture_output=True, text=True, check=True
        )
        assert run.stdout == script()


def test_the_bash_script_is_valid_bash():
    check = subprocess.run(["bash", "-n"], input=bash_script(), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(
            ["shellcheck", "-s", "bash", "-"], input=bash_script(), capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("build", "--phase", ""), AMI_PHASES),
        (("build", "-p", ""), AMI_PHASES),
        (("plan", "--phase", ""), AMI_PHASES),
        (("simulate", "-p", "ami-"), tuple(p for p in AMI_PHASES if p.startswith("ami-"))),
        (("build", "--on-error", ""), ON_ERROR_POLICIES),
        (("simulate", "--fault", ""), FAULT_NAMES),
        (("simulate", "--bundler", ""), BUNDLERS),
        (("completion", ""), tuple(SCRIPTS)),
    ],
    ids=" ".join,
)
def test_bash_completes_option_values_from_where_they_are_defined(words, offered):
    assert bash_completes(*words) == list(offered)


def test_bash_completes_commands_after_help_and_options_after_a_command():
    assert bash_completes("help", "simu") == ["simulate"]
    assert bash_completes("build", "--on") == ["--on-error"]


def test_the_zsh_script_is_the_bash_function_under_bashcompinit(tmp_path):
    script = zsh_script()
    assert "bashcompinit" in script and "_amidsl()" in script
    assert script.endswith(bash_script().split("\n", 1)[1])
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed: only the script's content was checked")
    check = subprocess.run(["zsh", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # zsh's compgen calls the function the way its bash layer does when a user presses Tab.
    shell = (
        'autoload -U compinit && compinit -D -u; eval "$1"; '
        'COMP_WORDS=(amidsl build --phase ""); COMP_CWORD=3; compgen -F _amidsl -- ""'
    )
    home = os.environ | {"HOME": str(tmp_path)}
    run = subprocess.run(["zsh", "-f", "-c", shell, "zsh", script], capture_output=True, text=True, env=home)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == list(AMI_PHASES)


def test_the_fish_script_offers_the_phases_for_phase(tmp_path):
    script = fish_script()
    phases = " ".join(AMI_PHASES)
    assert f"'__fish_seen_subcommand_from build' -l phase -s p -x -a '{phases}'" in script
    if not shutil.which("fish"):
        pytest.skip("fish is not installed: only the script's content was checked")
    check = subprocess.run(["fish", "--no-execute"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    shell = 'eval $argv[1]; complete -C "amidsl build --phase "'
    home = os.environ | {
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    run = subprocess.run(
        ["fish", "--no-config", "-c", shell, script], capture_output=True, text=True, env=home
    )
    assert run.returncode == 0, run.stderr
    assert sorted(line.split("\t")[0] for line in run.stdout.splitlines()) == sorted(AMI_PHASES)
