"""Through the real Postgres, Kafka and Redis, on topics, a namespace and a group of the test's
own: the source's identity is recorded and checked at start, an event at an implausible position
is dead-lettered instead of freezing its row, a TRUNCATE is refused loudly, and Kafka offsets
past a recreated topic's end lead to the rebuild."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline
from feature_pipelines.cluster_read import store_for
from feature_pipelines.exceptions import SourceChangedError
from feature_pipelines.source import source_key
from freshloop.core.health import HEALTH
from freshloop.core.settings import Settings
from tests.feature_pipelines.fixtures import Db, amount, envelope, iso, moment, oracle
from tests.fixtures import drop_namespace
from tests.redis_layout import client_for, drop_keys

pytestmark = pytest.mark.integration

_TABLES = ("payments", "payment_outcomes")
_READ_AT = moment(600)


def _create(admin: AdminClient, topics: list[str]) -> None:
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        known = admin.list_topics(timeout=10).topics
        if all(t in known and known[t].partitions for t in topics):
            return
        time.sleep(0.2)


def _delete(admin: AdminClient, topics: list[str]) -> None:
    present = [t for t in topics if t in admin.list_topics(timeout=10).topics]
    if present:
        for future in admin.delete_topics(present).values():
            future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        t in admin.list_topics(timeout=10).topics for t in topics
    ):
        time.sleep(0.2)


@pytest.fixture
def own(stack_settings: Settings) -> Iterator[Settings]:
    """Settings with a topic prefix (its own change and dead-letter topics, one partition each)
    and a namespace of the test's own."""
    tag = f"src{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(
        update={"topic_prefix": tag, "redis_namespace": tag, "metrics_port": 0}
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [settings.topic(t) for t in _TABLES] + [f"{tag}.dead-letter"]
    _create(admin, topics)
    HEALTH.clear()
    yield settings
    HEALTH.clear()
    _delete(admin, topics)
    drop_keys(client_for(settings), f"{tag}:*")  # every primary of a cluster, key by key
    drop_namespace(settings, tag)


