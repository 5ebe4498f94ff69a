"""Fixtures of the whole-system tests (faults, bad input, soak, security)."""

from tests.system.fixtures import learn_ns, system

__all__ = ["learn_ns", "system"]
