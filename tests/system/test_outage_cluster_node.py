"""An outage of one Redis Cluster primary that loses its data under load (docs/redis-cluster.md,
"Expiry, loss and rebuild per slot"): the scoring pipeline runs on a cluster, and one primary
that does not hold the group's sentinel loses every key of the namespace (what a restart
without its files does to it; the cluster is shared by the session, so only this namespace's
keys go). The slot marks it held are found gone, the group's state is dropped on every primary
and rebuilt by an incremental snapshot, and the features end equal to the SQL oracle; the
learner finds its logged predictions on that primary gone (a sentinel per primary), puts them
back from the topic, and learns every outcome exactly once.

Its rebuild re-reads every row of the captured tables through the stack's connector: run it on
a stack of its own (``make faults`` with the FRESHLOOP_ settings of a private stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_pipelines.cluster_read import cluster_client
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_pipeline_stack import _start_at_end, drop_keys
from tests.system.fixtures import System, run_with_fault, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
def cluster_system(learn_ns: Settings, redis_cluster: Settings, tmp_path: Path) -> Iterator[System]:
    settings = learn_ns.model_copy(
        update={"redis_layout": "cluster", "redis_url": redis_cluster.redis_url}
    )
    _start_at_end(settings)
    system = System(settings, tmp_path)
    yield system
    system.stop()
    drop_keys(cluster_client(settings.redis_conninfo()), settings.namespace)


_RELOGGED = "logged predictions lost from redis"  # the learner's line when it puts them back


def _wipe_a_primary(settings: Settings) -> str:
    """Delete every key of the namespace on a primary other than the sentinel's; its name."""
    client = cluster_client(settings.redis_conninfo())
    ns = settings.namespace
    sentinel = client.get_node_from_key(f"{ns}:epoch:{{{ns}-features}}").name
    node = next(n for n in client.get_primaries() if n.name != sentinel)
    conn = node.redis_connection
    keys = list(conn.scan_iter(match=f"{ns}:*", count=1000))
    assert keys, "the workload wrote state on every primary"
    pipe = conn.pipeline(transaction=False)  # keys of many slots: a DEL each, one round trip
    for key in keys:
        pipe.delete(key)
    pipe.execute()
    return str(node.name)


def test_a_primary_losing_its_data_is_found_and_rebuilt(cluster_system: System) -> None:
    system = cluster_system
    system.start(serve=1, learner=True)
    wiped: list[str] = []
    relogs_before: list[int] = []

    def wipe() -> None:
        relogs_before.append(system.logs().count(_RELOGGED))
        wiped.append(_wipe_a_primary(system.settings))

    report = run_with_fault(system, wipe, seconds=12)
    wait_for(lambda: "kind=slot_state" in system.logs(), 60, "the lost slots to be found")
    logs = system.logs()
    rows = max(int(n) for n in re.findall(r"rows_expected=(\d+)", logs))
    wait_for(
        lambda: "redis_rebuild_finished" in system.logs(),
        max(180.0, rows / 1000),
        "the rebuild's incremental snapshot to finish",
    )
    logs = system.logs()
    assert wiped[0] in logs and "redis_state_dropped" in logs, logs[-3000:]
    system.assert_features_exact(report, wait_s=180)
    # the learner's logged predictions on that primary went too: its sentinel there is gone,
    # so they are put back from the predictions topic and every outcome still joins its own
    # (else those outcomes would wait for the horizon, hours away, and this would time out)
    system.assert_learned_exactly_once(report, wait_s=120)
    assert system.logs().count(_RELOGGED) > relogs_before[0]
