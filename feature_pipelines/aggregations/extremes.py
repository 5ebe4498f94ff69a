"""Min and max of a decimal column, over a window or the lifetime.

A smallest value cannot be retracted from a running minimum, so these keep what distinct
keeps: per bucket, a row count per value (``name[@bucket]#<units>``, the value scaled by
10**scale like a sum, so ``#1234`` is 12.34 at scale 2). An update or delete lowers its
value's count; a read sums each value's counts over the window and takes the smallest
(largest) value with a positive count, or None when there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from feature_pipelines.aggregations.base import Converter, FeatureValue, Keyed, Reducer, State

if TYPE_CHECKING:
    from feature_pipelines.spec import Feature

__all__ = ["Max", "Min"]


class _Extreme(Keyed):
    decimal = True
    pick: Any  # min or max

    def describe(self, feature: Feature) -> str:
        return f"{self.name} of {feature.value}"

    def key(self, value: Any, units: int | None) -> str:
        return str(units)

    def key_code(self, value: str, units: str) -> str:
        return f"str({units})"

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        values = self.positive(state)
        if not values:
            return None
        return Decimal(self.pick(map(int, values))).scaleb(-feature.scale)

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        i, shift = at[feature.name], -feature.scale
        return lambda row: Decimal(row[i + 1]).scaleb(shift) if row[i] else None

    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        return sql.SQL("count({v}), {pick}({v})::text, NULL::text[]").format(
            v=value, pick=sql.SQL(self.name)
        )

    def oracle_state(
        self, feature: Feature, n: int, units: int | None, values: list[str] | None
    ) -> State:
        return State(count=int(n), values={} if units is None else {str(units): 1})


class Min(_Extreme):
    """The smallest value of a decimal column (None over no values)."""

    name = "min"
    pick = min
    reducer = Reducer(min, np.minimum, "math.min")


class Max(_Extreme):
    """The largest value of a decimal column (None over no values)."""

    name = "max"
    pick = max
    reducer = Reducer(max, np.maximum, "math.max")
