"""Features over a schema of one's own (orders and deliveries), the worked example of
docs/own-schema.md: the definitions and the tables they read.

The table names are parameters so that a test can give them a suffix of its own; a real
module would name them once, e.g. ``FEATURES = own_features()``.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg import sql

from feature_pipelines import Entity, Feature, FeatureSet
from feature_pipelines.spec import Condition, Lookup

__all__ = [
    "COURIER",
    "CUSTOMER",
    "FEATURES",
    "FEATURES_WITH_CANCELLED",
    "added_feature",
    "create_tables",
    "own_features",
]

CUSTOMER = Entity("customer", "customer_id")
COURIER = Entity("courier", "courier_id")

_H1, _H24 = timedelta(hours=1), timedelta(hours=24)


def create_tables(orders: str = "orders", deliveries: str = "deliveries") -> list[sql.Composed]:
    """The DDL of the two tables (each row's primary key is the Kafka message key Debezium
    sends; REPLICA IDENTITY FULL: an update or delete carries the row as it was)."""
    o, d = sql.Identifier(orders), sql.Identifier(deliveries)
    return [
        sql.SQL(
            "CREATE TABLE {} ("
            "order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "customer_id bigint NOT NULL, store_id bigint NOT NULL, "
            "amount numeric(12,2) NOT NULL, status text NOT NULL DEFAULT 'placed', "
            "created_at timestamptz NOT NULL DEFAULT now())"
        ).format(o),
        sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(o),
        sql.SQL(
            "CREATE TABLE {} ("
            "delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "order_id bigint NOT NULL, courier_id bigint NOT NULL, "
            "late boolean NOT NULL DEFAULT false, "
            "delivered_at timestamptz NOT NULL DEFAULT now())"
        ).format(d),
        sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(d),
    ]


def own_features(orders: str = "orders", deliveries: str = "deliveries") -> FeatureSet:
    """Per customer: orders in 24 h, amount spent ever, distinct stores in 24 h, late
    deliveries in 24 h (a delivery has no customer: its order provides it, a lookup); per
    courier: deliveries in 1 h, late deliveries in 24 h (a filter)."""

    def order(name: str, agg: str, window: timedelta | None, value: str | None = None) -> Feature:
        return Feature(name, CUSTOMER, orders, "created_at", agg, value, (), window)

    late = (Condition("late", True),)
    return FeatureSet.of(
        [
            order("order_count_24h", "count", _H24),
            order("order_amount_sum_lifetime", "sum", None, "amount"),
            order("distinct_stores_24h", "distinct", _H24, "store_id"),
            Feature(
                "customer_late_deliveries_24h",
                CUSTOMER,
                deliveries,
                "delivered_at",
                "count",
                where=late,
                window=_H24,
                lookup=Lookup(
                    column="order_id", table=orders, key="order_id", provides="customer_id"
                ),
            ),
            Feature(
                "courier_deliveries_1h", COURIER, deliveries, "delivered_at", "count", window=_H1
            ),
            Feature(
                "courier_late_deliveries_24h",
                COURIER,
                deliveries,
                "delivered_at",
                "count",
                where=late,
                window=_H24,
            ),
        ]
    )


def added_feature(orders: str = "orders") -> Feature:
    """A feature added later with ``plan`` / ``apply`` (backfilled from the tables): the amount
    of cancelled orders in 24 h."""
    return Feature(
        "cancelled_amount_sum_24h",
        CUSTOMER,
        orders,
        "created_at",
        "sum",
        "amount",
        (Condition("status", "cancelled"),),
        _H24,
    )


FEATURES = own_features()
FEATURES_WITH_CANCELLED = FeatureSet.of([*FEATURES, added_feature()])
