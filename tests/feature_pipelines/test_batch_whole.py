"""A batch lands whole or not at all, against the real Redis (and Kafka for the dead letters).

A user feature summing an unconstrained ``numeric`` column can pass int64 units. The event that
would carry a field past int64 is dead-lettered with its reason, the rest of its batch lands,
nothing of the bad event is written (not even its row state), the offsets move past it, and a
re-run from Redis's positions changes nothing: the online values equal the oracle over the rows
that were not dead-lettered.

On a Redis Cluster the row states (and their checks) are written by the partition's control
step, the entity fields by the shards' steps after it: a refusal of a row state or a position
is handled as on one Redis, one found in an entity field stops the writer with the entry left
in the journal (docs/redis-cluster.md, What a refusal means).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

from feature_pipelines import Entity, Feature, FeaturePipeline, FeatureSet
from feature_pipelines.cluster_read import store_for
from feature_pipelines.cluster_write import ShardRejectedError
from feature_pipelines.exceptions import BatchRejectedError
from freshloop.core.settings import Settings
from tests.feature_pipelines.fixtures import T0, envelope, iso
from tests.fixtures import drop_namespace
from tests.redis_layout import client_for, drop_keys, entity_key, key_layout
from tests.system.fixtures import read_to_end

pytestmark = pytest.mark.integration

ACCOUNT = Entity("account", "account_id")
LEDGER = FeatureSet.of(
    [
        Feature("entries", ACCOUNT, "ledger", "created_at", "count"),
        Feature("total", ACCOUNT, "ledger", "created_at", "sum", "amount"),
        Feature(
            "total_1h", ACCOUNT, "ledger", "created_at", "sum", "amount", window=timedelta(hours=1)
        ),
    ]
)
BIG = "50000000000000000.00"  # 5e18 units (cents): two of them pass int64
TOO_BIG = "92233720368547758.08"  # 2^63 units: one contribution already past int64
LOWEST = "-92233720368547758.08"  # -2^63 units: exactly the lowest int64, still fits


class _Message:
    """What the pipeline reads of a Kafka message."""

    def __init__(self, offset: int, key: bytes, value: bytes) -> None:
        self._offset, self._key, self._value = offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "ledger"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class _Ledger:
    """Rows of the ledger table and their change events, with the final rows as the oracle's
    input."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}
        self.messages: list[_Message] = []
        self.lsn = 1000

    def change(self, pk: int, account: int | None = None, amount: str | None = None) -> int:
        """Insert (or update) row ``pk``; returns the message's offset."""
        before = self.rows.get(pk)
        after = {
            "id": pk,
            "account_id": account if account is not None else (before or {})["account_id"],
            "amount": amount,
            "created_at": iso(T0 + timedelta(seconds=pk)),
        }
        self.rows[pk] = after
        self.lsn += 8
        value = envelope("ledger", "u" if before else "c", before, after, self.lsn)
        offset = len(self.messages)
        self.messages.append(_Message(offset, orjson.dumps({"id": pk}), value))
        return offset

    def expected(self, dead: set[int]) -> dict[int, dict[str, object]]:
        """Per account: the features over every row but those whose changes were
        dead-lettered (``dead``: row ids)."""
        out: dict[int, dict[str, object]] = {}
        for pk, row in self.rows.items():
            if pk in dead:
                continue
            values = out.setdefault(
                row["account_id"],
                {"entries": 0, "total": Decimal("0.00"), "total_1h": Decimal("0.00")},
            )
            values["entries"] = int(values["entries"]) + 1  # type: ignore[call-overload]
            values["total"] = Decimal(values["total"]) + Decimal(row["amount"])  # type: ignore[arg-type]
            values["total_1h"] = values["total"]  # every row lies within the hour read
        return out


@pytest.fixture
def settings(stack_settings: Settings) -> Iterator[Settings]:
    tag = f"bw{uuid.uuid4().hex[:8]}"
    yield stack_settings.model_copy(
        update={"redis_namespace": tag, "topic_prefix": tag, "metrics_port": 0}
    )
    drop_keys(client_for(stack_settings), f"{tag}:*")  # every primary of a cluster, key by key
    drop_namespace(stack_settings, tag)
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    topic = f"{tag}.dead-letter"
    if topic in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


def _pipeline(settings: Settings) -> FeaturePipeline:
    return FeaturePipeline(settings, LEDGER, max_batch=1000)


def _values(settings: Settings, accounts: list[int]) -> dict[int, dict[str, object]]:
    store = store_for(settings, LEDGER)
    read = store.get_many("account", accounts, at=T0 + timedelta(minutes=5))
    return {int(f.key): dict(f.values) for f in read if f.found}


def _row_key(settings: Settings, pk: int) -> str:
    """The Redis key of a ledger row's state in the settings' layout (partition 0: the test's
    messages are all of partition 0)."""
    return key_layout(settings).row("ledger", str(pk), 0)


