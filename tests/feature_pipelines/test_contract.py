"""One contract, run over every registered aggregation kind x (window, lifetime).

The features are declared by a "user" for their own table (``orders`` of a ``shop``), so the
same run also shows that new definitions need no change to the engine.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import Condition, Entity, Feature, FeatureSet
from feature_pipelines.aggregations import KINDS
from feature_pipelines.windows import parse_field
from tests.feature_pipelines.fixtures import iso
from tests.feature_pipelines.harness import Log, Pipeline

SHOP = Entity("shop", "shop_id")
T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
AGGS = list(KINDS)
WINDOWS = [timedelta(minutes=10), None]
# what an entity without rows reads (None unless listed)
_EMPTY: dict[str, Any] = {"count": 0, "sum": Decimal("0.00"), "distinct": 0}


def _value(agg: str) -> str | None:
    kind = KINDS[agg]
    return ("total" if kind.decimal else "buyer_id") if kind.takes_value else None


def _feature(agg: str, window: timedelta | None, sale_only: bool = False) -> Feature:
    where = (Condition("kind", "sale"),) if sale_only else ()
    return Feature(
        f"orders_{agg}",
        SHOP,
        "orders",
        "placed_at",
        agg,
        _value(agg),
        where=where,
        window=window,
    )


def _row(oid: int, shop: int, total: str, buyer: int, at: datetime, kind: str = "sale") -> dict:
    return {
        "order_id": oid,
        "shop_id": shop,
        "total": total,
        "buyer_id": buyer,
        "placed_at": iso(at),
        "kind": kind,
        "note": "ignored by every feature",
    }


def _expected(agg: str, rows: list[dict]) -> Any:
    if agg == "count":
        return len(rows)
    if agg == "distinct":
        return len({r["buyer_id"] for r in rows})
    amounts = [Decimal(r["total"]) for r in rows]
    if agg in ("min", "max"):
        return (min if agg == "min" else max)(amounts) if amounts else None
    total = sum(amounts, Decimal("0.00"))
    if agg == "sum":
        return total
    if agg == "mean":
        return (total / len(rows)).quantize(Decimal("0.000001")) if rows else None
    msg = f"no expected value for {agg}: add it here when registering a kind"
    raise AssertionError(msg)


CASES = list(itertools.product(AGGS, WINDOWS))
IDS = [f"{a}-{'10m' if w else 'lifetime'}" for a, w in CASES]


@pytest.mark.parametrize(("agg", "window"), CASES, ids=IDS)
class TestAggregationContract:
    def _pipe(self, agg: str, window: timedelta | None, sale_only: bool = False) -> Pipeline:
        return Pipeline(FeatureSet.of([_feature(agg, window, sale_only)]))

    def test_insert_then_delete_leaves_no_field(self, agg: str, window: timedelta | None) -> None:
        pipe, log = self._pipe(agg, window), Log()
        row = _row(1, 5, "3.30", 9, T)
        pipe.feed([log.emit("orders", "c", {"order_id": 1}, None, row)])
        assert pipe.values("shop", 5, T)[f"orders_{agg}"] == _expected(agg, [row])
        pipe.feed([log.emit("orders", "d", {"order_id": 1}, row, None)])
        assert pipe.feature_fields("shop", 5) == {}
        assert pipe.values("shop", 5, T)[f"orders_{agg}"] == _EMPTY.get(agg)

    def test_update_moves_between_entities(self, agg: str, window: timedelta | None) -> None:
        pipe, log = self._pipe(agg, window), Log()
        a, b = _row(1, 5, "1.10", 9, T), _row(2, 5, "2.20", 8, T)
        moved = {**b, "shop_id": 6}
        pipe.feed(
            [
                log.emit("orders", "c", {"order_id": 1}, None, a),
                log.emit("orders", "c", {"order_id": 2}, None, b),
                log.emit("orders", "u", {"order_id": 2}, b, moved),
            ],
            batch=3,
        )
        assert pipe.values("shop", 5, T)[f"orders_{agg}"] == _expected(agg, [a])
        assert pipe.values("shop", 6, T)[f"orders_{agg}"] == _expected(agg, [moved])

    def test_update_in_and_out_of_the_filter(self, agg: str, window: timedelta | None) -> None:
        pipe, log = self._pipe(agg, window, sale_only=True), Log()
        sale = _row(1, 5, "4.00", 9, T)
        refund = {**sale, "kind": "refund"}
        name = f"orders_{agg}"
        pipe.feed([log.emit("orders", "c", {"order_id": 1}, None, sale)])
        assert pipe.values("shop", 5, T)[name] == _expected(agg, [sale])
        pipe.feed([log.emit("orders", "u", {"order_id": 1}, sale, refund)])
        assert pipe.values("shop", 5, T)[name] == _EMPTY.get(agg)
        assert pipe.feature_fields("shop", 5) == {}
        pipe.feed([log.emit("orders", "u", {"order_id": 1}, refund, sale)])
        assert pipe.values("shop", 5, T)[name] == _expected(agg, [sale])

    def test_update_moves_event_time(self, agg: str, window: timedelta | None) -> None:
        pipe, log = self._pipe(agg, window), Log()
        old = _row(1, 5, "7.00", 9, T - timedelta(hours=2))
        new = {**old, "placed_at": iso(T)}
        name = f"orders_{agg}"
        pipe.feed([log.emit("orders", "c", {"order_id": 1}, None, old)])
        before = pipe.values("shop", 5, T)[name]
        pipe.feed([log.emit("orders", "u", {"order_id": 1}, old, new)])
        assert pipe.values("shop", 5, T)[name] == _expected(agg, [new])
        # a lifetime feature does not care when; a 10-minute window only sees the new time
        assert before == (_expected(agg, [old]) if window is None else _EMPTY.get(agg))

    def test_irrelevant_update_writes_nothing(self, agg: str, window: timedelta | None) -> None:
        pipe, log = self._pipe(agg, window), Log()
        row = _row(1, 5, "7.00", 9, T)
        pipe.feed([log.emit("orders", "c", {"order_id": 1}, None, row)])
        plan = pipe.feed([log.emit("orders", "u", {"order_id": 1}, row, {**row, "note": "x"})])
        assert plan.applied == 1 and plan.increments == {}

    def test_fields_live_in_one_hash_and_name_their_feature(
        self, agg: str, window: timedelta | None
    ) -> None:
        pipe, log = self._pipe(agg, window), Log()
        plan = pipe.feed(
            [
                log.emit("orders", "c", {"order_id": i}, None, _row(i, 5, "1.00", i, T))
                for i in range(1, 4)
            ],
            batch=3,
        )
        assert list(plan.increments) == ["t:e:{shop:5}"]
        for name in plan.increments["t:e:{shop:5}"]:
            ref = parse_field(name)
            assert ref is not None and ref.name == f"orders_{agg}"
            assert (ref.bucket is None) == (window is None)


@settings(max_examples=60, deadline=None)
@given(
    agg=st.sampled_from(AGGS),
    lifetime=st.booleans(),
    rows=st.lists(
        st.tuples(st.integers(1, 3), st.integers(0, 999), st.integers(1, 4), st.integers(-900, 0)),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_order_of_independent_rows_does_not_matter(agg, lifetime, rows, data) -> None:
    """Inserting rows in any order and in any batch size gives the same hashes."""
    feature = _feature(agg, None if lifetime else timedelta(minutes=10))
    images = [
        _row(i, shop, f"{cents / 100:.2f}", buyer, T + timedelta(seconds=s))
        for i, (shop, cents, buyer, s) in enumerate(rows, start=1)
    ]
    order = data.draw(st.permutations(range(len(images))))
    batch = data.draw(st.integers(1, 4))
    results = []
    for sequence, size in ((range(len(images)), 1), (order, batch)):
        pipe, log = Pipeline(FeatureSet.of([feature])), Log()
        pipe.feed(
            [log.emit("orders", "c", {"order_id": i}, None, images[i]) for i in sequence],
            batch=size,
        )
        results.append({s: pipe.feature_fields("shop", s) for s in (1, 2, 3)})
        for shop in (1, 2, 3):
            mine = [r for r in images if r["shop_id"] == shop]
            got = pipe.values("shop", shop, T)[feature.name]
            in_window = [
                r for r in mine if lifetime or r["placed_at"] >= iso(T - timedelta(seconds=590))
            ]
            assert got == _expected(agg, in_window)
    assert results[0] == results[1]
