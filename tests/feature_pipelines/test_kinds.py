"""Every registered aggregation kind against recomputation (pure, and the SQL oracle on the
real Postgres), and min / max: the kinds added last, one class each (``aggregations.extremes``).
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from feature_pipelines import Entity, Feature, FeatureSet, describe
from feature_pipelines.aggregations import KINDS, kind_of
from feature_pipelines.catalog import CUSTOMER, MERCHANT
from feature_pipelines.decode import decode
from feature_pipelines.fold import _VECTOR_FROM, FoldRead
from feature_pipelines.oracle import oracle_query, state_from_row
from feature_pipelines.planner import Planner, entity_key
from feature_pipelines.readout import ReadPlan, finalize
from feature_pipelines.reference import MemoryStore, contribution, read_values
from feature_pipelines.windows import event_micros
from tests.feature_pipelines.fixtures import T0, Db, iso, moment, oracle, random_delivery
from tests.feature_pipelines.fold_hashes import T_US, every_kind
from tests.feature_pipelines.harness import Log, Pipeline, micros
from tests.feature_pipelines.test_planner_property import _OFFSETS, _apply, _op

# every kind, windowed and lifetime, for both entities (a windowed one at each width)
KIND_FEATURES = FeatureSet.of(
    every_kind(CUSTOMER, (timedelta(minutes=10), timedelta(hours=24), None))
    + every_kind(MERCHANT, (timedelta(hours=1),))
)


def test_the_kinds_are_registered_once_by_name() -> None:
    assert {"count", "sum", "mean", "distinct", "min", "max"} <= set(KINDS)
    assert all(kind_of(name).name == name for name in KINDS)
    assert {f.agg for f in KIND_FEATURES} == set(KINDS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_op, min_size=1, max_size=40),
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 12),
    read_offset=st.sampled_from(_OFFSETS),
)
def test_every_kind_equals_recomputation(ops, seed, batch, read_offset) -> None:
    """Any inserts, updates (value, time, entity), deletes, duplicates and replays: every
    kind's incremental state reads what recomputation from the final rows gives."""
    db = Db()
    for op in ops:
        _apply(db, op)
    delivered = random_delivery(db.log, random.Random(seed))
    events = [
        e for _, _, key, value in delivered if (e := decode(value, key, KIND_FEATURES)) is not None
    ]
    planner, store = Planner(KIND_FEATURES, "t"), MemoryStore()
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        assert store.apply(planner.plan(chunk, store.read(planner.keys_needed(chunk))))
    t = moment(read_offset)
    expected = oracle(KIND_FEATURES, db, t)
    t_us = event_micros(iso(t), "t")
    for entity in ("customer", "merchant"):
        features = KIND_FEATURES.for_entity(entity)
        for key in map(str, range(1, 4)):
            fields = store.hashes.get(entity_key("t", entity, key), {})
            got = read_values(features, fields, t_us)
            assert got == (expected.get((entity, key)) or read_values(features, {}, t_us))


SHOP = Entity("shop", "shop_id")


def _extremes(window: timedelta | None, scale: int = 2) -> FeatureSet:
    return FeatureSet.of(
        [
            Feature(
                f"total_{agg}",
                SHOP,
                "orders",
                "placed_at",
                agg,
                "total",
                window=window,
                scale=scale,
            )
            for agg in ("min", "max")
        ]
    )


def _order(oid: int, total: str | None, shop: int = 1, at=T0) -> dict:
    return {"order_id": oid, "shop_id": shop, "total": total, "placed_at": iso(at)}


@pytest.mark.parametrize("window", [timedelta(minutes=10), None], ids=["10m", "lifetime"])
def test_min_and_max_retract_exactly_under_updates_and_deletes(window) -> None:
    pipe, log = Pipeline(_extremes(window)), Log()
    rows = {1: _order(1, "5.00"), 2: _order(2, "1.00"), 3: _order(3, "9.00"), 4: _order(4, "1.00")}
    pipe.feed([log.emit("orders", "c", {"order_id": k}, None, r) for k, r in rows.items()])

    def read() -> tuple:
        values = pipe.values("shop", 1, T0)
        return values["total_min"], values["total_max"]

    assert read() == (Decimal("1.00"), Decimal("9.00"))
    # one of the two smallest rows moves up: the other still holds the minimum
    moved = {**rows[2], "total": "7.00"}
    pipe.feed([log.emit("orders", "u", {"order_id": 2}, rows[2], moved)])
    assert read() == (Decimal("1.00"), Decimal("9.00"))
    pipe.feed([log.emit("orders", "d", {"order_id": 4}, rows[4], None)])
    assert read() == (Decimal("5.00"), Decimal("9.00"))
    # the largest leaves by delete, then a value becomes NULL (no value, as in SQL)
    pipe.feed([log.emit("orders", "d", {"order_id": 3}, rows[3], None)])
    assert read() == (Decimal("5.00"), Decimal("7.00"))
    pipe.feed([log.emit("orders", "u", {"order_id": 1}, rows[1], {**rows[1], "total": None})])
    assert read() == (Decimal("7.00"), Decimal("7.00"))
    pipe.feed([log.emit("orders", "d", {"order_id": 2}, moved, None)])
    assert read() == (None, None)
    assert pipe.feature_fields("shop", 1) == {}


