"""Change events for the feature set: the core's Debezium decoder (``freshloop.core.debezium``)
with the columns the features read and the checks of their rows (``columns.table_readers``).
Money stays text until a feature sums it (as ``Decimal``)."""

from __future__ import annotations

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.columns import table_readers
from freshloop.core.debezium import (
    ChangeEvent,
    Position,
    decode_envelope,
    format_position,
    parse_position,
)

__all__ = ["ChangeEvent", "Position", "decode", "format_position", "parse_position"]


def decode(
    value: bytes | None, key: bytes | None, features: FeatureSet, partition: int = 0
) -> ChangeEvent | None:
    """The change event in ``value`` (read from Kafka ``partition``); None for a tombstone or
    a table no feature reads."""
    return decode_envelope(value, key, table_readers(features), partition)