def _produce(settings: Settings, items: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for table, key, value in items:
        producer.produce(settings.topic(table), key=key, value=value)
    assert producer.flush(10) == 0


def _items(db: Db, start: int = 0) -> list[tuple[str, bytes | None, bytes | None]]:
    return [(table, key, value) for table, _pk, key, value in db.log[start:]]


def _run_until(
    settings: Settings,
    done: Callable[[FeaturePipeline], bool],
    prepare: Callable[[FeaturePipeline], None] | None = None,
    timeout: float = 60.0,
) -> FeaturePipeline:
    pipeline = FeaturePipeline(settings, max_batch=50)
    if prepare is not None:
        prepare(pipeline)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run()
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not failed and not done(pipeline):
            time.sleep(0.1)
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
    assert not failed, failed
    assert done(pipeline), "the pipeline did not get there in time"
    return pipeline


def _at(settings: Settings, table: str, offset: int) -> Callable[[FeaturePipeline], bool]:
    name = f"{settings.topic(table)}:0"
    return lambda pipeline: pipeline.writer.offsets().get(name, -1) >= offset


def _assert_oracle(settings: Settings, db: Db, customers: list[int]) -> None:
    store = store_for(settings, SAMPLE_FEATURES)
    expected = oracle(SAMPLE_FEATURES, db, _READ_AT)
    for customer in customers:
        got = store.get("customer", customer, at=_READ_AT).values
        assert got == expected[("customer", str(customer))], customer


def _pay(db: Db, pk: int, customer: int, cents: int, offset: int = 0) -> None:
    db.upsert_payment(
        pk,
        customer_id=customer,
        merchant_id=1,
        amount=amount(cents),
        status="approved",
        created_at=iso(moment(offset)),
    )


def _dead_letters(settings: Settings, count: int) -> list[dict]:
    topic = f"{settings.topic_prefix}.dead-letter"
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    reader.assign([TopicPartition(topic, 0, 0)])
    found: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(found) < count:
        for msg in reader.consume(100, timeout=0.5):
            if msg.error() is None:
                found.append({**dict(msg.headers() or []), "value": msg.value()})
    reader.close()
    return found


def _live_system_id(settings: Settings) -> str:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def _start_error(pipeline: FeaturePipeline, wait_s: float = 30.0) -> BaseException | None:
    """What ``run`` raised within ``wait_s`` (None: it ran on, and was stopped)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run()
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=wait_s)
    pipeline.stop.set()
    worker.join(timeout=30)
    return failed[0] if failed else None


def test_the_source_is_recorded_once_and_another_cluster_stops_the_start(own: Settings) -> None:
    db = Db()
    _pay(db, 1, 1, 1000)
    _produce(own, _items(db))
    _run_until(own, _at(own, "payments", 1))
    client = client_for(own)
    key = source_key(own.namespace, f"{own.namespace}-features")
    record = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    assert record["system_id"] == _live_system_id(own)
    assert record["slot"] == own.slot_name
    assert int(record["lsn"]) > 0  # the WAL position the source was seen at

    client.hset(key, "system_id", "1234")  # the positions came from another cluster
    error = _start_error(FeaturePipeline(own))
    assert isinstance(error, SourceChangedError), error
    text = str(error)
    assert "another Postgres cluster" in text and "1234" in text
    assert "freshloop features rebuild --reset-connector" in text
    assert any(d.dependency == "source" for d in HEALTH.problems())


def test_a_source_behind_the_positions_applied_stops_the_start(own: Settings) -> None:
    client = client_for(own)
    key = source_key(own.namespace, f"{own.namespace}-features")
    client.hset(
        key,
        mapping={
            "system_id": _live_system_id(own),
            "timeline": "1",
            "slot": own.slot_name,
            "lsn": str(2**62),  # applied further than the live database has ever written
        },
    )
    error = _start_error(FeaturePipeline(own))
    assert isinstance(error, SourceChangedError), error
    assert "the highest position already applied" in str(error)


def test_a_forged_position_is_dead_lettered_and_the_row_keeps_changing(own: Settings) -> None:
    db = Db()
    _pay(db, 1, 7, 1000)
    before = dict(db.payments[1])
    forged = envelope("payments", "u", before, {**before, "amount": amount(99_900)}, 2**62)
    _pay(db, 1, 7, 2500)  # a real later change: must not be dropped as a duplicate
    _pay(db, 2, 7, 300)
    items = _items(db)
    _produce(own, [items[0], ("payments", orjson.dumps({"payment_id": 1}), forged), *items[1:]])
    pipeline = _run_until(own, _at(own, "payments", 4))

    assert pipeline.stats.dead_lettered == 1
    _assert_oracle(own, db, [7])
    [letter] = _dead_letters(own, 1)
    assert letter["value"] == forged
    assert b"implausible source position" in letter["freshloop.reason"]
    assert b"beyond the source's current WAL position" in letter["freshloop.reason"]


def test_a_truncate_is_refused_loudly_and_reported_again_at_start(own: Settings) -> None:
    db = Db()
    _pay(db, 1, 8, 1000)
    truncate = envelope("payments", "t", None, None, 5000)
    _produce(own, [*_items(db), ("payments", None, truncate)])
    pipeline = _run_until(own, _at(own, "payments", 2))
    assert pipeline.stats.dead_lettered == 1
    [letter] = _dead_letters(own, 1)
    assert b"TRUNCATE of payments refused" in letter["freshloop.reason"]
    assert b"freshloop features rebuild" in letter["freshloop.reason"]
    [problem] = [d for d in HEALTH.problems() if d.dependency == "source"]
    assert "truncated" in problem.detail and "freshloop features rebuild" in problem.detail

    HEALTH.clear()  # a restarted process knows it from the record kept with the positions
    _run_until(own, lambda p: p.source.truncated is not None)
    assert any(d.dependency == "source" for d in HEALTH.problems())


def test_offsets_past_a_recreated_topic_lead_to_the_rebuild(
    own: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    db = Db()
    _pay(db, 1, 9, 1000)
    _pay(db, 2, 9, 2000, offset=30)
    _pay(db, 3, 9, 3000, offset=60)
    _produce(own, _items(db))
    _run_until(own, _at(own, "payments", 3))
    _assert_oracle(own, db, [9])

    # changes that reached a topic deleted before they were applied...
    _pay(db, 1, 9, 7700)
    db.delete_payment(2)
    admin = AdminClient({"bootstrap.servers": own.kafka_bootstrap})
    payments = own.topic("payments")
    _delete(admin, [payments])
    _create(admin, [payments])
    # ...and one made after it was recreated: the stored offset (3) is past its end (1)
    start = len(db.log)
    _pay(db, 4, 9, 400, offset=90)
    _produce(own, _items(db, start))

    def snapshot_on_signal(tables: list[str]) -> tuple[int, str]:
        # what Debezium does on the rebuild's signal, without snapshotting the shared tables:
        # every current row again, as op=r, after the signal
        mark = len(db.log)
        db.snapshot()
        _produce(own, _items(db, mark))
        return len(db.log) - mark, "test-signal"

    def prepare(pipeline: FeaturePipeline) -> None:
        pipeline.recovery._signal_snapshot = snapshot_on_signal  # type: ignore[method-assign]

    caplog.set_level(logging.ERROR, logger="feature_pipelines.consumer")
    pipeline = _run_until(own, _at(own, "payments", 4), prepare)  # 1 change + 3 rows re-read
    assert pipeline.recovery.rebuilds == 1
    assert "kafka_offsets_out_of_range" in caplog.text
    assert "rebuilding" in caplog.text
    _assert_oracle(own, db, [9])
