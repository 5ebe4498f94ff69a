"""Positions per source row: duplicates, stale replays, snapshots, and racing consumers."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.planner import Planner
from feature_pipelines.reference import MemoryStore
from tests.feature_pipelines.fixtures import iso
from tests.feature_pipelines.harness import NS, Log, Pipeline, decode_all

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _payment(pk: int, customer: int = 7, amount: str = "1.00", status: str = "approved") -> dict:
    return {
        "payment_id": pk,
        "customer_id": customer,
        "merchant_id": 3,
        "amount": amount,
        "status": status,
        "created_at": iso(T),
    }


def _lifetime(pipe: Pipeline, customer: int = 7) -> tuple:
    v = pipe.values("customer", customer, T)
    return v["payment_count_lifetime"], str(v["amount_sum_lifetime"])


def test_snapshot_read_applies_only_to_a_row_without_position() -> None:
    log, pipe = Log(), Pipeline(SAMPLE_FEATURES)
    created = log.emit("payments", "c", {"payment_id": 1}, None, _payment(1))
    snap = log.emit("payments", "r", {"payment_id": 1}, None, _payment(1))
    plan = pipe.feed([created, snap], batch=2)
    assert (plan.applied, plan.duplicates) == (1, 1)
    assert _lifetime(pipe) == (1, "1.00")


def test_a_resnapshot_after_state_loss_counts_once_more() -> None:
    log = Log()
    history = [
        log.emit("payments", "c", {"payment_id": 1}, None, _payment(1)),
        log.emit("payments", "u", {"payment_id": 1}, _payment(1), _payment(1, amount="2.00")),
        log.emit("payments", "c", {"payment_id": 2}, None, _payment(2)),
        log.emit("payments", "d", {"payment_id": 2}, _payment(2), None),
    ]
    resnapshot = [log.emit("payments", "r", {"payment_id": 1}, None, _payment(1, amount="2.00"))]
    live = Pipeline(SAMPLE_FEATURES)
    live.feed(history + resnapshot)
    assert _lifetime(live) == (1, "2.00")  # the snapshot read of a known row is dropped
    rebuilt = Pipeline(SAMPLE_FEATURES)  # Redis lost: only the snapshot is consumed
    rebuilt.feed(resnapshot)
    assert _lifetime(rebuilt) == (1, "2.00")
    assert rebuilt.feature_fields("customer", 7) == live.feature_fields("customer", 7)


def test_stale_and_replayed_changes_are_dropped_and_counted() -> None:
    log, pipe = Log(), Pipeline(SAMPLE_FEATURES)
    c = log.emit("payments", "c", {"payment_id": 1}, None, _payment(1))
    u1 = log.emit("payments", "u", {"payment_id": 1}, _payment(1), _payment(1, amount="3.00"))
    u2 = log.emit(
        "payments", "u", {"payment_id": 1}, _payment(1, amount="3.00"), _payment(1, amount="4.00")
    )
    first = pipe.feed([c, u1, c, u1, u2], batch=5)
    assert (first.applied, first.duplicates) == (3, 2)
    again = pipe.feed([u1, u2, c], batch=3)
    assert (again.applied, again.duplicates, again.increments) == (0, 3, {})
    assert _lifetime(pipe) == (1, "4.00")


def test_changes_of_one_row_in_one_batch_apply_in_order() -> None:
    log = Log()
    items = [log.emit("payments", "c", {"payment_id": 1}, None, _payment(1))]
    states = [_payment(1, customer=8, status="declined"), _payment(1, customer=9, amount="6.50")]
    prev = _payment(1)
    for row in states:
        items.append(log.emit("payments", "u", {"payment_id": 1}, prev, row))
        prev = row
    one_by_one, batched = Pipeline(SAMPLE_FEATURES), Pipeline(SAMPLE_FEATURES)
    one_by_one.feed(items, batch=1)
    batched.feed(items, batch=len(items))
    for customer in (7, 8, 9):
        assert batched.values("customer", customer, T) == one_by_one.values("customer", customer, T)
        assert batched.feature_fields("customer", customer) == one_by_one.feature_fields(
            "customer", customer
        )
    assert _lifetime(batched, 9) == (1, "6.50") and _lifetime(batched, 7) == (0, "0.00")


def _random_history(rng: random.Random, n: int) -> Log:
    log, rows = Log(), {}
    for _ in range(n):
        pk = rng.randint(1, 4)
        kind = rng.choice("cud") if pk in rows else "c"
        key = {"payment_id": pk}
        if kind == "d":
            log.emit("payments", "d", key, rows.pop(pk), None)
            continue
        row = _payment(pk, rng.randint(1, 2), f"{rng.randint(0, 999) / 100:.2f}")
        log.emit("payments", "u" if kind == "u" else "c", key, rows.get(pk), row)
        rows[pk] = row
    return log


def _race(log: Log, rng: random.Random, realistic: bool) -> MemoryStore:
    """Consumer A works from the start; B joins (a rebalance) at an offset no later than what A
    has written (``realistic``: B seeks to the offsets stored with the features) or anywhere.
    Both then read, plan and write in any interleaving; refused writes are re-planned."""
    events = decode_all(SAMPLE_FEATURES, log.items)
    store, planner = MemoryStore(), Planner(SAMPLE_FEATURES, NS)
    size = 3
    a = [events[i : i + size] for i in range(0, len(events), size)]
    written = 0
    for _ in range(rng.randint(0, len(a))):  # A alone for a while
        chunk = a.pop(0)
        assert store.apply(planner.plan(chunk, store.read(planner.keys_needed(chunk))))
        written += len(chunk)
    start = rng.randint(0, written if realistic else len(events))
    b = [events[i : i + size] for i in range(start, len(events), size)]
    pending = [a[: rng.randint(0, len(a))], b]  # A is a zombie: it stops at some point
    while any(pending):
        consumers = [i for i in (0, 1) if pending[i]]
        plans = {}
        for i in consumers:  # both read before either writes
            chunk = pending[i][0]
            plans[i] = planner.plan(chunk, store.read(planner.keys_needed(chunk)))
        for i in rng.sample(consumers, len(consumers)):
            if store.apply(plans[i]):
                pending[i].pop(0)
    return store


def _assert_same_as_one_consumer(store: MemoryStore, log: Log) -> None:
    want = Pipeline(SAMPLE_FEATURES)
    want.feed(log.items)
    for customer in (1, 2):
        got = store.hashes.get(f"{NS}:e:{{customer:{customer}}}", {})
        assert {k: v for k, v in got.items() if k[0] != "_"} == want.feature_fields(
            "customer", customer
        )


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 25))
def test_racing_consumers_apply_every_change_exactly_once(seed: int, n: int) -> None:
    rng = random.Random(seed)
    log = _random_history(rng, n)
    _assert_same_as_one_consumer(_race(log, rng, realistic=True), log)


def test_consuming_from_mid_history_never_goes_negative() -> None:
    """Retention removed the inserts: an update or delete of a row never counted retracts
    nothing (nothing of it was counted), and the update's new image counts."""
    log = Log()
    log.emit("payments", "c", {"payment_id": 1}, None, _payment(1))
    log.emit("payments", "u", {"payment_id": 1}, _payment(1), _payment(1, amount="2.00"))
    log.emit("payments", "c", {"payment_id": 2}, None, _payment(2))
    log.emit("payments", "d", {"payment_id": 2}, _payment(2), None)
    pipe = Pipeline(SAMPLE_FEATURES)
    pipe.feed([log.items[1], log.items[3]])  # the inserts are no longer in the topic
    assert _lifetime(pipe) == (1, "2.00")
