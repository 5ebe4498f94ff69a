"""Feature definitions: one typed declaration per feature, from which everything else derives.

A ``Feature`` names its entity, source table, event-time column, aggregation, value column, an
optional filter and a sliding window (or none: lifetime). From it the pipeline derives the
incremental updater (``windows.compile_group``), the SQL that recomputes it from Postgres
(``oracle``) and its documentation (``describe``). Users declare their own features for their
own tables the same way; the engine needs no change.

Example:
    >>> from datetime import timedelta
    >>> customer = Entity("customer", "customer_id")
    >>> f = Feature("declined_count_24h", customer, "payments", "created_at", "count",
    ...             where=(Condition("status", "declined"),), window=timedelta(hours=24))
    >>> f.bucket_seconds
    1440
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from feature_pipelines.aggregations import kind_of
from feature_pipelines.exceptions import DefinitionError

__all__ = ["Aggregation", "Condition", "Entity", "Feature", "Lookup", "describe"]

# The name of a registered kind (``aggregations.KINDS``): count, sum, mean, distinct, ...
Aggregation = str
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        msg = f"{what} {value!r} must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)"
        raise DefinitionError(msg)
    return value


@dataclass(frozen=True)
class Entity:
    """What features describe, and the column holding its key (e.g. customer / customer_id)."""

    name: str
    key: str

    def __post_init__(self) -> None:
        _ident(self.name, "entity name")
        _ident(self.key, "entity key column")


@dataclass(frozen=True)
class Condition:
    """Row filter: ``column = equals`` (JSON value as Debezium sends it: str, int or bool)."""

    column: str
    equals: str | int | bool

    def __post_init__(self) -> None:
        _ident(self.column, "filter column")


@dataclass(frozen=True)
class Lookup:
    """The entity key comes from another table: ``table.provides`` where ``table.key`` equals
    this row's ``column`` (e.g. outcome.payment_id -> payments.merchant_id)."""

    column: str
    table: str
    key: str
    provides: str

    def __post_init__(self) -> None:
        for value, what in (
            (self.column, "lookup column"),
            (self.table, "lookup table"),
            (self.key, "lookup key"),
            (self.provides, "lookup provides"),
        ):
            _ident(value, what)


@dataclass(frozen=True)
class Feature:
    """One feature. ``window=None`` means over the whole lifetime."""

    name: str
    entity: Entity
    table: str
    event_time: str
    agg: Aggregation
    value: str | None = None
    where: tuple[Condition, ...] = ()
    window: timedelta | None = None
    lookup: Lookup | None = None
    scale: int = 2  # decimal places kept exactly for decimal kinds (sum, mean, ...)
    description: str = field(default="", compare=False)
    # Storage only, set by ``FeatureSet``: a mean over the same rows as a sum (same value) or a
    # count of its set reads its total / row count from that feature's fields instead of
    # keeping its own (see ``windows``).
    total_from: str | None = None
    count_from: str | None = None

    def __post_init__(self) -> None:
        _ident(self.name, "feature name")
        _ident(self.table, "source table")
        _ident(self.event_time, "event-time column")
        try:
            kind = kind_of(self.agg)
        except DefinitionError as exc:
            msg = f"feature {self.name}: {exc}"
            raise DefinitionError(msg) from None
        if not kind.takes_value and self.value is not None:
            msg = f"feature {self.name}: {self.agg} takes no value column (use a filter instead)"
            raise DefinitionError(msg)
        if kind.takes_value:
            if self.value is None:
                msg = f"feature {self.name}: {self.agg} needs a value column"
                raise DefinitionError(msg)
            _ident(self.value, "value column")
        if not 0 <= self.scale <= 12:
            msg = f"feature {self.name}: scale must be 0..12 decimal places"
            raise DefinitionError(msg)
        if self.window is not None:
            seconds = self.window.total_seconds()
            if seconds < 60 or seconds % 60:
                msg = f"feature {self.name}: window must be a whole number of minutes >= 1"
                raise DefinitionError(msg)
        if not kind.shares and (self.total_from or self.count_from):
            msg = f"feature {self.name}: only a mean takes its total or count from another feature"
            raise DefinitionError(msg)
        if self.lookup is not None and self.lookup.table == self.table:
            msg = f"feature {self.name}: a lookup must read another table"
            raise DefinitionError(msg)

    @property
    def bucket_seconds(self) -> int:
        """Bucket width: exactly window / 60 (whole seconds); 0 for lifetime features."""
        return 0 if self.window is None else int(self.window.total_seconds()) // 60

    @property
    def window_seconds(self) -> int:
        return 0 if self.window is None else int(self.window.total_seconds())

    def same_rows(self, other: Feature) -> bool:
        """Whether ``other`` aggregates exactly the rows this feature does, into the same
        entity and buckets (same source, filter, event time, window and lookup)."""
        return (
            self.entity == other.entity
            and self.table == other.table
            and self.event_time == other.event_time
            and self.where == other.where
            and self.window == other.window
            and self.lookup == other.lookup
        )

    def columns(self) -> set[str]:
        """Columns of the source row this feature reads."""
        cols = {self.event_time, *(c.column for c in self.where)}
        cols.add(self.lookup.column if self.lookup else self.entity.key)
        if self.value is not None:
            cols.add(self.value)
        return cols


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe(feature: Feature) -> str:
    """One line for ``freshloop features list``."""
    what = kind_of(feature.agg).describe(feature)
    where = " and ".join(f"{c.column} = {c.equals!r}" for c in feature.where)
    span = (
        "lifetime"
        if feature.window is None
        else f"window {_span(feature.window_seconds)} (buckets of {_span(feature.bucket_seconds)})"
    )
    via = ""
    if feature.lookup:
        lk = feature.lookup
        via = (
            f" via {lk.table}.{lk.provides} (by {feature.table}.{lk.column} = {lk.table}.{lk.key})"
        )
    text = f"{feature.entity.name}.{feature.name}: {what} in {feature.table}{via}"
    if where:
        text += f" where {where}"
    text += f", by {feature.event_time}, {span}"
    shared = [name for name in (feature.total_from, feature.count_from) if name]
    if shared:  # what an operator finds in Redis: see ``aggregations.Mean.own_parts``
        text += f"; reads the fields of {' and '.join(shared)}"
    return text
