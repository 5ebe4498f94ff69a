"""Property: any sequence of inserts, updates, deletes, outcomes, duplicates, replays and
snapshots, delivered at least once in any per-key order, gives state equal to recomputation."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines.catalog import SAMPLE_FEATURES
from feature_pipelines.decode import decode
from feature_pipelines.planner import Planner, entity_key
from feature_pipelines.reference import MemoryStore, read_values
from feature_pipelines.windows import event_micros
from tests.feature_pipelines.fixtures import T0, Db, amount, iso, moment, oracle, random_delivery

# Offsets (seconds from T0) that hit bucket edges of every window, inside and outside.
_OFFSETS = [
    -8 * 86400,
    -7 * 86400 + 1,
    -86400 - 1440,
    -86400,
    -86399,
    -3600 - 60,
    -3600,
    -3599,
    -601,
    -600,
    -590,
    -60,
    -10,
    -1,
    0,
    1,
    9,
    10,
    59,
    60,
    86400,
]

_op = st.one_of(
    st.tuples(
        st.just("pay"),
        st.integers(1, 6),
        st.integers(1, 3),
        st.integers(1, 3),
        st.one_of(st.none(), st.integers(0, 99_999)),  # amount in cents, or NULL
        st.sampled_from(["pending", "approved", "declined"]),
        st.sampled_from(_OFFSETS),
    ),
    st.tuples(st.just("del"), st.integers(1, 6)),
    st.tuples(st.just("out"), st.integers(1, 6), st.booleans(), st.sampled_from(_OFFSETS)),
    st.tuples(st.just("delout"), st.integers(1, 6)),
    st.tuples(
        st.just("snap"),
    ),
)


def _apply(db: Db, op: tuple) -> None:
    kind = op[0]
    if kind == "pay":
        _, pk, customer, merchant, cents, status, offset = op
        db.upsert_payment(
            pk,
            customer_id=customer,
            merchant_id=merchant,
            amount=None if cents is None else amount(cents),
            status=status,
            created_at=iso(moment(offset)),
        )
    elif kind == "del":
        db.delete_payment(op[1])
    elif kind == "out":
        db.upsert_outcome(op[1], op[2], moment(op[3]))
    elif kind == "delout":
        db.delete_outcome(op[1])
    else:
        db.snapshot()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_op, min_size=1, max_size=40),
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 12),
    read_offset=st.sampled_from(_OFFSETS),
)
def test_incremental_state_equals_recomputation(ops, seed, batch, read_offset) -> None:
    db = Db()
    for op in ops:
        _apply(db, op)
    rng = random.Random(seed)
    delivered = random_delivery(db.log, rng)
    planner = Planner(SAMPLE_FEATURES, "t")
    store = MemoryStore()
    events = [
        e
        for _, _, key, value in delivered
        if (e := decode(value, key, SAMPLE_FEATURES)) is not None
    ]
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        plan = planner.plan(chunk, store.read(planner.keys_needed(chunk)))
        assert store.apply(plan)

    t = moment(read_offset)
    expected = oracle(SAMPLE_FEATURES, db, t)
    t_us = event_micros(iso(t), "t")
    for entity in ("customer", "merchant"):
        features = SAMPLE_FEATURES.for_entity(entity)
        for key in map(str, range(1, 4)):
            fields = store.hashes.get(entity_key("t", entity, key), {})
            got = read_values(features, fields, t_us)
            want = expected.get((entity, key)) or read_values(features, {}, t_us)
            assert got == want, (entity, key)


def test_a_duplicate_batch_changes_nothing() -> None:
    db = Db()
    db.upsert_payment(
        1, customer_id=1, merchant_id=1, amount="10.00", status="pending", created_at=iso(T0)
    )
    db.upsert_outcome(1, True, T0)
    events = [e for _, _, k, v in db.log if (e := decode(v, k, SAMPLE_FEATURES))]
    planner, store = Planner(SAMPLE_FEATURES, "t"), MemoryStore()
    first = planner.plan(events, store.read(planner.keys_needed(events)))
    assert store.apply(first) and first.applied == 2
    snapshot = {k: dict(v) for k, v in store.hashes.items() if ":e:" in k}
    again = planner.plan(events, store.read(planner.keys_needed(events)))
    assert again.applied == 0 and again.duplicates == 2 and not again.increments
    store.apply(again)
    assert {k: v for k, v in store.hashes.items() if ":e:" in k} == snapshot


def test_a_stale_read_is_refused() -> None:
    db = Db()
    db.upsert_payment(
        1, customer_id=1, merchant_id=1, amount="1.00", status="pending", created_at=iso(T0)
    )
    events = [e for _, _, k, v in db.log if (e := decode(v, k, SAMPLE_FEATURES))]
    planner, store = Planner(SAMPLE_FEATURES, "t"), MemoryStore()
    states = store.read(planner.keys_needed(events))
    first = planner.plan(events, states)
    second = planner.plan(events, states)  # another process read the same old state
    assert store.apply(first)
    assert not store.apply(second)
