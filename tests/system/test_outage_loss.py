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

from feature_pipelines import SAMPLE_FEATURES, verify_until_clean
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_pipeline_stack import _start_at_end
from tests.redis_layout import client_for, key_layout
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


def _table_of(settings: Settings, row_key: str) -> str:
    """The table of a row state's key, in either layout (``<ns>:r:{<table>:<pk>}`` or
    ``<ns>:r:{<ns>/p<p>}:<table>:<pk>``)."""
    rest = row_key[len(f"{settings.namespace}:r:") :]
    if settings.redis_layout == "cluster":
        rest = rest.split("}:", 1)[1]
    return rest.lstrip("{").split(":", 1)[0]


def _drop_live_row_states(settings: Settings, n: int) -> list[str]:
    """Delete ``n`` row states their index says must still exist (one step on one Redis; on a
    cluster, where they live in the slots of several partitions, one DEL each)."""
    client = client_for(settings, "writer", decode_responses=True)
    keys = key_layout(settings, group=f"{settings.namespace}-features")
    partitions = range(settings.topic_partitions)
    marks = {
        int(p): int(v.partition(":")[0])
        for key in sorted({keys.watermarks(p) for p in partitions})
        for p, v in client.hgetall(key).items()
    }
    live = [
        key
        for p in partitions
        for key, score in client.zrange(keys.expiry(p), 0, -1, withscores=True)
        if score > marks.get(p, 0) and _table_of(settings, key) == "payments"
    ]
    victims = live[:: max(1, len(live) // n)][:n]
    assert victims, "the workload wrote row states before the fault"
    if settings.redis_layout == "cluster":
        for victim in victims:
            assert client.delete(victim) == 1
    else:
        assert client.delete(*victims) == len(victims)
    client.close()
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
    store = store_for(s, SAMPLE_FEATURES)  # one Redis or a Redis Cluster
    whole = verify_until_clean(s.postgres_conninfo(), store, wait_s=120, sample=40)
    assert set(whole.by_entity) == set(SAMPLE_FEATURES.entities())
    assert all(n > 0 for n in whole.by_entity.values()), whole.by_entity
    assert whole.mismatches == [], whole.mismatches[:10]
