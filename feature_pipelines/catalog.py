"""The sample feature set over the demo schema, and the ``FeatureSet`` that groups definitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property

from feature_pipelines.exceptions import DefinitionError
from feature_pipelines.spec import Condition, Entity, Feature, Lookup

__all__ = ["CUSTOMER", "MERCHANT", "SAMPLE_FEATURES", "SCORING_FEATURES", "FeatureSet"]


@dataclass(frozen=True)
class FeatureSet:
    """Feature definitions with unique names, indexed the ways the engine needs them.

    A mean over the same rows as a sum of the same value, or as a count, of the set keeps no
    field of its own for that part: the set gives it ``total_from`` / ``count_from`` (the first
    such feature declared), and it reads them from there (``Mean.own_parts``). A mean that
    already has them (taken from another set) needs those features in this one too.
    """

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            msg = f"feature names must be unique; repeated: {', '.join(dupes)}"
            raise DefinitionError(msg)
        entities: dict[str, Entity] = {}
        for f in self.features:
            if entities.setdefault(f.entity.name, f.entity) != f.entity:
                msg = f"entity {f.entity.name} is declared with two key columns"
                raise DefinitionError(msg)
        object.__setattr__(
            self, "features", tuple(_shared(f, self.features) for f in self.features)
        )

    @classmethod
    def of(cls, features: Iterable[Feature]) -> FeatureSet:
        return cls(tuple(features))

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def by_name(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        msg = f"no feature named {name!r}"
        raise KeyError(msg)

    def entities(self) -> dict[str, Entity]:
        return {f.entity.name: f.entity for f in self.features}

    def for_entity(self, entity: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.entity.name == entity)

    def for_table(self, table: str) -> tuple[Feature, ...]:
        """Features whose rows come from ``table``."""
        return tuple(f for f in self.features if f.table == table)

    def lookups_from(self, table: str) -> tuple[Feature, ...]:
        """Features whose entity key ``table`` provides through a lookup."""
        return tuple(f for f in self.features if f.lookup and f.lookup.table == table)

    def tables(self) -> frozenset[str]:
        """Every table the pipeline must read (sources and lookup providers)."""
        return self._tables

    @cached_property
    def _tables(self) -> frozenset[str]:
        out = {f.table for f in self.features}
        out |= {f.lookup.table for f in self.features if f.lookup}
        return frozenset(out)

    def needed_columns(self, table: str) -> frozenset[str]:
        """Columns of ``table`` that some feature reads (computed once per table)."""
        return self._needed.get(table, frozenset())

    @cached_property
    def _needed(self) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for table in self._tables:
            cols: set[str] = set()
            for f in self.for_table(table):
                cols |= f.columns()
            for f in self.lookups_from(table):
                assert f.lookup is not None  # noqa: S101 - filtered above
                cols |= {f.lookup.key, f.lookup.provides}
            out[table] = frozenset(cols)
        return out

    def lifetime_entities(self) -> set[str]:
        """Entities with a lifetime feature: their state never expires as a whole."""
        return {f.entity.name for f in self.features if f.window is None}

    def max_window_seconds(self, entity: str) -> int:
        return max(
            (f.window_seconds + f.bucket_seconds for f in self.for_entity(entity)), default=0
        )


def _shared(feature: Feature, features: tuple[Feature, ...]) -> Feature:
    """``feature`` with the fields it reads from other features of ``features`` (a mean)."""
    if feature.agg != "mean":
        return feature

    def source(agg: str, given: str | None) -> str | None:
        def fits(other: Feature) -> bool:
            return (
                other.agg == agg
                and feature.same_rows(other)
                and (agg == "count" or (other.value, other.scale) == (feature.value, feature.scale))
            )

        if given is None:
            return next((f.name for f in features if fits(f)), None)
        if not any(f.name == given and fits(f) for f in features):
            msg = (
                f"feature {feature.name} keeps its {'total' if agg == 'sum' else 'row count'} in "
                f"the fields of {given}: put a {agg} {given} over the same rows in the same set"
            )
            raise DefinitionError(msg)
        return given

    total_from = source("sum", feature.total_from)
    count_from = source("count", feature.count_from)
    if (total_from, count_from) == (feature.total_from, feature.count_from):
        return feature
    return replace(feature, total_from=total_from, count_from=count_from)


CUSTOMER = Entity("customer", "customer_id")
MERCHANT = Entity("merchant", "merchant_id")
_M10, _H1, _H24, _D7 = (
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=24),
    timedelta(days=7),
)


def _pay(
    name: str,
    entity: Entity,
    agg: str,
    window: timedelta | None,
    value: str | None = None,
    where: tuple[Condition, ...] = (),
) -> Feature:
    return Feature(name, entity, "payments", "created_at", agg, value, where, window)


SAMPLE_FEATURES = FeatureSet.of(
    [
        _pay("payment_count_10m", CUSTOMER, "count", _M10),
        _pay("payment_count_1h", CUSTOMER, "count", _H1),
        _pay("payment_count_24h", CUSTOMER, "count", _H24),
        _pay("amount_sum_1h", CUSTOMER, "sum", _H1, "amount"),
        _pay("amount_sum_24h", CUSTOMER, "sum", _H24, "amount"),
        _pay("amount_mean_24h", CUSTOMER, "mean", _H24, "amount"),
        _pay(
            "declined_count_24h", CUSTOMER, "count", _H24, where=(Condition("status", "declined"),)
        ),
        _pay("distinct_merchants_24h", CUSTOMER, "distinct", _H24, "merchant_id"),
        _pay("payment_count_lifetime", CUSTOMER, "count", None),
        _pay("amount_sum_lifetime", CUSTOMER, "sum", None, "amount"),
        _pay("merchant_payment_count_1h", MERCHANT, "count", _H1),
        _pay("merchant_amount_sum_24h", MERCHANT, "sum", _H24, "amount"),
        Feature(
            "merchant_fraud_count_7d",
            MERCHANT,
            "payment_outcomes",
            "reported_at",
            "count",
            where=(Condition("is_fraud", True),),
            window=_D7,
            lookup=Lookup(
                column="payment_id", table="payments", key="payment_id", provides="merchant_id"
            ),
        ),
    ]
)

# The set the whole loop runs over the demo schema (the default FRESHLOOP_FEATURE_DEFINITIONS):
# the sample features plus what the fraud model needs beyond them. Change events keep only the
# columns some feature reads, so a pipeline that scores payments must read payments.channel (a
# fraud signal: bursts come through one channel); distinct channels per customer over 24 h is a
# fraud signal of its own. ``features run``, ``serve`` and ``learn serve`` compute this one set,
# so a namespace has one set whichever of them runs it.
SCORING_FEATURES = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        _pay("distinct_channels_24h", CUSTOMER, "distinct", _H24, "channel"),
    ]
)
