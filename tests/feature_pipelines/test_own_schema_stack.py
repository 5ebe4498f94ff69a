"""The worked example of docs/own-schema.md end to end, through the real stack: tables of its
own (orders, deliveries), a connector, topics and a namespace of its own, features declared
over them (``own_schema``) and named by FRESHLOOP_FEATURE_DEFINITIONS, the capture derived from
them (``db init`` publishes and grants the tables, the connector's include list), the pipeline
as ``freshloop features run --definitions ...`` on the stream while rows are inserted, updated
and deleted, a feature added with plan / apply (backfilled), and verify: 0 mismatches."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from connectors import apply_connector
from feature_pipelines import FeatureSet, verify_until_clean
from feature_pipelines.backfill import apply_features, plan_features
from feature_pipelines.cluster_read import store_for
from feature_pipelines.definitions import feature_set, tables_to_capture
from feature_pipelines.verify import verify
from freshloop.core.db import init_database
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics
from tests.feature_pipelines.own_schema import create_tables
from tests.fixtures import drop_namespace, isolated_connector
from tests.redis_layout import client_for, drop_keys, scan_keys

pytestmark = pytest.mark.integration

__all__ = ["isolated_connector"]

_CUSTOMERS = range(1, 9)
_COURIERS = range(1, 5)
_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Shop:
    settings: Settings  # FRESHLOOP_FEATURE_DEFINITIONS: <module>:FEATURES
    orders: str
    deliveries: str
    conn: psycopg.Connection
    module: str  # the definitions' module: own_schema's, over this test's table names
    folder: Path  # where it lives (on the path of this process and of the pipeline's)

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
        store = store_for(s, features)
        report = verify_until_clean(s.postgres_conninfo(), store, wait_s=60)
        assert report.by_entity.get("customer") and report.by_entity.get("courier"), report
        assert report.values_checked > 0
        assert report.mismatches == [], report.mismatches[:10]


@pytest.fixture
def shop(
    isolated_connector: Settings,
    pg: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Shop]:
    """Tables of their own, a module declaring own_schema's features over them (named by the
    settings), a connector of their own (its own topic prefix and slot), a namespace of its
    own."""
    tag = uuid.uuid4().hex[:8]
    orders, deliveries = f"orders_{tag}", f"deliveries_{tag}"
    module = f"own_schema_{tag}"
    (tmp_path / f"{module}.py").write_text(
        "from feature_pipelines import FeatureSet\n"
        "from tests.feature_pipelines.own_schema import added_feature, own_features\n\n"
        f"FEATURES = own_features({orders!r}, {deliveries!r})\n"
        f"FEATURES_WITH_CANCELLED = FeatureSet.of([*FEATURES, added_feature({orders!r})])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = isolated_connector.model_copy(
        update={
            "redis_namespace": isolated_connector.topic_prefix,
            "metrics_port": 0,
            "feature_definitions": f"{module}:FEATURES",
        }
    )
    for statement in create_tables(orders, deliveries):
        pg.execute(statement)
    try:
        yield Shop(settings, orders, deliveries, pg, module, tmp_path)
    finally:
        for table in (deliveries, orders):  # leaves the publication with it
            pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        for table in ("freshloop_feature_registry", "freshloop_feature_jobs"):
            pg.execute(
                sql.SQL("DELETE FROM {} WHERE namespace = %s").format(sql.Identifier(table)),
                (settings.namespace,),
            )
        drop_keys(client_for(settings), f"{settings.namespace}:*")  # every primary, key by key
        drop_namespace(settings, settings.namespace)
        sys.modules.pop(module, None)


def _features_run(shop: Shop, definitions: str, log: Path) -> subprocess.Popen[bytes]:
    """``freshloop features run --definitions ...`` in a process of its own."""
    env = shop.settings.environment(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(shop.folder), str(_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 (this interpreter and module, fixed arguments)
            [sys.executable, "-m", "freshloop.app.cli", "features", "run"]
            + ["--definitions", definitions],
            env=env,
            cwd=_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _verify(shop: Shop, features: FeatureSet, proc: subprocess.Popen[bytes], log: Path) -> None:
    """0 mismatches, and the pipeline process still runs; else its output is in the failure."""
    try:
        shop.verify(features)
        assert proc.poll() is None
    except AssertionError as exc:
        tail = log.read_text()[-4000:]
        msg = f"{exc}\n--- features run (exit code {proc.poll()}), its last output:\n{tail}"
        raise AssertionError(msg) from exc


@pytest.mark.single_redis(
    "its lookup crosses partitions (deliveries keyed by delivery_id join orders by order_id): "
    "a cluster refuses it at start (test_a_lookup_across_partitions_is_refused_on_a_cluster)"
)
def test_own_schema_definitions_stream_apply_and_verify(shop: Shop) -> None:
    s = shop.settings
    rng = random.Random(7)
    shop.write(rng, 12)  # rows before the connector: its initial snapshot reads them
    # the capture follows the definitions in use: their tables and the learning loop's
    tables = tables_to_capture(s)
    assert set(tables) == {shop.orders, shop.deliveries, "payments", "payment_outcomes"}
    init_database(s, capture=tables)  # 'freshloop db init': publication and grants
    published = {
        r[0]
        for r in shop.conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s",
            (s.publication_name,),
        )
    }
    assert set(tables) <= published
    features = feature_set(s)
    # the pipeline starts while the connector is applied (its topics first: it subscribes)
    ensure_topics(s.kafka_bootstrap, [s.topic(t) for t in features.tables()], s.topic_partitions)
    log = shop.folder / "features-run.log"
    proc = _features_run(shop, f"{shop.module}:FEATURES", log)
    # 'freshloop connectors apply'; the rows the learning tables hold already (other tests')
    # are not this test's: only its own tables are snapshotted
    own = ",".join(f"public.{t}" for t in (shop.orders, shop.deliveries))
    try:
        applied = apply_connector(
            s, tables=tables, overrides={"snapshot.include.collection.list": own}
        )
        assert applied.state == "RUNNING"
        written = shop.write(rng, 30, pause_s=0.02)  # while the pipeline streams
        assert written["update"] > 0 and written["delete"] > 0, written
        _verify(shop, features, proc, log)

        # a feature added to the running namespace: planned, then applied (backfilled) while
        # rows keep changing
        target = feature_set(s, f"{shop.module}:FEATURES_WITH_CANCELLED")
        assert {f.name for f in target} - {f.name for f in features} == {"cancelled_amount_sum_24h"}
        # not computed yet: the oracle has cancelled amounts the store does not (verify can fail)
        store = store_for(s, target)
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
        shop.write(random.Random(9), 5)  # computed by the switched pipeline from the stream
        _verify(shop, target, proc, log)
        again, origin = plan_features(s, target)
        assert again.empty and origin == "registry"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text()
    assert "[features] stopped" in log.read_text()


def test_a_lookup_across_partitions_is_refused_on_a_cluster(
    shop: Shop, redis_cluster: Settings
) -> None:
    """On a Redis Cluster the same definitions stop ``features run`` at start with a sentence
    naming the lookup and both tables' keys, before anything is written: row states live per
    partition slot there, so a join of tables keyed differently would count on the wrong rows
    (on one Redis they are shared, and the test above verifies it exact)."""
    s = shop.settings.model_copy(
        update={"redis_layout": "cluster", "redis_url": redis_cluster.redis_url}
    )
    features = feature_set(shop.settings)
    ensure_topics(s.kafka_bootstrap, [s.topic(t) for t in features.tables()], s.topic_partitions)
    log = shop.folder / "features-run-cluster.log"
    proc = _features_run(dataclasses.replace(shop, settings=s), f"{shop.module}:FEATURES", log)
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert code != 0, out[-2000:]
    assert f"joins {shop.deliveries}.order_id to {shop.orders}.order_id" in out, out[-2000:]
    assert "keyed by (delivery_id)" in out and "FRESHLOOP_REDIS_LAYOUT=single" in out
    client = client_for(s)
    try:  # refused before the group's first positions: nothing of the namespace was written
        assert scan_keys(client, f"{s.namespace}:*") == []
    finally:
        client.close()
