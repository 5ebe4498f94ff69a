"""Feature values from an entity's stored fields at a read time (pure).

The online store and the SQL oracle both end here: ``finalize`` turns the underlying state
(count, scaled sum, distinct values) into the value a user reads, so the two cannot disagree on
rounding. A mean is rounded to 6 decimal places (half-even); sums are exact decimals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from feature_pipelines.spec import Feature
from feature_pipelines.windows import bucket_range, parse_field

__all__ = ["FeatureValue", "Fields", "State", "expired_fields", "finalize", "read_values"]

FeatureValue = int | Decimal | None
# An entity hash as a Redis client returns it (bytes, or str with decode_responses) or as tests
# build it (str -> int).
Fields = Mapping[str, str] | Mapping[str, int] | Mapping[bytes, bytes]
_MEAN_PLACES = Decimal("0.000001")


@dataclass
class State:
    """The underlying state of one feature for one entity."""

    count: int = 0
    total: int = 0  # scaled by 10**scale
    values: dict[str, int] = field(default_factory=dict)  # distinct value -> row count


def finalize(feature: Feature, state: State) -> FeatureValue:
    """The value a reader sees."""
    if feature.agg == "count":
        return state.count
    if feature.agg == "distinct":
        return sum(1 for n in state.values.values() if n > 0)
    if feature.agg == "sum":
        return Decimal(state.total).scaleb(-feature.scale)
    if state.count <= 0:
        return None
    mean = (Decimal(state.total) / Decimal(state.count)).scaleb(-feature.scale)
    return mean.quantize(_MEAN_PLACES, rounding=ROUND_HALF_EVEN)


def read_states(features: Iterable[Feature], fields: Fields, t_micros: int) -> dict[str, State]:
    """Fold the stored fields of the given features into states, honouring the window rule."""
    wanted = {f.name: f for f in features}
    states: dict[str, State] = defaultdict(State)
    for raw_field, raw_value in fields.items():
        ref = parse_field(raw_field.decode() if isinstance(raw_field, bytes) else raw_field)
        if ref is None or ref.name not in wanted:
            continue
        feature = wanted[ref.name]
        if feature.window is not None:
            if ref.bucket is None:
                continue
            lo, hi = bucket_range(feature, t_micros)
            if not lo < ref.bucket <= hi:
                continue
        amount = int(raw_value)
        state = states[ref.name]
        if ref.value is not None:
            state.values[ref.value] = state.values.get(ref.value, 0) + amount
        elif feature.agg == "count" or ref.part == "n":
            state.count += amount
        else:
            state.total += amount
    return states


def read_values(
    features: Iterable[Feature], fields: Fields, t_micros: int
) -> dict[str, FeatureValue]:
    """Every given feature's value at ``t`` (an entity with no state reads 0 / None)."""
    features = list(features)
    states = read_states(features, fields, t_micros)
    return {f.name: finalize(f, states.get(f.name, State())) for f in features}


def expired_fields(
    features: Iterable[Feature], fields: Iterable[str] | Iterable[bytes], t_micros: int
) -> list[str]:
    """Bucket fields no read at or after ``t`` counts again (zeroed fields are deleted on write)."""
    by_name = {f.name: f for f in features}
    out = []
    for raw in fields:
        name = raw.decode() if isinstance(raw, bytes) else raw
        ref = parse_field(name)
        if ref is None or ref.name not in by_name or ref.bucket is None:
            continue
        lo, _hi = bucket_range(by_name[ref.name], t_micros)
        if ref.bucket <= lo:
            out.append(name)
    return out