def _letters(settings: Settings) -> dict[int, str]:
    """Dead letters of the test's topic: row id -> reason."""
    out = {}
    for msg in read_to_end(settings, f"{settings.topic_prefix}.dead-letter"):
        headers = dict(msg.headers() or [])
        out[int(orjson.loads(msg.key() or b"{}")["id"])] = (
            headers["freshloop.reason"] or b""
        ).decode()
    return out


def _ledger() -> tuple[_Ledger, set[int]]:
    """Good rows around three that cannot land; returns the bad row ids."""
    ledger = _Ledger()
    ledger.change(1, 1, "1.00")
    ledger.change(2, 2, "2.00")
    ledger.change(3, 3, BIG)
    ledger.change(4, 1, "3.00")
    ledger.change(5, 3, BIG)  # account 3 would pass 2^63 - 1 units: dead-lettered
    ledger.change(6, 3, "4.00")
    ledger.change(7, 2, TOO_BIG)  # one contribution past int64: refused before the script
    ledger.change(8, 4, LOWEST)  # exactly -2^63: lands
    ledger.change(9, 4, "-0.01")  # one unit below -2^63: dead-lettered
    ledger.change(1, amount="1.50")  # an update of a good row
    ledger.change(10, 5, "7.00")
    return ledger, {5, 7, 9}


_ENTITY_REFUSAL = (
    "an entity field's refusal dead-letters the events behind it on one Redis; on a cluster it "
    "is found by a shard's step after the commit point and stops the writer"
)


@pytest.mark.single_redis(_ENTITY_REFUSAL)
def test_an_overflowing_event_is_dead_lettered_and_the_rest_of_its_batch_lands(
    settings: Settings,
) -> None:
    ledger, bad = _ledger()
    client = client_for(settings)
    first = _pipeline(settings)
    try:
        first.process(ledger.messages)
    except redis.ResponseError:
        pass  # a script that fails half-way: the process stops, as a crash would
    first.dead_letters.flush()
    first.consumer.close()
    # a restart: the pipeline goes on from the positions Redis holds
    again = _pipeline(settings)
    start = again.writer.offsets().get("ledger:0", 0)
    if start < len(ledger.messages):
        again.process(ledger.messages[start:])
    again.dead_letters.flush()
    again.consumer.close()
    accounts = sorted({row["account_id"] for row in ledger.rows.values()})
    assert _values(settings, accounts) == ledger.expected(bad)
    assert again.writer.offsets() == {"ledger:0": len(ledger.messages)}
    for pk in bad:  # nothing of a dead-lettered event is written
        assert not client.exists(_row_key(settings, pk))
    letters = _letters(settings)
    assert set(letters) == bad
    assert first.stats.dead_lettered == len(bad) == first.dead_letters.count
    assert "total" in letters[5] and "int64" in letters[5]
    assert "int64" in letters[7] and "amount" in letters[7]
    assert "int64" in letters[9]
    # a re-run of the whole batch (Kafka's offsets lost) changes nothing
    replay = _pipeline(settings)
    replay.writer.offsets_key = f"{settings.namespace}:offsets:{{replay}}"
    replay.process(ledger.messages)
    replay.consumer.close()
    assert _values(settings, accounts) == ledger.expected(bad)
    client.close()


@pytest.mark.single_redis("held batches (process(hold=True)) are of the single layout only")
def test_a_held_batch_that_overflows_is_written_without_the_event_and_the_next_replanned(
    settings: Settings,
) -> None:
    """The overflow is found when the write in flight answers (``process(hold=True)``): that
    batch is written again without the bad event and the batch planned over it is planned
    again, so the next batch builds on what really landed."""
    ledger, bad = _ledger()
    ledger.change(3, amount="5.00")  # row 3 (5e18 units) updated: account 3 is small again
    ledger.change(11, 3, BIG)
    ledger.change(5, 3, "6.00")  # the dead-lettered row changes: its first image counts now
    messages = ledger.messages
    pipeline = _pipeline(settings)
    try:
        pipeline.process(messages[:11], hold=True)
        pipeline.process(messages[11:13], hold=True)  # sends the first batch's write
        pipeline.process(messages[13:], hold=True)  # its answer: re-planned, the next too
        pipeline.flush_held()
        pipeline.dead_letters.flush()
    finally:
        pipeline.consumer.close()
    accounts = sorted({row["account_id"] for row in ledger.rows.values()})
    assert _values(settings, accounts) == ledger.expected(bad - {5})
    assert pipeline.writer.offsets() == {"ledger:0": len(messages)}
    assert set(_letters(settings)) == bad


