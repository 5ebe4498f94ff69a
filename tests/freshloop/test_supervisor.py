"""The supervisor refuses a port it does not own and never trusts a pid it did not start."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from freshloop.core.exceptions import StackError
from freshloop.core.settings import Settings
from freshloop.stack import Stack
from freshloop.stack.supervisor import _started_at


def test_a_port_taken_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stack = Stack(Settings(home=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0"))
        stack.setup = lambda: None  # type: ignore[method-assign]
        with pytest.raises(StackError, match=f"port {port} \\(redis\\).*did not start"):
            stack.up(["redis"])
        (row,) = [r for r in stack.status() if r.name == "redis"]
        assert (row.state, row.pid, row.healthy) == ("foreign", None, False)


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    stack = Stack(Settings(home=tmp_path))
    stack.run_dir.mkdir(parents=True)
    svc = stack.select(["redis"])[0]
    me = os.getpid()
    record = {"pid": me, "port": svc.port, "proc_start": _started_at(me)}
    (stack.run_dir / "redis.json").write_text(json.dumps(record))
    assert stack.pid_of(svc) == me
    record["proc_start"] = "1"  # same pid, another process start: must not be signalled
    (stack.run_dir / "redis.json").write_text(json.dumps(record))
    assert stack.pid_of(svc) is None
    assert stack.down(["redis"]) == []


def test_unknown_service_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="choose from connect, kafka, postgres, redis"):
        Stack(Settings(home=tmp_path)).select(["zookeeper"])
