"""The pure decisions of Redis-loss recovery: what the sentinel, Kafka and Redis say."""

from __future__ import annotations

import doctest

import pytest
from confluent_kafka import OFFSET_BEGINNING

from feature_pipelines import recovery
from feature_pipelines.recovery import Verdict, assess, restart_offsets, run_id_of


@pytest.mark.parametrize(
    ("sentinel", "known", "committed", "stored", "verdict"),
    [
        (None, None, {}, {}, Verdict.FRESH),  # a new namespace
        (None, None, {}, {"t:0": 9}, Verdict.FRESH),  # positions set before the first run
        (None, None, {"t:0": 5}, {"t:0": 5}, Verdict.FRESH),  # written before sentinels existed
        (None, None, {"t:0": 5, "t:1": 3}, {"t:0": 9}, Verdict.LOST),  # a partition forgotten
        (None, None, {"t:0": 5}, {"t:0": 4}, Verdict.LOST),  # behind Kafka's record
        (None, None, {"t:0": 5}, {}, Verdict.LOST),  # wiped, found at start
        (None, "e1", {}, {"t:0": 9}, Verdict.LOST),  # wiped under a running consumer
        ("e1", None, {"t:0": 5}, {}, Verdict.INTACT),
        ("e1", "e1", {}, {}, Verdict.INTACT),
        ("e2", "e1", {}, {}, Verdict.REBUILT),  # another process rebuilt it
    ],
)
def test_assess(sentinel, known, committed, stored, verdict) -> None:
    assert assess(sentinel, known, committed, stored) is verdict


def test_restart_offsets_fall_back_to_the_beginning() -> None:
    assert restart_offsets({"a:0": 7, "b:0": 0}, ["a:0", "a:1", "b:0"]) == {
        "a:0": 7,
        "a:1": OFFSET_BEGINNING,
        "b:0": 0,
    }


def test_run_id_of_info_text() -> None:
    info = "# Server\r\nredis_version:7.2.4\r\nrun_id:4f1c\r\ntcp_port:6379\r\n"
    assert run_id_of(info) == "4f1c"
    assert run_id_of("# Server\r\n") is None


def test_docstring_examples() -> None:
    assert doctest.testmod(recovery).failed == 0
