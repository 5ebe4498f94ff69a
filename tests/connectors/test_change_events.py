"""Through the real stack: a payment's insert, update and delete arrive as Debezium events."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from freshloop.core.settings import Settings

pytestmark = pytest.mark.integration


def _new_payment(pg: psycopg.Connection, amount: str) -> tuple[int, int, int]:
    customer = pg.execute(
        "INSERT INTO customers (email, country) VALUES ('e2e@example.com', 'DE') "
        "RETURNING customer_id"
    ).fetchone()[0]  # type: ignore[index]
    merchant = pg.execute(
        "INSERT INTO merchants (name, category, country) VALUES ('e2e', 'food', 'DE') "
        "RETURNING merchant_id"
    ).fetchone()[0]  # type: ignore[index]
    payment = pg.execute(
        "INSERT INTO payments (customer_id, merchant_id, amount, channel, status) "
        "VALUES (%s, %s, %s, 'web', 'pending') RETURNING payment_id",
        (customer, merchant, Decimal(amount)),
    ).fetchone()[0]  # type: ignore[index]
    return customer, merchant, payment


def test_insert_update_delete_arrive_in_order_with_exact_amounts(
    pipeline: Settings, pg: psycopg.Connection, topic_reader
) -> None:
    reader = topic_reader([pipeline.topic("payments")])
    _, _, payment = _new_payment(pg, "12345678.91")
    pg.execute(
        "UPDATE payments SET amount = 0.10, status = 'approved' WHERE payment_id = %s", (payment,)
    )
    pg.execute("DELETE FROM payments WHERE payment_id = %s", (payment,))

    def mine(records):
        return [r for r in records if r["key"] == {"payment_id": payment}]

    records = mine(reader.read_until(lambda rs: len(mine(rs)) >= 4))
    assert [r["value"]["op"] if r["value"] else None for r in records] == ["c", "u", "d", None]
    created, updated, deleted, _tombstone = (r["value"] for r in records)

    assert created["before"] is None
    assert created["after"]["amount"] == "12345678.91"  # exact, as text: no float on the way
    assert created["after"]["status"] == "pending"
    assert updated["before"]["amount"] == "12345678.91"  # REPLICA IDENTITY FULL: old row
    assert updated["after"]["amount"] == "0.10"
    assert updated["after"]["status"] == "approved"
    assert deleted["before"]["amount"] == "0.10"
    assert deleted["after"] is None
    source = created["source"]
    assert source["table"] == "payments" and source["schema"] == "public"
    assert source["lsn"] < updated["source"]["lsn"] < deleted["source"]["lsn"]
    assert created["after"]["created_at"].endswith("Z")  # timestamptz as ISO UTC text


def test_outcome_events_share_the_payment_key_and_partition(
    pipeline: Settings, pg: psycopg.Connection, topic_reader
) -> None:
    """Co-partitioning: a payment and its outcome land in the same partition number."""
    from confluent_kafka import Consumer

    reader = topic_reader([pipeline.topic("payments"), pipeline.topic("payment_outcomes")])
    _, _, payment = _new_payment(pg, "5.00")
    pg.execute("INSERT INTO payment_outcomes (payment_id, is_fraud) VALUES (%s, true)", (payment,))
    records = reader.read_until(
        lambda rs: (
            {r["topic"] for r in rs if r["key"] == {"payment_id": payment}}
            == {pipeline.topic("payments"), pipeline.topic("payment_outcomes")}
        )
    )
    outcome = next(r for r in records if r["topic"].endswith("payment_outcomes"))
    assert outcome["value"]["after"]["is_fraud"] is True

    probe = Consumer({"bootstrap.servers": pipeline.kafka_bootstrap, "group.id": "probe"})
    meta = probe.list_topics(timeout=10).topics
    probe.close()
    counts = {len(meta[pipeline.topic(t)].partitions) for t in ("payments", "payment_outcomes")}
    assert counts == {pipeline.topic_partitions}