def test_min_and_max_keep_a_row_count_per_scaled_value_per_bucket() -> None:
    features = _extremes(timedelta(minutes=10), scale=3)
    low = features.by_name("total_min")
    row = _order(1, "-0.125", at=T0)
    bucket = micros(T0) // (low.bucket_seconds * 1_000_000)
    assert contribution(low, row) == [(f"total_min@{bucket}#-125", 1)]
    assert contribution(low, _order(1, None)) == []
    assert contribution(low, _order(1, "3")) == [(f"total_min@{bucket}#3000", 1)]
    pipe, log = Pipeline(features), Log()
    pipe.feed(
        [
            log.emit("orders", "c", {"order_id": 1}, None, row),
            log.emit("orders", "c", {"order_id": 2}, None, _order(2, "12.5")),
            log.emit("orders", "c", {"order_id": 3}, None, _order(3, "-0.125")),
        ]
    )
    assert pipe.feature_fields("shop", 1)[f"total_min@{bucket}#-125"] == "2"
    values = pipe.values("shop", 1, T0)
    assert (values["total_min"], values["total_max"]) == (Decimal("-0.125"), Decimal("12.500"))
    # a read 10 minutes later has the bucket out of its window
    assert pipe.values("shop", 1, T0 + timedelta(minutes=11))["total_max"] is None


def test_min_and_max_describe_themselves() -> None:
    text = describe(_extremes(None).by_name("total_max"))
    assert text == "shop.total_max: max of total in orders, by placed_at, lifetime"


def test_folds_of_values_past_int64_stay_exact() -> None:
    """The numpy fold folds min / max values in int64: a value past it sends the read back to
    Python's integers, with the reference's answer."""
    features = FeatureSet.of(every_kind(CUSTOMER, (None,)))
    plan = ReadPlan(features.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    hashes = [
        {"kind_min_lifetime#-5": 1, "kind_max_lifetime#7": 2, "kind_max_lifetime#900": 0}
        for _ in range(_VECTOR_FROM)
    ]
    hashes[3] = {"kind_min_lifetime#-" + str(2**70): 1, "kind_max_lifetime#" + str(2**64): 1}
    want = [plan.values(h) for h in hashes]
    as_bytes = [{k.encode(): str(v).encode() for k, v in h.items()} for h in hashes]
    got = [values for values, _c, _w in fold.unfold(fold.fold_hashes(as_bytes))]
    assert got == want
    assert got[0]["kind_min_lifetime"] == Decimal("-0.05")
    assert got[0]["kind_max_lifetime"] == Decimal("0.07")
    assert got[3]["kind_min_lifetime"] == Decimal(-(2**70)).scaleb(-2)


# --- the SQL oracle against the incremental state, on the real Postgres


@pytest.mark.integration
@pytest.mark.parametrize("seed", range(3))
def test_the_sql_oracle_equals_the_incremental_state(pg: psycopg.Connection, seed: int) -> None:
    """Every kind's oracle statement, run on a table of this test's own (a temporary one),
    reads what the incremental state reads after inserts, updates and deletes."""
    rng = random.Random(seed)
    table = f"kinds_{uuid.uuid4().hex[:10]}"
    features = FeatureSet.of(
        [
            Feature(
                f"o_{kind.name}_{'w' if window else 'l'}",
                SHOP,
                table,
                "placed_at",
                kind.name,
                ("total" if kind.decimal else "buyer_id") if kind.takes_value else None,
                window=window,
            )
            for kind in KINDS.values()
            for window in (timedelta(minutes=10), None)
        ]
    )
    pg.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (order_id int PRIMARY KEY, shop_id int, total numeric(12, 2),"
            " buyer_id int, placed_at timestamptz)"
        ).format(sql.Identifier(table))
    )
    pipe, log = Pipeline(features), Log()
    rows: dict[int, dict] = {}
    upsert = sql.SQL(
        "INSERT INTO {} VALUES (%(order_id)s, %(shop_id)s, %(total)s, %(buyer_id)s,"
        " %(placed_at)s) ON CONFLICT (order_id) DO UPDATE SET shop_id = EXCLUDED.shop_id,"
        " total = EXCLUDED.total, buyer_id = EXCLUDED.buyer_id, placed_at = EXCLUDED.placed_at"
    ).format(sql.Identifier(table))
    try:
        for _ in range(80):
            oid = rng.randint(1, 25)
            before = rows.get(oid)
            if before is not None and rng.random() < 0.25:
                pg.execute(
                    sql.SQL("DELETE FROM {} WHERE order_id = %s").format(sql.Identifier(table)),
                    (oid,),
                )
                pipe.feed([log.emit(table, "d", {"order_id": oid}, rows.pop(oid), None)])
                continue
            cents = rng.choice([None, rng.randint(-5000, 50_000)])
            after = {
                "order_id": oid,
                "shop_id": rng.randint(1, 3),
                "total": None if cents is None else str(Decimal(cents).scaleb(-2)),
                "buyer_id": rng.choice([None, 1, 2, 3, 4]),
                "placed_at": iso(moment(rng.choice([-1200, -600, -599, -60, 0, 5, 86400]))),
            }
            pg.execute(upsert, after)
            rows[oid] = after
            pipe.feed([log.emit(table, "u" if before else "c", {"order_id": oid}, before, after)])
        for offset in (-600, 0, 30, 3600):
            t = moment(offset)
            compared = 0
            for f in features:
                query, params = oracle_query(f, micros(t))
                by_key = {
                    key: finalize(f, state_from_row(f, n, total, values))
                    for key, n, total, values in pg.execute(query, params).fetchall()
                }
                for shop in (1, 2, 3):
                    online = pipe.values("shop", shop, t)[f.name]
                    empty = read_values(features, {}, micros(t))[f.name]
                    assert online == by_key.get(str(shop), empty), (f.name, shop, offset)
                    compared += str(shop) in by_key
            assert compared > 0  # not degenerate: the oracle found rows at this time
    finally:
        pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
