"""merchant_fraud_count_7d: an outcome's merchant comes from its payment, whatever arrives first."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import SAMPLE_FEATURES, Condition, Entity, Feature, FeatureSet, Lookup
from tests.feature_pipelines.fixtures import Db, iso, oracle, random_delivery
from tests.feature_pipelines.harness import Log, Pipeline

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FRAUD = "merchant_fraud_count_7d"


def _payment(merchant: int | None, pk: int = 1, **extra: Any) -> dict:
    return {
        "payment_id": pk,
        "customer_id": 7,
        "merchant_id": merchant,
        "amount": "5.00",
        "status": "approved",
        "created_at": iso(T),
        **extra,
    }


def _outcome(is_fraud: bool, pk: int = 1, at: datetime = T) -> dict:
    return {"payment_id": pk, "is_fraud": is_fraud, "reported_at": iso(at)}


def _fraud(pipe: Pipeline, merchant: int, at: datetime = T) -> int:
    value = pipe.values("merchant", merchant, at)[FRAUD]
    assert isinstance(value, int)
    return value


class Scenario:
    """Two Debezium streams (payments, outcomes) for payment 1, emitted in commit order."""

    def __init__(self) -> None:
        self.log = Log()
        self.pay: dict | None = None
        self.out: dict | None = None

    def payment(self, row: dict | None) -> tuple[bytes, bytes]:
        op = "d" if row is None else ("u" if self.pay else "c")
        item = self.log.emit("payments", op, {"payment_id": 1}, self.pay, row)
        self.pay = row
        return item

    def outcome(self, row: dict | None) -> tuple[bytes, bytes]:
        op = "d" if row is None else ("u" if self.out else "c")
        item = self.log.emit("payment_outcomes", op, {"payment_id": 1}, self.out, row)
        self.out = row
        return item


def test_outcome_first_is_parked_until_the_payment_arrives() -> None:
    s, pipe = Scenario(), Pipeline(SAMPLE_FEATURES)
    pay, out = s.payment(_payment(3)), s.outcome(_outcome(True))
    pipe.feed([out])
    assert _fraud(pipe, 3) == 0 and pipe.store.hashes  # parked in the payment's row state
    pipe.feed([pay])
    assert _fraud(pipe, 3) == 1


def test_payment_first_applies_the_outcome_at_once() -> None:
    s, pipe = Scenario(), Pipeline(SAMPLE_FEATURES)
    pipe.feed([s.payment(_payment(3))])
    pipe.feed([s.outcome(_outcome(True))])
    assert _fraud(pipe, 3) == 1


def test_merchant_change_moves_the_outcome_and_deletes_retract() -> None:
    s, pipe = Scenario(), Pipeline(SAMPLE_FEATURES)
    pipe.feed([s.payment(_payment(3)), s.outcome(_outcome(True))])
    pipe.feed([s.payment(_payment(4))])
    assert (_fraud(pipe, 3), _fraud(pipe, 4)) == (0, 1)
    pipe.feed([s.payment(_payment(None))])  # merchant unknown: the outcome waits again
    assert (_fraud(pipe, 3), _fraud(pipe, 4)) == (0, 0)
    pipe.feed([s.payment(_payment(3))])
    assert _fraud(pipe, 3) == 1
    pipe.feed([s.payment(None)])  # payment deleted: the join has no merchant
    assert _fraud(pipe, 3) == 0
    pipe.feed([s.outcome(None)])
    assert _fraud(pipe, 3) == 0 and pipe.feature_fields("merchant", 3) == {}


def test_fraud_flag_flips_and_report_time_moves_buckets() -> None:
    s, pipe = Scenario(), Pipeline(SAMPLE_FEATURES)
    pipe.feed([s.payment(_payment(3))])
    pipe.feed([s.outcome(_outcome(False))])
    assert _fraud(pipe, 3) == 0
    pipe.feed([s.outcome(_outcome(True))])
    assert _fraud(pipe, 3) == 1
    pipe.feed([s.outcome(_outcome(True, at=T - timedelta(days=8)))])
    assert _fraud(pipe, 3) == 0  # reported more than 7 days before the read
    assert _fraud(pipe, 3, at=T - timedelta(days=8)) == 1


def test_duplicates_of_either_stream_count_once() -> None:
    s, pipe = Scenario(), Pipeline(SAMPLE_FEATURES)
    pay, out = s.payment(_payment(3)), s.outcome(_outcome(True))
    plan = pipe.feed([out, pay, out, pay, out], batch=5)
    assert (plan.applied, plan.duplicates) == (2, 3)
    pipe.feed([pay, out, pay])
    assert _fraud(pipe, 3) == 1


def _interleavings(a: list, b: list) -> list[list]:
    out = []
    for slots in itertools.combinations(range(len(a) + len(b)), len(a)):
        ia, ib, merged = iter(a), iter(b), []
        for i in range(len(a) + len(b)):
            merged.append(next(ia) if i in slots else next(ib))
        out.append(merged)
    return out


@pytest.mark.parametrize("batch", [1, 2, 6])
def test_every_interleaving_of_the_two_streams_agrees(batch: int) -> None:
    s = Scenario()
    payments = [s.payment(_payment(3)), s.payment(_payment(4)), s.payment(_payment(4, amount="9"))]
    outcomes = [s.outcome(_outcome(True)), s.outcome(_outcome(False)), s.outcome(_outcome(True))]
    for order in _interleavings(payments, outcomes):
        pipe = Pipeline(SAMPLE_FEATURES)
        pipe.feed(order, batch=batch)
        assert (_fraud(pipe, 3), _fraud(pipe, 4)) == (0, 1)
        assert pipe.feature_fields("merchant", 3) == {}


def test_two_lookups_into_the_same_provider() -> None:
    """A user adds customer_fraud via payments.customer_id next to merchant fraud: both lookups
    share the parked outcome image, and each counts it exactly once, in any order."""
    customer, merchant = Entity("customer", "customer_id"), Entity("merchant", "merchant_id")
    fraud = (Condition("is_fraud", True),)

    def via(provides: str) -> Lookup:
        return Lookup("payment_id", "payments", "payment_id", provides)

    features = FeatureSet.of(
        [
            Feature(
                "m_fraud", merchant, "payment_outcomes", "reported_at", "count",
                where=fraud, lookup=via("merchant_id"),
            ),
            Feature(
                "c_fraud", customer, "payment_outcomes", "reported_at", "count",
                where=fraud, lookup=via("customer_id"),
            ),
        ]
    )  # fmt: skip
    s, pipe = Scenario(), Pipeline(features)
    pipe.feed([s.payment(_payment(3)), s.outcome(_outcome(True))])
    assert pipe.values("merchant", 3, T)["m_fraud"] == 1
    assert pipe.values("customer", 7, T)["c_fraud"] == 1


_TWO_LOOKUPS = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        Feature(
            "customer_fraud_count_7d",
            Entity("customer", "customer_id"),
            "payment_outcomes",
            "reported_at",
            "count",
            where=(Condition("is_fraud", True),),
            window=timedelta(days=7),
            lookup=Lookup("payment_id", "payments", "payment_id", "customer_id"),
        ),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("pay"), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2)),
            st.tuples(st.just("out"), st.integers(1, 3), st.booleans(), st.integers(-9, 1)),
            st.tuples(st.just("del"), st.integers(1, 3)),
            st.tuples(st.just("delout"), st.integers(1, 3)),
        ),
        max_size=30,
    ),
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 8),
)
def test_lookups_match_recomputation_in_any_delivery_order(ops, seed, batch) -> None:
    db = Db()
    for op in ops:
        if op[0] == "pay":
            _, pk, customer, merchant = op
            db.upsert_payment(
                pk,
                customer_id=customer,
                merchant_id=merchant,
                amount="1.00",
                status="approved",
                created_at=iso(T),
            )
        elif op[0] == "out":
            db.upsert_outcome(op[1], op[2], T + timedelta(days=op[3]))
        elif op[0] == "del":
            db.delete_payment(op[1])
        else:
            db.delete_outcome(op[1])
    delivered = random_delivery(db.log, random.Random(seed))
    pipe = Pipeline(_TWO_LOOKUPS)
    pipe.feed([(key, value) for _, _, key, value in delivered if value is not None], batch=batch)
    want = oracle(_TWO_LOOKUPS, db, T)
    for entity, name in (("merchant", FRAUD), ("customer", "customer_fraud_count_7d")):
        for key in (1, 2):
            expected = want.get((entity, str(key)), {}).get(name, 0)
            assert pipe.values(entity, key, T)[name] == expected, (entity, key)
