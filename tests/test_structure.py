"""The layering the design asks for: plan functions know no back-end."""

from __future__ import annotations

import subprocess
import sys


def test_the_crate_and_its_strategies_import_no_back_end():
    back_ends = ("amidsl.live", "simulator", "boto3", "paramiko")
    code = (
        "import sys, amidsl.crate, amidsl.strategies.native, amidsl.strategies.ami_tools; "
        f"print(sorted(m for m in sys.modules if m.startswith({back_ends!r})))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
