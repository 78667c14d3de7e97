"""`amidsl completion SHELL`: a completion script for bash, zsh or fish, made from the command table.

Each script completes the commands, each command's options, and the values of an option that has a
fixed set: its choices, or the tuple its `values` names where the command checks the value itself
(`--phase`, `--on-error`, `--fault`), imported from where it is defined. Other values complete as file
names. zsh runs the bash script through its bash completion layer (bashcompinit).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from amidsl.cli.table import COMMANDS, CliCommand, Option


def option_values(option: Option) -> tuple[str, ...]:
    """The values shell completion offers for an option: its choices or its `values`; () for any."""
    if option.choices:
        return option.choices
    if option.values:
        module, _, name = option.values.partition(":")
        return tuple(getattr(importlib.import_module(module), name))
    return ()


def command_names() -> list[str]:
    """Every word that may follow `amidsl`: the commands and help."""
    return [command.name for command in COMMANDS] + ["help"]


def bash_script() -> str:
    """The bash completion function and its `complete` line."""
    values, flags = [], []
    for command in COMMANDS:
        words = " ".join(["--help", *(o.flag for o in command.options if not o.positional)])
        flags.append(f'            {command.name}) COMPREPLY=($(compgen -W "{words}" -- "$cur")) ;;')
        for option in command.options:
            offered = option_values(option)
            if not offered:
                continue
            # What "${COMP_WORDS[1]} $prev" is when the value is the word being completed.
            if option.positional:
                after = [f'"{command.name} {command.name}"']
            else:
                after = [f'"{command.name} {flag}"' for flag in (option.flag, option.short) if flag]
            words = " ".join(offered)
            values.append(
                f'        {"|".join(after)}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); return ;;'
            )
    script = BASH_COMPLETION.replace("@NAMES@", " ".join(command_names()))
    return script.replace("@VALUES@", "\n".join(values)).replace("@FLAGS@", "\n".join(flags))


# Empty answers fall back to file names (complete -o default): most option values are files.
BASH_COMPLETION = """\
# bash completion for amidsl; load it with: eval "$(amidsl completion bash)"
# shellcheck disable=SC2207  # compgen's words never hold spaces: splitting them is intended
_amidsl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ] || [ "$prev" = help ]; then
        COMPREPLY=($(compgen -W "@NAMES@ --help --version" -- "$cur"))
        return
    fi
    case "${COMP_WORDS[1]} $prev" in
@VALUES@
    esac
    if [[ "$cur" == -* ]]; then
        case "${COMP_WORDS[1]}" in
@FLAGS@
        esac
    fi
}
complete -o default -F _amidsl amidsl
"""


def zsh_script() -> str:
    """The bash function under zsh's bash completion layer."""
    head = '# zsh completion for amidsl; load it with: eval "$(amidsl completion zsh)"\n'
    return head + "autoload -U +X bashcompinit && bashcompinit\n" + bash_script().split("\n", 1)[1]


def fish_quoted(text: str) -> str:
    """Text as one single-quoted fish word."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_lines(command: CliCommand) -> list[str]:
    """The `complete` lines of one command's options."""
    when = f"-n {fish_quoted('__fish_seen_subcommand_from ' + command.name)}"
    lines = []
    for option in command.options:
        offered = option_values(option)
        if option.positional:
            if offered:
                lines.append(f"complete -c amidsl {when} -a {fish_quoted(' '.join(offered))}")
            continue
        names = f"-l {option.flag[2:]}" + (f" -s {option.short[1:]}" if option.short else "")
        if option.default is False:
            kind = ""  # a flag takes no value
        elif offered:
            kind = f" -x -a {fish_quoted(' '.join(offered))}"
        else:
            kind = " -r -F"  # a value, most often a file
        lines.append(f"complete -c amidsl {when} {names}{kind} -d {fish_quoted(option.help)}")
    return lines


def fish_script() -> str:
    """fish `complete` lines: the commands, then each command's options."""
    lines = [
        "# fish completion for amidsl; load it with: amidsl completion fish | source",
        "complete -c amidsl -f",
        "complete -c amidsl -n __fish_use_subcommand -l help -s h -d 'show the commands'",
        "complete -c amidsl -n __fish_use_subcommand -l version -d 'show the version'",
    ]
    for command in COMMANDS:
        lines.append(
            f"complete -c amidsl -n __fish_use_subcommand -a {command.name} -d {fish_quoted(command.summary)}"
        )
    lines.append('complete -c amidsl -n __fish_use_subcommand -a help -d "show a command\'s options"')
    names = fish_quoted(" ".join(command.name for command in COMMANDS))
    lines.append(f"complete -c amidsl -n {fish_quoted('__fish_seen_subcommand_from help')} -a {names}")
    for command in COMMANDS:
        lines += fish_lines(command)
    return "\n".join(lines) + "\n"


SCRIPTS: dict[str, Callable[[], str]] = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def completion(shell: str) -> None:
    """Print the completion script for `shell`, made from the command table."""
    print(SCRIPTS[shell](), end="")
