"""Kafka positions past a recreated topic's end take the loss path: the sentinel goes first and
the group's state is dropped only after the quiet period, in which the other consumers of the
group find the sentinel gone and stop writing (``recovery.RedisLossGuard.offsets_reset``).
Dropped at once inside the assignment callback, another consumer could still write a batch
over the dropped state, or drop the new one (issue #23, the offset reset)."""

from __future__ import annotations

import threading
import time

from confluent_kafka.admin import AdminClient
from redis.cluster import RedisCluster

from feature_pipelines import FeaturePipeline
from feature_pipelines.recovery import _QUIESCE_S
from freshloop.core.settings import Settings
from tests.feature_pipelines.fixtures import Db
from tests.feature_pipelines.test_source_stack import (
    _assert_oracle,
    _at,
    _create,
    _delete,
    _items,
    _pay,
    _produce,
    _run_until,
    own,
)
from tests.redis_layout import client_for, entity_key

__all__ = ["own"]


class _Watch:
    """Polls, every 10 ms, when the group's sentinel and when the namespace's entity hashes
    were first seen gone."""

    def __init__(self, settings: Settings, entities: list[str]) -> None:
        ns = settings.namespace
        self.client = client_for(settings)
        self.sentinel = f"{ns}:epoch:{{{ns}-features}}"  # one key in either layout
        self.entities = entities
        self.sentinel_gone: float | None = None
        self.state_gone: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set() and self.state_gone is None:
            now = time.monotonic()
            sentinel, entities = self._look()
            if not sentinel and self.sentinel_gone is None:
                self.sentinel_gone = now
            if not entities:
                self.state_gone = now
            time.sleep(0.01)

    def _look(self) -> tuple[int, int]:
        """Whether the sentinel exists, and how many of the entities do: in one transaction on
        one Redis; on a cluster (keys of many slots) the sentinel first, then the entities, so
        that state dropped while the sentinel was still there is seen as such."""
        if isinstance(self.client, RedisCluster):
            sentinel = self.client.exists(self.sentinel)
            return sentinel, self.client.exists(*self.entities)  # split by slot by the client
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self.sentinel)
        pipe.exists(*self.entities)
        sentinel, entities = pipe.execute()
        return sentinel, entities

    def __enter__(self) -> _Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.client.close()


def test_an_offset_reset_drops_the_state_only_after_the_quiet_period(own: Settings) -> None:
    db = Db()
    _pay(db, 1, 9, 1000)
    _pay(db, 2, 9, 2000, offset=30)
    _produce(own, _items(db))
    _run_until(own, _at(own, "payments", 2))
    entities = [entity_key(own, "customer", 9), entity_key(own, "merchant", 1)]
    assert client_for(own).exists(*entities) == 2

    # the payments topic recreated: the stored position (2) is past its new end (1)
    admin = AdminClient({"bootstrap.servers": own.kafka_bootstrap})
    payments = own.topic("payments")
    _delete(admin, [payments])
    _create(admin, [payments])
    start = len(db.log)
    _pay(db, 3, 9, 400, offset=90)
    _produce(own, _items(db, start))

    def snapshot_on_signal(tables: list[str]) -> tuple[int, str]:
        mark = len(db.log)
        db.snapshot()
        _produce(own, _items(db, mark))
        return len(db.log) - mark, "test-signal"

    def prepare(pipeline: FeaturePipeline) -> None:
        pipeline.recovery._signal_snapshot = snapshot_on_signal  # type: ignore[method-assign]

    with _Watch(own, entities) as watch:
        # 1 change + 3 rows re-read by the snapshot
        pipeline = _run_until(own, _at(own, "payments", 4), prepare)
    assert pipeline.recovery.rebuilds == 1
    assert watch.sentinel_gone is not None, "the sentinel never went before the state"
    assert watch.state_gone is not None, "the group's state was not dropped"
    quiet = watch.state_gone - watch.sentinel_gone
    assert quiet >= _QUIESCE_S - 0.5, f"state dropped {quiet:.2f} s after the sentinel"
    _assert_oracle(own, db, [9])