@pytest.mark.single_redis(_ENTITY_REFUSAL)
def test_events_on_a_field_changed_outside_the_pipeline_are_dead_lettered(
    settings: Settings,
) -> None:
    """A field that holds no integer, or a row state that is no hash (written by something
    else), cannot be written: the events writing them are dead-lettered, the rest lands; a key
    of the pipeline's own (its offsets) of another type stops the pipeline with a sentence
    naming it."""
    ledger = _Ledger()
    ledger.change(1, 1, "1.00")
    ledger.change(2, 2, "2.00")
    ledger.change(3, 1, "3.00")
    ledger.change(5, 2, "5.00")
    client = client_for(settings)
    client.hset(entity_key(settings, "account", 1), "total", "12abc")
    client.set(_row_key(settings, 5), "not a hash")
    pipeline = _pipeline(settings)
    try:
        pipeline.process(ledger.messages[:4])
        letters = _letters(settings)
        assert set(letters) == {1, 3, 5}
        assert "not an integer" in letters[1] and "is a string, not a hash" in letters[5]
        assert _values(settings, [2]) == ledger.expected({1, 3, 5})
        assert pipeline.writer.offsets() == {"ledger:0": 4}
        assert client.get(_row_key(settings, 5)) == b"not a hash"
        client.delete(pipeline.writer.offsets_key)
        client.set(pipeline.writer.offsets_key, "not a hash")
        ledger.change(4, 2, "4.00")
        with pytest.raises(BatchRejectedError, match="offsets.*is a string, not a hash"):
            pipeline.process(ledger.messages[4:])
    finally:
        pipeline.consumer.close()
        client.delete(pipeline.writer.offsets_key)
        client.close()


def test_events_on_a_row_state_changed_outside_the_pipeline_are_dead_lettered(
    settings: Settings,
) -> None:
    """In either layout: a row state that is no hash is refused before anything of the batch
    is written (on a cluster by the partition's control step, the commit point), so the events
    writing it are dead-lettered and the rest lands; the pipeline's positions of another type
    stop it with a sentence naming them."""
    ledger = _Ledger()
    ledger.change(1, 1, "1.00")
    ledger.change(2, 2, "2.00")
    ledger.change(3, 1, "3.00")
    ledger.change(5, 2, "5.00")
    client = client_for(settings)
    client.set(_row_key(settings, 5), "not a hash")
    pipeline = _pipeline(settings)
    offsets = key_layout(settings, group=pipeline.group_id).offsets(0)  # partition 0's
    try:
        pipeline.process(ledger.messages[:4])
        letters = _letters(settings)
        assert set(letters) == {5}
        assert "is a string, not a hash" in letters[5]
        assert _values(settings, [1, 2]) == ledger.expected({5})
        assert pipeline.writer.offsets() == {"ledger:0": 4}
        assert client.get(_row_key(settings, 5)) == b"not a hash"
        client.delete(offsets)
        client.set(offsets, "not a hash")
        ledger.change(4, 2, "4.00")
        with pytest.raises(BatchRejectedError, match="offsets.*is a string, not a hash"):
            pipeline.process(ledger.messages[4:])
    finally:
        pipeline.consumer.close()
        client.delete(offsets)
        client.close()


def test_an_entity_field_refused_on_a_cluster_stops_the_writer_and_keeps_the_entry(
    settings: Settings, redis_cluster: Settings
) -> None:
    """On a Redis Cluster (in both runs) the overflows of ``_ledger`` (accounts 3 and 4) are
    found by their shards' steps, after the control step committed: the writer stops naming
    the key and the field, the entry stays in the partition's journal, the refused shards
    wrote none of it and the other shards applied their part."""
    cluster = settings.model_copy(
        update={"redis_layout": "cluster", "redis_url": redis_cluster.redis_url}
    )
    ledger, _bad = _ledger()
    client = client_for(cluster)
    pipeline = _pipeline(cluster)
    keys = key_layout(cluster, group=pipeline.group_id)
    field = keys.applied_field(0)
    refused = {keys.shard_of("account", a) for a in (3, 4)}
    try:
        with pytest.raises(ShardRejectedError, match=r"field total of .*account:[34].*int64"):
            pipeline.process(ledger.messages)
        assert client.hexists(keys.journal(0), "q1")  # committed, not acknowledged
        assert pipeline.writer.offsets() == {"ledger:0": len(ledger.messages)}
        for shard in refused:
            assert client.hget(keys.applied(shard), field) is None
        for account in (3, 4):
            assert not client.exists(keys.entity("account", account))
        others = {keys.shard_of("account", a) for a in (1, 2, 5)} - refused
        assert others  # (the shards of the five accounts are fixed: CRC-32)
        for shard in others:
            assert client.hget(keys.applied(shard), field) == b"1"
    finally:
        pipeline.consumer.close()
        drop_keys(client, f"{cluster.namespace}:*")
        client.close()
