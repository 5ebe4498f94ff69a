"""The worked example of docs/own-schema.md end to end, through the real stack: tables of its
own (orders, deliveries), a connector, topics and a namespace of its own, features declared
over them (``own_schema``), the pipeline on the stream while rows are inserted, updated and
deleted, a feature added with plan / apply (backfilled), and verify: 0 mismatches."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from connectors import apply_connector
from feature_pipelines import FeaturePipeline, FeatureSet, FeatureStore, verify_until_clean
from feature_pipelines.backfill import apply_features, plan_features
from feature_pipelines.verify import verify
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics
from tests.feature_pipelines.own_schema import added_feature, create_tables, own_features
from tests.fixtures import drop_namespace, isolated_connector

pytestmark = pytest.mark.integration

__all__ = ["isolated_connector"]

_CUSTOMERS = range(1, 9)
_COURIERS = range(1, 5)


@dataclass
class Shop:
    settings: Settings
    orders: str
    deliveries: str
    conn: psycopg.Connection

    def order(self, rng: random.Random, minutes_ago: int = 0) -> int:
        row = self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (customer_id, store_id, amount, status, created_at) "
                "VALUES (%s, %s, %s, %s, now() - make_interval(mins => %s)) RETURNING order_id"
            ).format(sql.Identifier(self.orders)),
            (
                rng.choice(_CUSTOMERS),
                rng.randint(1, 5),
                f"{rng.randint(100, 9_999) / 100:.2f}",
                rng.choice(["placed", "placed", "cancelled"]),
                minutes_ago,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def deliver(self, rng: random.Random, order_id: int, minutes_ago: int = 0) -> int:
        row = self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (order_id, courier_id, late, delivered_at) "
                "VALUES (%s, %s, %s, now() - make_interval(mins => %s)) RETURNING delivery_id"
            ).format(sql.Identifier(self.deliveries)),
            (order_id, rng.choice(_COURIERS), rng.random() < 0.3, minutes_ago),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def write(self, rng: random.Random, rounds: int, pause_s: float = 0.0) -> dict[str, int]:
        """Inserts, updates (amount, status, store, lateness, courier) and deletes of both
        tables; the counts of each."""
        done = {"insert": 0, "update": 0, "delete": 0}
        orders: list[int] = []
        for _ in range(rounds):
            oid = self.order(rng, rng.choice([0, 0, 30, 90, 26 * 60]))
            orders.append(oid)
            self.deliver(rng, oid, rng.choice([0, 10, 70]))
            done["insert"] += 2
            if len(orders) > 3 and rng.random() < 0.5:
                self.conn.execute(
                    sql.SQL(
                        "UPDATE {} SET amount = amount + 1.25, status = %s, store_id = %s "
                        "WHERE order_id = %s"
                    ).format(sql.Identifier(self.orders)),
                    (rng.choice(["placed", "cancelled"]), rng.randint(1, 5), rng.choice(orders)),
                )
                self.conn.execute(
                    sql.SQL(
                        "UPDATE {} SET late = NOT late, courier_id = %s WHERE order_id = %s"
                    ).format(sql.Identifier(self.deliveries)),
                    (rng.choice(_COURIERS), rng.choice(orders)),
                )
                done["update"] += 2
            if len(orders) > 5 and rng.random() < 0.2:
                gone = orders.pop(rng.randrange(len(orders)))
                self.conn.execute(
                    sql.SQL("DELETE FROM {} WHERE order_id = %s").format(
                        sql.Identifier(self.deliveries)
                    ),
                    (gone,),
                )
                self.conn.execute(
                    sql.SQL("DELETE FROM {} WHERE order_id = %s").format(
                        sql.Identifier(self.orders)
                    ),
                    (gone,),
                )
                done["delete"] += 2
            time.sleep(pause_s)
        return done

    def verify(self, features: FeatureSet) -> None:
        s = self.settings
        store = FeatureStore.connect(s.redis_conninfo(), features, s.namespace)
        report = verify_until_clean(s.postgres_conninfo(), store, wait_s=60)
        assert report.by_entity.get("customer") and report.by_entity.get("courier"), report
        assert report.values_checked > 0
        assert report.mismatches == [], report.mismatches[:10]


@pytest.fixture
def shop(isolated_connector: Settings, pg: psycopg.Connection) -> Iterator[Shop]:
    """Tables of their own in the publication, captured by a connector of their own (its own
    topic prefix and slot), a namespace of their own."""
    tag = uuid.uuid4().hex[:8]
    orders, deliveries = f"orders_{tag}", f"deliveries_{tag}"
    settings = isolated_connector.model_copy(
        update={"redis_namespace": isolated_connector.topic_prefix, "metrics_port": 0}
    )
    for statement in create_tables(orders, deliveries):
        pg.execute(statement)
    idents = sql.SQL(", ").join(sql.Identifier(t) for t in (orders, deliveries))
    cdc = sql.Identifier(settings.cdc_user)
    pg.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(idents, cdc))
    pg.execute(
        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(settings.publication_name), idents
        )
    )
    try:
        yield Shop(settings, orders, deliveries, pg)
    finally:
        for table in (deliveries, orders):
            pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        for table in ("freshloop_feature_registry", "freshloop_feature_jobs"):
            pg.execute(
                sql.SQL("DELETE FROM {} WHERE namespace = %s").format(sql.Identifier(table)),
                (settings.namespace,),
            )
        drop_namespace(settings, settings.namespace)


def test_own_schema_definitions_stream_apply_and_verify(shop: Shop) -> None:
    s = shop.settings
    rng = random.Random(7)
    shop.write(rng, 12)  # rows before the connector: its initial snapshot reads them
    ensure_topics(
        s.kafka_bootstrap, [s.topic(shop.orders), s.topic(shop.deliveries)], s.topic_partitions
    )
    apply_connector(
        s, overrides={"table.include.list": f"public.{shop.orders},public.{shop.deliveries}"}
    )
    features = own_features(shop.orders, shop.deliveries)
    pipeline = FeaturePipeline(s, features, max_batch=200)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    try:
        written = shop.write(rng, 30, pause_s=0.02)  # while the pipeline streams
        assert written["update"] > 0 and written["delete"] > 0, written
        shop.verify(features)

        # a feature added to the running namespace: planned, then applied (backfilled) while
        # rows keep changing
        target = FeatureSet.of([*features, added_feature(shop.orders)])
        # not computed yet: the oracle has cancelled amounts the store does not (verify can fail)
        store = FeatureStore.connect(s.redis_conninfo(), target, s.namespace)
        before = verify(s.postgres_conninfo(), store)
        assert {m.feature for m in before.mismatches} == {"cancelled_amount_sum_24h"}
        plan, origin = plan_features(s, target)
        assert origin == "pipeline"  # the set the running pipeline recorded
        assert [c.name for c in plan.of("add")] == ["cancelled_amount_sum_24h"]
        assert not plan.of("change") and not plan.of("remove")
        more: list[dict[str, int]] = []
        writer = threading.Thread(
            target=lambda: more.append(shop.write(random.Random(8), 20, pause_s=0.05)),
            daemon=True,
        )
        writer.start()
        lines: list[str] = []
        report = apply_features(s, target, echo=lines.append, chunk_rows=20)
        writer.join(timeout=60)
        assert more and report.rows > 0, lines
        deadline = time.monotonic() + 10
        while pipeline.features != target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.features == target and worker.is_alive()
        shop.verify(target)
        again, origin = plan_features(s, target)
        assert again.empty and origin == "registry"
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
