"""The layering the design asks for: plan functions know no back-end."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_the_crate_and_its_strategies_import_no_back_end():
    back_ends = ("amidsl.live", "simulator", "boto3", "paramiko")
    code = (
        "import sys, amidsl.crate, amidsl.strategies.native, amidsl.strategies.ami_tools; "
        f"print(sorted(m for m in sys.modules if m.startswith({back_ends!r})))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def node_program_names_used(path: Path) -> set[str]:
    """The names `path` takes from the node program: imported, or read as attributes of it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used, aliases = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "amidsl.node.amidsl_node":
            used.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "amidsl.node":
            aliases.update(
                alias.asname or "amidsl_node" for alias in node.names if alias.name == "amidsl_node"
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.add(node.attr)
    return used


def test_the_controller_imports_only_what_the_node_program_offers_it():
    """The node program says which of its names other code may use; the rest it may change freely."""
    import amidsl.node.amidsl_node as program

    root = Path(__file__).resolve().parent.parent
    code = [*root.glob("amidsl/**/*.py"), *root.glob("simulator/**/*.py"), *root.glob("benchmarks/*.py")]
    used = set().union(*(node_program_names_used(path) for path in code))
    assert sorted(used - set(program.CONTROLLER_API)) == []
    assert [name for name in program.CONTROLLER_API if not hasattr(program, name)] == []
