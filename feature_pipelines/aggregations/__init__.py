"""Aggregation kinds, one class each, registered here by the name ``Feature.agg`` gives.

To add a kind, write a subclass of ``Counters`` or ``Keyed`` (see ``base``) and list an
instance in ``KINDS``: the writers, the reference read, the three folds, the SQL oracle and
``describe`` all ask the registry, and the comparison tests run over every registered kind.
"""

from __future__ import annotations

from feature_pipelines.aggregations.base import (
    Converter,
    Counters,
    FeatureValue,
    Keyed,
    Kind,
    Reducer,
    Slot,
    State,
)
from feature_pipelines.aggregations.counters import Count, Mean, Sum, mean_value
from feature_pipelines.aggregations.distinct import Distinct
from feature_pipelines.aggregations.extremes import Max, Min
from feature_pipelines.exceptions import DefinitionError

__all__ = [
    "KINDS",
    "Converter",
    "Counters",
    "FeatureValue",
    "Keyed",
    "Kind",
    "Reducer",
    "Slot",
    "State",
    "kind_of",
    "mean_value",
]

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (Count(), Sum(), Mean(), Distinct(), Min(), Max())
}


def kind_of(name: str) -> Kind:
    """The registered kind called ``name``."""
    kind = KINDS.get(name)
    if kind is None:
        msg = f"aggregation must be one of {', '.join(KINDS)}; got {name!r}"
        raise DefinitionError(msg)
    return kind
