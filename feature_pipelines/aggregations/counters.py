"""Count, sum and mean: kinds stored as integer counters per bucket (``name[:part][@bucket]``).

Sums and a mean's total are integers scaled by 10**scale, so money stays exact. A mean keeps
``:s`` (total) and ``:n`` (rows with a value), unless its set has a sum of the same value over
the same rows (``total_from``: it reads that sum's fields) or a count over the same rows
(``count_from``: it reads that count's fields less ``:z``, its rows without a value). It keeps
only what no other feature stores (``Mean.own_parts``); ``catalog.FeatureSet`` decides which.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from psycopg import sql

from feature_pipelines.aggregations.base import Converter, Counters, FeatureValue, Slot, State

if TYPE_CHECKING:
    from feature_pipelines.spec import Feature

__all__ = ["Count", "Mean", "Sum", "mean_value"]

_MEAN_DIGITS = 6
_MEAN_UNITS = 10**_MEAN_DIGITS


def mean_value(total: int, count: int, scale: int) -> Decimal | None:
    """``total / 10**scale / count`` to 6 places, half-even, in exact integers (no 28-digit
    context); None when there is nothing to average."""
    if count <= 0:
        return None
    den = count * 10**scale
    q, r = divmod(total * _MEAN_UNITS, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
    return Decimal(f"{q}e-{_MEAN_DIGITS}")  # exact: the constructor does not round


class Count(Counters):
    """Rows (that pass the filter, in the window): one field ``name[@bucket]``."""

    name = "count"
    takes_value = False

    def describe(self, feature: Feature) -> str:
        return "count of rows"

    def pairs(
        self, feature: Feature, suffix: str, value: Any, units: int | None
    ) -> list[tuple[str, int]]:
        return [(feature.name + suffix, 1)]

    def write_code(self, feature: Feature, suffix: str, units: str) -> tuple[list[str], list[str]]:
        return [], [f"out.append(({feature.name!r} + {suffix}, 1))"]

    def parts(self, feature: Feature) -> tuple[tuple[str, Slot], ...]:
        return (("", "count"),)

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        return state.count

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        i = at[feature.name]
        return lambda row: row[i]

    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        return sql.SQL("count(*), NULL::text, NULL::text[]")


class Sum(Counters):
    """The exact sum of a decimal column (NULLs count for nothing, as in SQL)."""

    name = "sum"
    decimal = True

    def describe(self, feature: Feature) -> str:
        return f"sum of {feature.value}"

    def pairs(
        self, feature: Feature, suffix: str, value: Any, units: int | None
    ) -> list[tuple[str, int]]:
        return [] if units is None else [(feature.name + suffix, units)]

    def write_code(self, feature: Feature, suffix: str, units: str) -> tuple[list[str], list[str]]:
        return [f"{units} is not None"], [f"out.append(({feature.name!r} + {suffix}, {units}))"]

    def parts(self, feature: Feature) -> tuple[tuple[str, Slot], ...]:
        return (("", "total"),)

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        return Decimal(state.total).scaleb(-feature.scale)

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        i, shift = at[feature.name], -feature.scale
        return lambda row: Decimal(row[i + 1]).scaleb(shift)

    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        return sql.SQL("count({v}), sum({v})::text, NULL::text[]").format(v=value)


class Mean(Counters):
    """The mean of a decimal column, to 6 places half-even (None over no values)."""

    name = "mean"
    decimal = True
    shares = True

    def describe(self, feature: Feature) -> str:
        return f"mean of {feature.value}"

    @staticmethod
    def own_parts(feature: Feature) -> tuple[str, ...]:
        """The parts a mean keeps in fields of its own: ``s`` (total) unless it has
        ``total_from``, and ``n`` (rows with a value), or ``z`` (rows without one) when it
        has ``count_from``."""
        return ("z" if feature.count_from else "n",) + (() if feature.total_from else ("s",))

    def pairs(
        self, feature: Feature, suffix: str, value: Any, units: int | None
    ) -> list[tuple[str, int]]:
        if units is None:
            if feature.count_from:  # its count's row is not in the mean
                return [(f"{feature.name}:z{suffix}", 1)]
            return []
        out = [] if feature.total_from else [(f"{feature.name}:s{suffix}", units)]
        if not feature.count_from:
            out.append((f"{feature.name}:n{suffix}", 1))
        return out

    def write_code(self, feature: Feature, suffix: str, units: str) -> tuple[list[str], list[str]]:
        # its own parts only, in ``pairs``' order; the bucket suffix is made only where a
        # field is written (the sample mean, sharing both parts, writes nothing for a payment
        # with an amount)
        name = feature.name
        body: list[str] = []
        if feature.count_from:
            body += [f"if {units} is None:", f"    out.append(({name + ':z'!r} + {suffix}, 1))"]
        own = [] if feature.total_from else [f"out.append(({name + ':s'!r} + sfx, {units}))"]
        if not feature.count_from:
            own.append(f"out.append(({name + ':n'!r} + sfx, 1))")
        if own:
            body += [f"if {units} is not None:", f"    sfx = {suffix}", *(f"    {x}" for x in own)]
        return [], body

    def parts(self, feature: Feature) -> tuple[tuple[str, Slot], ...]:
        slot: dict[str, Slot] = {"s": "total", "n": "count", "z": "nulls"}
        return tuple((f":{part}", slot[part]) for part in self.own_parts(feature))

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        return mean_value(state.total, state.count, feature.scale)

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        # a mean with total_from / count_from takes them from those features' places (its own
        # a then counts ``z``)
        i, scale = at[feature.name], feature.scale
        total_at = at[feature.total_from] + 1 if feature.total_from else i + 1
        if not feature.count_from:
            return lambda row: mean_value(row[total_at], row[i], scale)
        count_at = at[feature.count_from]
        return lambda row: mean_value(row[total_at], row[count_at] - row[i], scale)

    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        # exact sum and count, finalized like the online read
        return sql.SQL("count({v}), sum({v})::text, NULL::text[]").format(v=value)
