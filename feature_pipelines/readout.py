"""Feature values from an entity's stored fields at a read time (pure).

The online store and the SQL oracle both end here: ``finalize`` turns the underlying state
(count, scaled sum, values with their row counts) into the value a user reads, through the
feature's aggregation kind, so the two cannot disagree on rounding. A mean is rounded to 6
decimal places (half-even); sums are exact decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from feature_pipelines.aggregations import FeatureValue, Slot, State, kind_of, mean_value
from feature_pipelines.exceptions import DefinitionError
from feature_pipelines.spec import Feature
from feature_pipelines.windows import FieldRef, bucket_range, parse_field

__all__ = [
    "FeatureValue",
    "Fields",
    "ReadPlan",
    "State",
    "finalize",
    "mean_value",
]

# An entity hash as a Redis client returns it (bytes, or str with decode_responses) or as tests
# build it (str -> int).
Fields = Mapping[str, str] | Mapping[str, int] | Mapping[bytes, bytes]


def finalize(feature: Feature, state: State) -> FeatureValue:
    """The value a reader sees (the kind's ``finalize``)."""
    return kind_of(feature.agg).finalize(feature, state)


_MISS = object()
_PARSED: dict[str | bytes, FieldRef | None] = {}
_PARSED_MAX = 500_000  # field names repeat across entities and reads: parse each once


def _parse(raw: str | bytes) -> FieldRef | None:
    ref = _PARSED.get(raw, _MISS)
    if ref is _MISS:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        ref = _PARSED[raw] = parse_field(raw.decode() if isinstance(raw, bytes) else raw)
    return ref  # type: ignore[return-value]


class ReadPlan:
    """The features to read and, for windowed ones, the buckets a read at ``t`` counts.

    Built once per read time and used for every entity of a batch read.
    """

    __slots__ = ("_slots", "features", "wanted")

    def __init__(self, features: Iterable[Feature], t_micros: int) -> None:
        self.features = list(features)
        self.wanted: dict[str, tuple[Feature, int, int]] = {}
        # per feature, its counter fields' parts and where each goes; None: a keyed kind
        self._slots: dict[str, dict[str, Slot] | None] = {}
        for f in self.features:
            lo, hi = bucket_range(f, t_micros) if f.window is not None else (0, 0)
            self.wanted[f.name] = (f, lo, hi)
            kind = kind_of(f.agg)
            parts = kind.parts(f)  # as ``parse_field`` gives them: ':s' -> 's'
            slots = {part.removeprefix(":"): slot for part, slot in parts}
            self._slots[f.name] = None if kind.keyed else slots
        for f in self.features:
            for source in (f.total_from, f.count_from):
                if source and source not in self.wanted:
                    msg = f"a read of {f.name} needs {source}, whose fields it reads: read both"
                    raise DefinitionError(msg)

    def states(self, fields: Fields) -> dict[str, State]:
        """Fold the stored fields of the plan's features into states (the window rule)."""
        wanted = self.wanted
        states: dict[str, State] = {}
        for raw_field, raw_value in fields.items():
            ref = _parse(raw_field)
            if ref is None:
                continue
            entry = wanted.get(ref.name)
            if entry is None:
                continue
            feature, lo, hi = entry
            if feature.window is not None:
                if ref.bucket is None or not lo < ref.bucket <= hi:
                    continue
            slots = self._slots[ref.name]
            slot: Slot | None = None
            if slots is None:  # a keyed kind: 'name[@bucket]#value' only
                if ref.value is None or ref.part:
                    continue
            else:
                slot = slots.get(ref.part) if ref.value is None else None
                if slot is None:  # another layout's part, or not the feature's at all
                    continue
            amount = int(raw_value)
            state = states.get(ref.name)
            if state is None:
                state = states[ref.name] = State()
            if ref.value is not None:
                state.values[ref.value] = state.values.get(ref.value, 0) + amount
            elif slot == "count":
                state.count += amount
            elif slot == "nulls":
                state.nulls += amount
            else:
                state.total += amount
        for f in self.features:  # a mean's parts kept by other features
            if f.total_from or f.count_from:
                state = states.get(f.name) or State()
                if f.total_from:
                    state.total = states.get(f.total_from, State()).total
                if f.count_from:
                    state.count = states.get(f.count_from, State()).count - state.nulls
                states[f.name] = state
        return states

    def values(self, fields: Fields) -> dict[str, FeatureValue]:
        """Every feature's value (an entity with no state reads 0 / None)."""
        states = self.states(fields)
        empty = State()
        return {f.name: finalize(f, states.get(f.name, empty)) for f in self.features}
