"""An outage that loses part of Redis's state: row states gone under load (as an eviction or a
stray DEL takes them) while the scorer runs. The loss is found by sampling the expiry indexes,
the group's state is dropped and rebuilt by an incremental snapshot, and the scenario ends as
every fault scenario does: features equal to the SQL oracle (every entity kind, a sample of the
whole database too, since the rebuild re-read all of it) and every outcome learned once.

Its rebuild re-reads every row of the captured tables through the stack's connector: run it on
a stack of its own (``make faults`` with the FRESHLOOP_ settings of a private stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feature_pipelines import SAMPLE_FEATURES, FeatureStore, verify_until_clean
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_pipeline_stack import _start_at_end
from tests.system.fixtures import System, run_with_fault, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
def sampling_system(learn_ns: Settings, tmp_path: Path) -> Iterator[System]:
    """A System whose loss checks draw every member of the expiry indexes (the test deletes a
    few row states: a default-sized sample finds them too, only after more checks)."""
    settings = learn_ns.model_copy(update={"loss_check_samples": 10_000})
    _start_at_end(settings)
    system = System(settings, tmp_path)
    yield system
    system.stop()


def _drop_live_row_states(settings: Settings, n: int) -> list[str]:
    """Delete ``n`` row states their index says must still exist, in one step."""
    client = redis.Redis.from_url(settings.redis_conninfo(), decode_responses=True)
    ns, group = settings.namespace, f"{settings.namespace}-features"
    marks = {
        int(p): int(v.partition(":")[0])
        for p, v in client.hgetall(f"{ns}:watermarks:{{{group}}}").items()
    }
    live = [
        key
        for p in range(settings.topic_partitions)
        for key, score in client.zrange(f"{ns}:expiry:{{{group}}}:{p}", 0, -1, withscores=True)
        if score > marks.get(p, 0) and ":r:{payments:" in key
    ]
    victims = live[:: max(1, len(live) // n)][:n]
    assert victims, "the workload wrote row states before the fault"
    client.delete(*victims)
    return victims


def test_row_states_lost_under_load_are_found_and_rebuilt(sampling_system: System) -> None:
    system = sampling_system
    system.start(serve=1)
    lost: list[list[str]] = []
    report = run_with_fault(
        system, lambda: lost.append(_drop_live_row_states(system.settings, 3)), seconds=12
    )
    assert len(lost[0]) == 3
    wait_for(lambda: "redis_state_partly_lost" in system.logs(), 60, "the loss to be found")
    logs = system.logs()
    rows = max(int(n) for n in re.findall(r"rows_expected=(\d+)", logs))
    wait_for(
        lambda: "redis_rebuild_finished" in system.logs(),
        max(180.0, rows / 1000),
        "the rebuild's incremental snapshot to finish",
    )
    logs = system.logs()
    assert "kind=row_state" in logs and "redis_state_dropped" in logs, logs[-3000:]
    system.check(report, wait_s=180)
    # every entity kind, sampled over the whole database (the rebuild re-read every row)
    s = system.settings
    store = FeatureStore.connect(s.redis_conninfo(), SAMPLE_FEATURES, s.namespace)
    whole = verify_until_clean(s.postgres_conninfo(), store, wait_s=120, sample=40)
    assert set(whole.by_entity) == set(SAMPLE_FEATURES.entities())
    assert all(n > 0 for n in whole.by_entity.values()), whole.by_entity
    assert whole.mismatches == [], whole.mismatches[:10]
