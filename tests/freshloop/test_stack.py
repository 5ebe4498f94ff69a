"""Through the real stack: up twice is harmless, status is healthy, logs are in one folder."""

from __future__ import annotations

import pytest

from freshloop.settings import Settings
from freshloop.stack import Stack

pytestmark = pytest.mark.integration


def test_up_on_a_running_stack_is_a_no_op(stack_settings: Settings) -> None:
    stack = Stack(stack_settings)
    before = {row.name: row.pid for row in stack.status()}
    if any(pid is None for pid in before.values()):
        pytest.skip("the stack under test was not started by freshloop (external backend)")
    assert stack.up() == []
    after = stack.status()
    assert {row.name: row.pid for row in after} == before
    assert all(row.healthy and row.state == "running" for row in after)
    for name in before:
        assert stack.log_path(name).parent == stack.log_dir
