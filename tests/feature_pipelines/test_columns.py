"""Column rules come from the definitions, for any table; reads accept Redis' bytes or str."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import feature_pipelines.columns as columns
from feature_pipelines import SAMPLE_FEATURES, Condition, DecodeError, Entity, Feature, FeatureSet
from feature_pipelines.columns import check_row, rules_for
from feature_pipelines.reference import expired_fields, read_values
from tests.feature_pipelines.harness import micros

SHOP = Entity("shop", "shop_id")
ORDERS = FeatureSet.of(
    [
        Feature("paid_sum", SHOP, "orders", "placed_at", "sum", "total", scale=3),
        Feature("vip_count", SHOP, "orders", "placed_at", "count", where=(Condition("tier", 2),)),
    ]
)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(columns).failed == 0


def test_rules_follow_the_declared_roles() -> None:
    rules = {(column, kind) for column, kind, _arg in rules_for(ORDERS, "orders")}
    # a lifetime feature never reads its event time, so it is not checked
    assert rules == {("shop_id", "key"), ("total", "decimal"), ("tier", "equals")}
    assert rules_for(ORDERS, "orders") is rules_for(ORDERS, "orders")  # built once
    assert rules_for(ORDERS, "payments") == ()
    payments = {column for column, _kind, _arg in rules_for(SAMPLE_FEATURES, "payments")}
    assert payments == SAMPLE_FEATURES.needed_columns("payments")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"shop_id": 1, "total": "1.2345", "tier": 2}, "more than 3 decimal places"),
        ({"shop_id": 1, "total": "1.234", "tier": True}, "an integer to compare with"),
        ({"shop_id": 1.5, "total": "1", "tier": 2}, "integer or text key"),
        ({"shop_id": False, "total": "1", "tier": 2}, "integer or text key"),
    ],
)
def test_user_tables_are_checked_the_same_way(row: dict, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        check_row(rules_for(ORDERS, "orders"), row, "after")
    check_row(rules_for(ORDERS, "orders"), {"shop_id": "a", "total": 7, "tier": None}, "after")


def test_reads_accept_bytes_and_str_alike() -> None:
    f = SAMPLE_FEATURES.by_name("amount_sum_1h")
    t = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    bucket = micros(t) // (60 * 1_000_000)
    as_str = {f"amount_sum_1h@{bucket}": "1234", f"amount_sum_1h@{bucket - 60}": "5"}
    as_bytes = {k.encode(): v.encode() for k, v in as_str.items()}
    assert read_values([f], as_str, micros(t)) == {"amount_sum_1h": Decimal("12.34")}
    assert read_values([f], as_bytes, micros(t)) == {"amount_sum_1h": Decimal("12.34")}
    expired = [f"amount_sum_1h@{bucket - 60}"]
    assert expired_fields([f], list(as_bytes), micros(t)) == expired
    assert expired_fields([f], list(as_str), micros(t)) == expired
