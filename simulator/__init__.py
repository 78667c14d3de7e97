"""The simulator: a fake node and a strict fake AWS region that run whole builds offline."""

from simulator.executor import ImageInspection, Simulation, SimulatorBackend, prepare, simulate
from simulator.node import FakeNode, NodeFaults
from simulator.region import FakeRegion, RegionFaults
from simulator.template import template_node

__all__ = [
    "FakeNode",
    "FakeRegion",
    "ImageInspection",
    "NodeFaults",
    "RegionFaults",
    "Simulation",
    "SimulatorBackend",
    "prepare",
    "simulate",
    "template_node",
]
