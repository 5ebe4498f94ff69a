"""Through the real stack: up twice is harmless, status is healthy, logs are in one folder."""

from __future__ import annotations

import pytest

from freshloop.core.settings import Settings
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


def test_kafka_cluster_ids_never_look_like_options() -> None:
    """A leading '-' made the storage tool read the id as a flag (a CI failure, 1 in 64 runs)."""
    from freshloop.stack.services import _kafka_cluster_id

    ids = [_kafka_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
