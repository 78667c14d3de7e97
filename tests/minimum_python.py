"""What vermin finds in source that an older Python lacks: syntax, builtins, stdlib modules and APIs.

The node program must run on the nodes' Python 3.8, the controller on Python 3.9.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path


class _WithoutAnnotations(ast.NodeTransformer):
    """Drops annotations: under `from __future__ import annotations` Python never evaluates them."""

    def visit_arg(self, arg: ast.arg) -> ast.arg:
        arg.annotation = None
        return arg

    def visit_FunctionDef(self, function: ast.FunctionDef) -> ast.FunctionDef:
        function.returns = None
        self.generic_visit(function)
        return function

    def visit_AnnAssign(self, assign: ast.AnnAssign) -> ast.AnnAssign:
        assign.annotation = ast.Constant("annotation")
        self.generic_visit(assign)
        return assign


def _runtime_unions(tree: ast.AST) -> list[str]:
    """`A | B` of names where Python evaluates it (isinstance, a type alias): 3.10 and newer only.

    vermin does not see these outside annotations."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            # Class names (CamelCase), not constants (FLAGS | OTHER) or sets.
            if all(isinstance(side, (ast.Name, ast.Attribute, ast.BinOp)) for side in sides) and any(
                isinstance(side, ast.Name) and side.id[:1].isupper() and not side.id.isupper()
                for side in sides
            ):
                found.append(f"L{node.lineno}: a union with | at run time: {ast.unparse(node)}")
    return found


def newer_python_violations(sources: dict[str, str], oldest: tuple[int, int], tmp_path: Path) -> str:
    """Each file's constructs that Python `oldest` lacks, as vermin and the union check report them."""
    report = []
    checked_dir = tmp_path / "checked"
    checked_dir.mkdir()
    for name, source in sources.items():
        tree = ast.parse(source)
        # Annotations are text under the __future__ import, so `list[int]` or `X | None` in them is
        # fine; with them gone, --eval-annotations makes vermin flag such types where code evaluates them.
        annotated = any(
            (isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation is not None)
            or (isinstance(n, ast.FunctionDef) and n.returns is not None)
            for n in ast.walk(tree)
        )
        assert not annotated or any(
            isinstance(n, ast.ImportFrom) and n.module == "__future__" and n.names[0].name == "annotations"
            for n in tree.body
        ), f"{name}: without `from __future__ import annotations`, old Pythons evaluate every annotation"
        stripped = _WithoutAnnotations().visit(tree)
        report += [f"{name}: {union}" for union in _runtime_unions(stripped)]
        (checked_dir / name.replace("/", "__")).write_text(ast.unparse(stripped))
    target = f"--target={oldest[0]}.{oldest[1]}-"
    options = (target, "--violations", "--no-tips", "--eval-annotations", "-vvv", "--quiet")
    found = subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", *options, "--no-config-file"]
        + [str(path) for path in sorted(checked_dir.iterdir())],
        capture_output=True,
        text=True,
    )
    assert found.returncode in (0, 1), found.stderr
    # Point at the offending code: the line numbers are those of the checked (unparsed) text.
    current: list[str] = []
    for line in found.stdout.splitlines():
        report.append(line.replace(str(checked_dir) + "/", ""))
        if line.startswith(("!", "~")) or str(checked_dir) in line:
            path = next((p for p in checked_dir.iterdir() if str(p) in line), None)
            current = path.read_text().splitlines() if path else []
        at = re.match(r"\s*L(\d+):", line)
        if at and current:
            report.append("      " + current[int(at.group(1)) - 1].strip())
    return "\n".join(report).strip()
