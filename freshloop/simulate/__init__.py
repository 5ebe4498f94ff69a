"""Sample writes for the demo and the tests: a seeded workload and the writer that applies it."""

from freshloop.simulate.clock import EventClock
from freshloop.simulate.workload import Op, Workload, WorkloadConfig
from freshloop.simulate.writer import SimulationReport, run_simulation

__all__ = ["EventClock", "Op", "SimulationReport", "Workload", "WorkloadConfig", "run_simulation"]
