"""Distinct count: a row count per value (``name[@bucket]#value``); a read counts the values
whose count over the window is positive, so updates and deletes retract exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from psycopg import sql

from feature_pipelines.aggregations.base import Converter, FeatureValue, Keyed, State

if TYPE_CHECKING:
    from feature_pipelines.spec import Feature

__all__ = ["Distinct"]


class Distinct(Keyed):
    """How many different values a column takes (any scalar, compared as text)."""

    name = "distinct"

    def describe(self, feature: Feature) -> str:
        return f"distinct count of {feature.value}"

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        return len(self.positive(state))

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        i = at[feature.name]
        return lambda row: row[i]

    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        return sql.SQL("count({v}), NULL::text, array_agg(DISTINCT {v}::text)").format(v=value)
