"""The simulator: a fake node and a strict fake AWS region that run whole builds offline.

Its names load on first use (PEP 562): pytest loads this package's plugin in every run on a machine
with amidsl installed, and the simulator's imports (moto, boto3) cost about a second.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_WHERE = {
    "ImageInspection": "simulator.executor",
    "Simulation": "simulator.executor",
    "SimulatorBackend": "simulator.executor",
    "prepare": "simulator.executor",
    "simulate": "simulator.executor",
    "FakeNode": "simulator.node",
    "NodeFaults": "simulator.node",
    "FakeRegion": "simulator.region",
    "RegionFaults": "simulator.region",
    "template_node": "simulator.template",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
