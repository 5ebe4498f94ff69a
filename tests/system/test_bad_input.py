"""Bad input through the real stack, on a probe table of its own captured by a connector of its
own: malformed JSON, wrong types, an unknown table, NULLs, a missing key, unicode, a large row,
and columns added, dropped and retyped while the pipeline runs. Each bad event is dead-lettered
with its reason (or counted as skipped), the pipeline keeps going, and everything good ends
equal to the SQL oracle.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from connectors import apply_connector
from feature_pipelines import (
    Entity,
    Feature,
    FeaturePipeline,
    FeatureSet,
    verify_until_clean,
)
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics
from tests.fixtures import isolated_connector
from tests.system.fixtures import read_to_end

pytestmark = pytest.mark.integration

__all__ = ["isolated_connector"]

OWNER = Entity("owner", "owner_id")


def probe_features(table: str) -> FeatureSet:
    return FeatureSet.of(
        [
            Feature("rows", OWNER, table, "created_at", "count"),
            Feature("amount_sum", OWNER, table, "created_at", "sum", "amount"),
            Feature("notes", OWNER, table, "created_at", "distinct", "note"),
            Feature("rows_1h", OWNER, table, "created_at", "count", window=timedelta(hours=1)),
        ]
    )


@dataclass
class Probe:
    settings: Settings
    table: str
    features: FeatureSet
    pipeline: FeaturePipeline
    conn: psycopg.Connection

    @property
    def topic(self) -> str:
        return self.settings.topic(self.table)

    def sql(self, text: str, *params: object) -> None:
        self.conn.execute(sql.SQL(text).format(t=sql.Identifier(self.table)), params or None)

    def insert(self, owner: int, amount: str, note: str | None) -> int:
        row = self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (owner_id, amount, note) VALUES (%s, %s, %s) RETURNING id"
            ).format(sql.Identifier(self.table)),
            (owner, amount, note),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def assert_exact(self, owners: list[int]) -> None:
        store = store_for(self.settings, self.features)  # one Redis or a Redis Cluster
        report = verify_until_clean(
            self.settings.postgres_conninfo(), store, wait_s=60, only={"owner": owners}
        )
        assert report.values_checked > 0
        assert report.mismatches == [], report.mismatches[:10]

    def wait_dead(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while self.pipeline.stats.dead_lettered < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.pipeline.stats.dead_lettered == n

    def dead_letters(self) -> list[dict[str, bytes | None]]:
        records = read_to_end(self.settings, f"{self.settings.topic_prefix}.dead-letter")
        return [{**dict(m.headers() or []), "key": m.key(), "value": m.value()} for m in records]


@pytest.fixture
def probe(isolated_connector: Settings, pg: psycopg.Connection) -> Iterator[Probe]:
    """A captured table of its own, its own connector and topics, a pipeline on it."""
    table = f"probe_{uuid.uuid4().hex[:8]}"
    settings = isolated_connector.model_copy(
        update={"redis_namespace": isolated_connector.topic_prefix, "metrics_port": 0}
    )
    ident = sql.Identifier(table)
    pg.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "owner_id bigint, amount numeric(12,2), note text, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident)
    )
    pg.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(ident))
    pg.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident, sql.Identifier(settings.cdc_user)))
    pg.execute(
        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(settings.publication_name), ident
        )
    )
    ensure_topics(settings.kafka_bootstrap, [settings.topic(table)], settings.topic_partitions)
    apply_connector(settings, tables=[table])
    features = probe_features(table)
    pipeline = FeaturePipeline(settings, features, max_batch=200)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    try:
        yield Probe(settings, table, features, pipeline, pg)
        assert worker.is_alive(), "the pipeline stopped on bad input"
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
        pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))


def _envelope(table: str, after: dict | None, lsn: int, op: str = "c") -> bytes:
    return orjson.dumps(
        {
            "before": None,
            "after": after,
            "op": op,
            "ts_ms": int(time.time() * 1000),
            "source": {"table": table, "lsn": lsn, "ts_ms": int(time.time() * 1000)},
        }
    )


def test_bad_records_are_dead_lettered_counted_and_the_rest_is_exact(probe: Probe) -> None:
    good = [
        ("plain", "1.00"),
        ("unicode: grüße, naïve, 日本語, emoji 🚀, rtl שלום", "2.50"),
        ("nul-free control chars \t\r\n and quotes \"'\\", "3.25"),
        ("x" * 300_000, "4.00"),  # a large row (~300 KB; see README for the size limit)
        (None, "5.00"),  # NULL where a feature reads a value: contributes nothing, as in SQL
    ]
    for i, (note, amount) in enumerate(good):
        probe.insert(901 + i % 2, amount, note)
    probe.assert_exact([901, 902])

    row = {
        "id": -1,
        "owner_id": 903,
        "amount": "1.00",
        "note": "n",
        "created_at": "2026-11-28T12:00:00Z",
    }
    bad: list[tuple[bytes | None, bytes]] = [
        (b'{"id":-1}', b"{not json"),
        (b'{"id":-2}', _envelope(probe.table, {**row, "id": -2, "amount": {"cents": 5}}, 11)),
        (b'{"id":-3}', _envelope(probe.table, {**row, "id": -3, "owner_id": [903]}, 12)),
        (b'{"id":-4}', _envelope(probe.table, {**row, "id": -4, "created_at": "yesterday"}, 13)),
        (b'{"id":-5}', _envelope(probe.table, {**row, "id": -5}, 14, op="x")),
        (None, _envelope(probe.table, {**row, "id": -6}, 15)),  # no key
        (b'{"id":-7}', _envelope(probe.table, {"id": -7, "owner_id": 903}, 16)),  # columns gone
    ]
    producer = Producer({"bootstrap.servers": probe.settings.kafka_bootstrap})
    for key, value in bad:
        producer.produce(probe.topic, key=key, value=value)
    # an unknown table on the topic: not dead-lettered, counted as skipped
    producer.produce(probe.topic, key=b'{"id":-8}', value=_envelope("no_such_table", row, 17))
    # NULL owner in a well-formed event: applied, contributes nothing
    producer.produce(
        probe.topic,
        key=b'{"id":-9}',
        value=_envelope(probe.table, {**row, "id": -9, "owner_id": None}, 18),
    )
    producer.flush(10)
    probe.wait_dead(len(bad))
    for i in range(10):  # the service kept going
        probe.insert(901 + i % 2, f"{i}.10", f"after-{i}")
    probe.assert_exact([901, 902])
    assert probe.pipeline.stats.skipped >= 1

    letters = probe.dead_letters()
    assert len(letters) == len(bad) == probe.pipeline.stats.dead_lettered
    reasons = {letter["key"]: (letter["freshloop.reason"] or b"").decode() for letter in letters}
    assert "not JSON" in reasons[b'{"id":-1}']
    assert "amount" in reasons[b'{"id":-2}']
    assert "owner_id" in reasons[b'{"id":-3}']
    assert "created_at" in reasons[b'{"id":-4}']
    assert "op 'x'" in reasons[b'{"id":-5}']
    assert "no key" in reasons[None]
    assert "lacks needed column" in reasons[b'{"id":-7}']
    originals = {letter["key"]: letter["value"] for letter in letters}
    assert originals[b'{"id":-1}'] == b"{not json"  # the original bytes are kept


def test_columns_added_dropped_and_retyped_while_running(probe: Probe) -> None:
    owners = [911, 912]
    for i in range(6):
        probe.insert(owners[i % 2], f"{i}.00", f"n{i}")
    probe.assert_exact(owners)

    probe.sql("ALTER TABLE {t} ADD COLUMN extra jsonb")
    probe.sql("INSERT INTO {t} (owner_id, amount, note, extra) VALUES (911, 7.00, 'e', '{{}}')")
    probe.sql("ALTER TABLE {t} ADD COLUMN unused text")
    probe.sql("ALTER TABLE {t} DROP COLUMN unused")
    probe.insert(912, "8.00", "after drop of an unused column")
    probe.assert_exact(owners)
    assert probe.pipeline.stats.dead_lettered == 0

    # retyped to text: values that are no amount are dead-lettered, on insert and on delete
    probe.sql("ALTER TABLE {t} ALTER COLUMN amount TYPE text")
    bad_ids = [probe.insert(911, "abc", "bad amount"), probe.insert(912, "1,5", "bad amount")]
    probe.insert(911, "1.50", "still an amount")
    probe.wait_dead(2)
    probe.conn.execute(
        sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(sql.Identifier(probe.table)),
        (bad_ids,),
    )
    probe.wait_dead(4)
    probe.sql("ALTER TABLE {t} ALTER COLUMN amount TYPE numeric(12,2) USING amount::numeric")
    probe.insert(912, "2.25", "numeric again")
    probe.assert_exact(owners)

    # a column a feature needs is dropped: every later change is dead-lettered, counted
    probe.sql("ALTER TABLE {t} DROP COLUMN note")
    for _ in range(3):
        probe.sql("INSERT INTO {t} (owner_id, amount) VALUES (911, 1.00)")
    probe.wait_dead(7)
    letters = probe.dead_letters()
    assert (
        sum(
            "lacks needed column(s) note" in (m["freshloop.reason"] or b"").decode()
            for m in letters
        )
        == 3
    )
