"""The pure decisions of partial-loss detection: which eviction policies are refused, evictions
counted across a restart, which sampled row states are lost, which group keys are gone."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from feature_pipelines import loss
from feature_pipelines.loss import (
    Probe,
    eviction_refusal,
    evictions_between,
    lost_group_keys,
    lost_rows,
    policy_evicts,
)
from freshloop.core.settings import Settings
from freshloop.stack.services import Redis

POLICIES = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


@pytest.mark.parametrize("policy", POLICIES)
def test_only_noeviction_keeps_every_key(policy: str) -> None:
    # volatile-* too: entity hashes of windowed features carry a TTL
    assert policy_evicts(policy) is (policy != "noeviction")


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "noeviction"])
def test_an_evicting_policy_is_refused_with_why_and_how(policy: str) -> None:
    msg = eviction_refusal(policy, allowed=False)
    assert msg is not None
    assert policy in msg  # what came
    assert "expected noeviction" in msg  # what was expected
    assert "CONFIG SET maxmemory-policy noeviction" in msg  # how to fix, either way
    assert "FRESHLOOP_REDIS_ALLOW_EVICTION=true" in msg
    assert eviction_refusal(policy, allowed=True) is None


def test_an_unreadable_policy_is_refused_unless_allowed() -> None:
    msg = eviction_refusal(None, allowed=False, why_unknown="CONFIG GET refused: NOPERM")
    assert msg is not None and "NOPERM" in msg and "FRESHLOOP_REDIS_ALLOW_EVICTION" in msg
    assert eviction_refusal(None, allowed=True) is None
    assert eviction_refusal("noeviction", allowed=False) is None


def test_evictions_are_counted_from_the_first_reading_and_across_a_restart() -> None:
    assert evictions_between(None, 500) == 0  # the baseline: older evictions are not ours
    assert evictions_between(500, 500) == 0
    assert evictions_between(500, 503) == 3
    assert evictions_between(500, 2) == 2  # the server restarted: its counter too


def test_a_row_state_is_lost_only_if_indexed_and_not_yet_due() -> None:
    marks = {0: 1_000, 1: 5_000}
    probes = [
        Probe(0, "gone-early", 1_001.0, exists=False),  # the index says it must exist: lost
        Probe(0, "expired", 1_000.0, exists=False),  # due at the watermark: the script deleted it
        Probe(0, "popped", None, exists=False),  # removed from the index with its key
        Probe(1, "due-by-mark", 4_000.0, exists=False),  # partition 1's own watermark counts
        Probe(0, "there", 9_999.0, exists=True),
        Probe(2, "no-mark-yet", 1.0, exists=False),  # no watermark stored: every score is ahead
    ]
    assert lost_rows(probes, marks) == ["gone-early", "no-mark-yet"]


def test_group_keys_are_lost_only_once_seen() -> None:
    assert lost_group_keys(set(), {"o": False, "w": False}) == []  # a new group: not written yet
    assert lost_group_keys({"o", "w"}, {"o": True, "w": True}) == []
    assert lost_group_keys({"o", "w"}, {"o": False, "w": True}) == ["o"]


def test_the_local_stack_runs_redis_without_eviction(tmp_path: Path) -> None:
    command = Redis("redis", 6379, Settings(), tmp_path).command()
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_docstring_examples() -> None:
    assert doctest.testmod(loss).failed == 0
