"""What an aggregation kind is: the one place that knows its fields, writes, folds and SQL.

A kind is a small stateless object, looked up by ``Feature.agg`` (``aggregations.kind_of``).
Everything else (the writers in ``windows``, the reference read in ``readout``, the client,
numpy and Lua folds in ``fold``, the SQL oracle) is generic and asks the kind. There are two
shapes of stored state, and the folds implement each once:

- counters (``Counters``): a few integer fields per bucket, ``name[:part][@bucket]``, each
  added into the feature's count or total (``parts``);
- keyed (``Keyed``): a row count per value, ``name[@bucket]#value``. A read sums each value's
  counts over the window's buckets and keeps the values with a positive count: their number
  is the fold's count, and a keyed kind with a ``reducer`` also folds their values (integers)
  into the fold's total with it (e.g. the smallest).

A fold row holds two integers per feature, ``a`` (count) and ``b`` (total); ``converter`` turns
them into the value ``finalize`` gives for the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from psycopg import sql

if TYPE_CHECKING:
    from feature_pipelines.spec import Feature

__all__ = ["Converter", "Counters", "FeatureValue", "Keyed", "Kind", "Reducer", "Slot", "State"]

FeatureValue = int | Decimal | None
Converter = Callable[[Sequence[int]], FeatureValue]
# Where a stored counter field goes: a State attribute; in a fold row, "total" is b and the
# others a (a mean's ``nulls`` count is subtracted from the count it borrows).
Slot = Literal["count", "total", "nulls"]


@dataclass
class State:
    """The underlying state of one feature for one entity."""

    count: int = 0
    total: int = 0  # scaled by 10**scale
    values: dict[str, int] = field(default_factory=dict)  # keyed kinds: value -> row count
    nulls: int = 0  # a mean with ``count_from``: rows of that count without a value


@dataclass(frozen=True)
class Reducer:
    """How a keyed kind folds its values with a positive count, said once per fold language:
    ``python(a, b)``, a numpy ufunc (``.at`` is used) and a Lua function expression. It must
    be associative, commutative and idempotent (min, max): the numpy fold seeds with one of
    the values, then folds all of them in."""

    python: Callable[[int, int], int]
    numpy: Any
    lua: str


class Kind:
    """One aggregation kind. Subclasses set ``name`` and the class flags and override the
    methods of their shape; instances hold no state and are shared by every feature."""

    name: ClassVar[str]
    takes_value: ClassVar[bool] = True  # False: counts rows (a value column is an error)
    decimal: ClassVar[bool] = False  # the value is an exact decimal, stored scaled
    keyed: ClassVar[bool] = False  # fields ``name[@bucket]#value`` (see ``Keyed``)
    reducer: ClassVar[Reducer | None] = None
    shares: ClassVar[bool] = False  # may read other features' fields (``total_from`` ...)

    # --- definition
    def describe(self, feature: Feature) -> str:
        """What ``describe`` says the feature computes, e.g. ``sum of amount``."""
        raise NotImplementedError

    # --- write: the reference, and the fragment ``windows.compile_group`` splices in
    def pairs(
        self, feature: Feature, suffix: str, value: Any, units: int | None
    ) -> list[tuple[str, int]]:
        """The (field, increment) pairs a row adds, given its bucket ``suffix`` ('' or
        ``@b``), its raw value and, for a decimal kind, the value scaled (None when NULL)."""
        raise NotImplementedError

    def write_code(self, feature: Feature, suffix: str, units: str) -> tuple[list[str], list[str]]:
        """``pairs`` as generated Python: (extra tests of the feature's ``if``, body lines).
        ``suffix`` is an expression for the bucket suffix, ``units`` the variable holding
        the scaled value of a decimal kind; ``row`` is the row and ``out`` the list."""
        raise NotImplementedError

    # --- read
    def parts(self, feature: Feature) -> tuple[tuple[str, Slot], ...]:
        """The counter fields the feature keeps (``name + part``), each with where it goes."""
        return ()

    def finalize(self, feature: Feature, state: State) -> FeatureValue:
        """The value a reader sees, from the reference state."""
        raise NotImplementedError

    def converter(self, feature: Feature, at: Mapping[str, int]) -> Converter:
        """Fold row -> ``finalize``'s value; the feature's a is at ``at[name]``, b next to it."""
        raise NotImplementedError

    # --- oracle
    def sql_measures(self, value: sql.Composable | None) -> sql.Composable:
        """Three SQL columns over the rows of one entity: a row count, an exact decimal (as
        text) or NULL, and an array of values as text or NULL."""
        raise NotImplementedError

    def oracle_state(
        self, feature: Feature, n: int, units: int | None, values: list[str] | None
    ) -> State:
        """The oracle's row as the state the online read folds its fields into (``units``:
        the decimal column scaled by 10**scale)."""
        state = State(count=int(n), total=0 if units is None else units)
        for value in values or []:
            if value is not None:
                state.values[value] = 1
        return state


class Counters(Kind):
    """A kind stored as integer fields added into the count or total (see ``parts``)."""


class Keyed(Kind):
    """A kind stored as a row count per value, ``name[@bucket]#value``: retractions stay
    exact because a value leaves only when its count drops to zero."""

    keyed = True

    def key(self, value: Any, units: int | None) -> str:
        """The text after ``#`` for a row's value."""
        return str(value)

    def key_code(self, value: str, units: str) -> str:
        """``key`` as a Python expression over the variables ``v`` (raw) and ``units``."""
        return f"str({value})"

    def pairs(
        self, feature: Feature, suffix: str, value: Any, units: int | None
    ) -> list[tuple[str, int]]:
        if value is None:  # SQL aggregates ignore NULLs too
            return []
        return [(f"{feature.name}{suffix}#{self.key(value, units)}", 1)]

    def write_code(self, feature: Feature, suffix: str, units: str) -> tuple[list[str], list[str]]:
        key = self.key_code("v", units)
        line = f"out.append(({feature.name!r} + {suffix} + '#' + {key}, 1))"
        if self.decimal:  # the scaled value is parsed once per row for the group
            return [f"{units} is not None"], [line]
        return [], [f"v = row[{feature.value!r}]", "if v is not None:", f"    {line}"]

    @staticmethod
    def positive(state: State) -> list[str]:
        """The values with a positive row count."""
        return [value for value, n in state.values.items() if n > 0]
