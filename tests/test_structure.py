"""The layering the design asks for: plan functions know no back-end, generic code no strategy name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amidsl.model.plan import AMI_PHASES
from amidsl.strategies import STRATEGIES


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


# Strategy names as the generic code might spell them; the strategies' own table adds any new one.
STRATEGY_NAMES = frozenset({"native", "ami-tools", *STRATEGIES})
ROOT = Path(__file__).resolve().parent.parent


def _generic_modules() -> list[Path]:
    """Every module of amidsl and the simulator but the strategies and the settings (keyed by bundler)."""
    paths = [*ROOT.joinpath("amidsl").rglob("*.py"), *ROOT.joinpath("simulator").rglob("*.py")]
    return sorted(
        path
        for path in paths
        if not path.relative_to(ROOT).as_posix().startswith(("amidsl/strategies/", "amidsl/settings"))
    )


def _names_a_strategy(node: ast.AST) -> bool:
    """A strategy name as a string constant, or a tuple, list or set holding one."""
    if isinstance(node, ast.Constant):
        return node.value in STRATEGY_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_strategy(item) for item in node.elts)
    return False


def _is_bundler(node: ast.AST) -> bool:
    """`bundler` or `something.bundler`."""
    return (isinstance(node, ast.Name) and node.id == "bundler") or (
        isinstance(node, ast.Attribute) and node.attr == "bundler"
    )


def _compares_a_strategy(node: ast.AST) -> bool:
    """A comparison (== != in is, or a match) with a strategy name, or of the bundler setting."""
    if isinstance(node, ast.Compare):
        return any(_names_a_strategy(o) or _is_bundler(o) for o in (node.left, *node.comparators))
    if isinstance(node, ast.Match):
        return _is_bundler(node.subject)
    if isinstance(node, ast.MatchValue):
        return _names_a_strategy(node.value)
    return False


def _strategy_comparisons(source: str) -> list[int]:
    """The lines of the source that compare strategy names."""
    return sorted({node.lineno for node in ast.walk(ast.parse(source)) if _compares_a_strategy(node)})


def test_no_module_outside_the_strategies_compares_strategy_names():
    found = []
    for path in _generic_modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in _strategy_comparisons("\n".join(lines)):
            found.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {lines[line - 1].strip()}")
    assert not found, "ask strategy_of(settings) instead of comparing strategy names:\n" + "\n".join(found)


def test_the_name_scan_finds_each_way_of_comparing_a_strategy():
    source = (
        'if s.bundler == "native":\n    pass\n'
        'if "ami-tools" != bundler:\n    pass\n'
        'ok = name in ("native", "other")\n'
        "same = s.bundler is t.bundler\n"
        'match s.bundler:\n    case "native":\n        pass\n'
        'text = "if bundler == native: not code"\n'
        'message = f"drop --bundler {s.bundler}"\n'
    )
    assert _strategy_comparisons(source) == [1, 3, 5, 6, 7, 8]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_has_a_plan_function_for_every_phase_the_loop_runs(name):
    strategy = STRATEGIES[name]
    assert strategy.name == name
    assert sorted(strategy.phases) == sorted(AMI_PHASES)
    assert all(callable(fn) for fn in strategy.phases.values())


# -- layers ------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher one
# (lazy imports inside functions and the command table's "module:function" handlers count too).
LAYERS = (
    (
        "amidsl.node",
        "amidsl.secrets",
        "amidsl.tags",
        "amidsl.printable",
        "amidsl.keypairs",
        "amidsl.iterate",
        "amidsl.snapshots",
    ),
    ("amidsl.example", "amidsl.settings", "amidsl.bundle"),
    ("amidsl.model",),
    ("amidsl.strategies",),
    ("amidsl.run", "amidsl.render"),
    ("amidsl.live",),
    ("simulator",),
    ("amidsl.cli", "amidsl.crate", "amidsl.testing", "amidsl.__main__"),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module` (the package itself is layer 0)."""
    found = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    if module == "amidsl":
        return 0  # the version only
    assert found, f"{module} is in no layer: add it to LAYERS"
    return max(found)[1]


def project_modules() -> dict[str, Path]:
    """Every module of the product (amidsl and simulator) by dotted name."""
    modules = {}
    for package in ("amidsl", "simulator"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The project modules `path` imports anywhere in it, lazily too, and those it names as handlers.

    A handler is a "module:function" string the command table imports when that command runs.
    """
    imported, handlers = set(), set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports for type checkers only (under `if TYPE_CHECKING:`) never run.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports the module a.b.c when c is one, else a name of a.b.
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                imported.add(child if child in modules else node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            handler = re.fullmatch(r"((?:amidsl|simulator)(?:\.\w+)+):\w+", node.value)
            if handler:
                handlers.add(handler[1])
    return imported & set(modules), handlers & set(modules)


def import_graph(handlers: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports (and, with `handlers`, the handlers it names)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        imported, named = imports_of(path, modules)
        graph[name] = (imported | named if handlers else imported) - {name}
    return graph


def test_no_module_imports_from_a_higher_layer_lazy_imports_and_handlers_included():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph(handlers=True).items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_import_graph_has_no_circle_lazy_imports_included():
    # The command table names its handlers and they import the table's errors: a handler is loaded
    # when its command runs, after the table, so those names are no circle.
    graph = import_graph(handlers=False)
    circles = []
    for start in graph:
        # A path back to `start` through modules after it in sort order: each circle reported once.
        stack = [(start, (start,))]
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    circles.append(" -> ".join((*path, start)))
                elif target > start and target not in path:
                    stack.append((target, (*path, target)))
    assert circles == []


def test_nothing_inside_imports_the_crate_facade():
    importers = [m for m, targets in import_graph(handlers=True).items() if "amidsl.crate" in targets]
    assert importers == []


def test_the_controller_uses_nothing_newer_than_python_3_9(tmp_path):
    """The controller (amidsl and the simulator, the node program aside) runs on Python 3.9."""
    from tests.minimum_python import newer_python_violations

    root = Path(__file__).resolve().parent.parent
    sources = {
        str(path.relative_to(root)): path.read_text(encoding="utf-8")
        for path in sorted([*root.glob("amidsl/**/*.py"), *root.glob("simulator/**/*.py")])
        if path.name != "amidsl_node.py" and path.read_text(encoding="utf-8").strip()
    }
    assert newer_python_violations(sources, (3, 9), tmp_path) == ""


def test_the_python_3_9_check_finds_a_newer_api_and_a_runtime_union(tmp_path):
    from tests.minimum_python import newer_python_violations

    newer = (
        "from __future__ import annotations\nimport datetime\n"
        "NOW = datetime.datetime.now(datetime.UTC)\n"
        "class Left: ...\nclass Right: ...\nEITHER = Left | Right\n"
    )
    found = newer_python_violations({"newer.py": newer}, (3, 9), tmp_path)
    assert "datetime.UTC" in found and "a union with | at run time: Left | Right" in found
