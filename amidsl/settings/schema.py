"""The data of settings: file sources, problems, and the row type of the settings table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amidsl.secrets import Secret

if TYPE_CHECKING:
    from amidsl.settings.reading import Reading

# Reads one setting (the user's value, or its default) for a row, recording problems on the Reading.
Reader = Callable[["Reading", "Setting"], Any]
# Checks a value a row has read: (reading, setting name, value); records problems, returns nothing.
Check = Callable[["Reading", str, Any], None]
# Computes a default from the other settings (each read on first use).
DefaultFrom = Callable[["Reading"], Any]


@dataclass(frozen=True)
class Source:
    """Where a file comes from: a file on the controller, inline content, or a URL (install only)."""

    local_file: str | None = None
    content: str | Secret | None = None
    url: str | None = None
    example: bool = False  # amidsl's built-in throwaway credentials (content filled in)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: which setting, what is wrong, how to fix it."""

    setting: str
    message: str
    fix: str

    def __str__(self) -> str:
        # A fix may end as a question ("did you mean 'eu-west-1'?"), which needs no period after it.
        end = "" if self.fix.endswith(("?", ".", "!")) else "."
        return f"{self.setting}: {self.message}. Fix: {self.fix}{end}"


class SettingsError(ValueError):
    """The settings have problems; `problems` lists every one of them."""

    def __init__(self, problems: list[Problem], origin: str = "settings") -> None:
        self.problems = problems
        self.origin = origin
        lines = [f"{origin}: {len(problems)} problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: how a setting is read and checked, and what the reference says."""

    name: str
    type: str  # the annotation of its AmiSettings field
    read: Reader
    doc: str = ""  # the reference's "meaning" column; rows given together share it
    default: Any = None
    default_from: DefaultFrom | None = None  # a default computed from other settings (wins over default)
    shown_default: str = ""  # the reference's "default" column where the default value does not say it
    check: Check | None = None  # what else a read value must satisfy (run unless the value is None)
    choices: tuple[str, ...] = ()
    required: bool = False  # for every build that reads it (see backings), or of required_for
    secret: bool = False  # never shown in a message, a preview or a repr
    free_text: bool = False  # line breaks allowed
    used_by: tuple[str, ...] = ()  # the strategies (values of `bundler`) that read it; () for all
    # The values of `backing` whose builds read it (an S3 bundle's bucket and signing pair, an EBS
    # snapshot's encryption); () for all.
    backings: tuple[str, ...] = ()
    # With required: the backings whose builds must give it, where more read it (() : those of backings).
    required_for: tuple[str, ...] = ()
    given: bool = True  # False: derived from other settings, never given by a user
    field: bool = True  # False: folded into another field (keep_<item> into hygiene_keep)

    @property
    def required_in(self) -> tuple[str, ...]:
        """The backings whose builds must give a required setting; () for every build."""
        return self.required_for or self.backings

    @property
    def holds_text(self) -> bool:
        """Whether the setting is given as a string (variables expand there; --set takes plain text)."""
        return self.type.split(" |")[0] in ("str", "Secret")

    @property
    def holds_text_list(self) -> bool:
        """Whether the setting is a TOML list of strings: regions, accounts, paths and patterns."""
        return self.type == "tuple[str, ...]"

    @property
    def holds_pairs(self) -> bool:
        """Whether the setting is a TOML table read as (key, value) pairs: tags, keys by region."""
        return self.type == "tuple[tuple[str, str], ...]"

    def used_in(self, bundler: str, backing: str) -> bool:
        """Whether a build with this strategy (`bundler`) and `backing` reads the setting."""
        return (not self.used_by or bundler in self.used_by) and (
            not self.backings or backing in self.backings
        )
