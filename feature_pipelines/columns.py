"""The shape each needed column must have, derived from what the features declare (pure).

Decoding checks a row image against these rules so that a value no feature could use (a float
amount because ``decimal.handling.mode`` is not ``string``, a timestamp that is not ISO text, an
object as an entity key, a filter column of another JSON type than the filter's value) fails
*at decode*, where the shell dead-letters that one event, instead of failing the whole batch
later in the planner. Nothing is keyed by table name: the rules come from the definitions, so a
user's own features for their own tables are checked the same way. NULL is always accepted: a
row with a NULL key, value or event time simply contributes nothing, as in SQL.

Example:
    >>> from feature_pipelines.catalog import SAMPLE_FEATURES
    >>> sorted(column for column, _kind, _arg in rules_for(SAMPLE_FEATURES, "payment_outcomes"))
    ['is_fraud', 'payment_id', 'reported_at']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from feature_pipelines.aggregations import kind_of
from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import DecodeError
from feature_pipelines.windows import event_micros, scaled

__all__ = ["Checker", "Rule", "check_row", "rules_for", "table_readers"]

# (column, kind, argument); kind is one of time, decimal, key, scalar, equals
Rule = tuple[str, str, Any]
# check(row, where) -> what it parsed; raises DecodeError
Checker = Callable[[Mapping[str, Any], str], dict[Any, int]]
# per feature set, built once: its rules by table, and by table its needed columns and check
_CACHE: dict[
    int,
    tuple[FeatureSet, dict[str, tuple[Rule, ...]], dict[str, tuple[frozenset[str], Checker]]],
] = {}
_JSON_TYPE = {bool: "a boolean", int: "an integer", str: "text", float: "a number"}


def _build(features: FeatureSet) -> dict[str, tuple[Rule, ...]]:
    rules: dict[str, dict[Rule, None]] = {}
    for f in features:
        own = rules.setdefault(f.table, {})
        if f.window is not None:
            own[(f.event_time, "time", None)] = None
        own[(f.lookup.column if f.lookup else f.entity.key, "key", None)] = None
        if f.value is not None:
            kind = "decimal" if kind_of(f.agg).decimal else "scalar"
            own[(f.value, kind, f.scale if kind == "decimal" else None)] = None
        for cond in f.where:
            own[(cond.column, "equals", cond.equals)] = None
        if f.lookup is not None:
            provider = rules.setdefault(f.lookup.table, {})
            provider[(f.lookup.key, "key", None)] = None
            provider[(f.lookup.provides, "key", None)] = None
    return {table: tuple(found) for table, found in rules.items()}


def _cached(
    features: FeatureSet,
) -> tuple[FeatureSet, dict[str, tuple[Rule, ...]], dict[str, tuple[frozenset[str], Checker]]]:
    cached = _CACHE.get(id(features))
    if cached is None or cached[0] is not features:
        rules = _build(features)
        readers = {
            t: (features.needed_columns(t), _checker(rules.get(t, ()))) for t in features.tables()
        }
        cached = _CACHE[id(features)] = (features, rules, readers)
    return cached


def rules_for(features: FeatureSet, table: str) -> tuple[Rule, ...]:
    """The rules for ``table``'s rows, built once per feature set."""
    return _cached(features)[1].get(table, ())


def table_readers(features: FeatureSet) -> dict[str, tuple[frozenset[str], Checker]]:
    """For each table the feature set reads: its needed columns and the check of its rows
    (``check_row`` as one function; a row that is None is the caller's to skip). Built once per
    feature set, so decoding looks both up with one dict access per event."""
    return _cached(features)[2]


def _fail(where: str, column: str, expected: str, value: Any) -> None:
    msg = f"{where}.{column} must be {expected}, got {value!r}"
    raise DecodeError(msg)


_CHECKERS: dict[tuple[Rule, ...], Checker] = {}


def _checker(rules: tuple[Rule, ...]) -> Checker:
    """``rules`` as one generated function of straight-line checks (decoding's hot path).

    Common values pass with one inline type test; anything else goes to ``_check_one``, which
    holds the rule's logic and its error message. Names and constants are embedded with ``repr``.
    """
    found = _CHECKERS.get(rules)
    if found is not None:
        return found
    lines = ["def check(row, where):", "    parsed = {}"]
    for n, (column, kind, arg) in enumerate(rules):
        col = repr(column)
        lines.append(f"    v = row[{col}]")
        lines.append("    if v is not None:")
        if kind == "time":
            lines.append(f"        parsed[{col}] = event_micros(v, where + {'.' + column!r})")
        elif kind == "decimal":
            lines.append(
                f"        parsed[{(column, arg)!r}] = scaled(v, {arg!r}, where + {'.' + column!r})"
            )
        elif kind == "key":
            lines.append("        if type(v) is not int and type(v) is not str:")
            lines.append(f"            check_one(RULES[{n}], v, where)")
        elif kind == "scalar":
            lines.append("        if type(v) not in SCALARS:")
            lines.append(f"            check_one(RULES[{n}], v, where)")
        else:
            lines.append(f"        if type(v) is not {type(arg).__name__}:")
            lines.append(f"            check_one(RULES[{n}], v, where)")
    lines.append("    return parsed")
    namespace: dict[str, Any] = {
        "event_micros": event_micros,
        "scaled": scaled,
        "check_one": _check_one,
        "RULES": rules,
        "SCALARS": (bool, int, str, float),
    }
    exec(compile("\n".join(lines), "<column checks>", "exec"), namespace)  # noqa: S102
    found = _CHECKERS[rules] = namespace["check"]
    return found


def _check_one(rule: Rule, value: Any, where: str) -> None:
    column, kind, arg = rule
    if kind == "key":
        if isinstance(value, bool) or not isinstance(value, int | str):
            _fail(where, column, "an integer or text key", value)
    elif kind == "scalar":
        if not isinstance(value, bool | int | str | float):
            _fail(where, column, "a single value (not an object or array)", value)
    elif type(value) is not type(arg):
        wanted = _JSON_TYPE.get(type(arg), type(arg).__name__)
        _fail(where, column, f"{wanted} to compare with the filter value {arg!r}", value)


def check_row(rules: tuple[Rule, ...], row: Mapping[str, Any] | None, where: str) -> dict[Any, int]:
    """Raise ``DecodeError`` naming the first column whose value no feature could use.

    Returns what checking parsed, for the planner not to parse it again: event times by
    column (microseconds) and exact amounts by ``(column, scale)`` (integer units), the memo
    ``windows.compile_group``'s functions take.
    """
    if row is None:
        return {}
    return _checker(rules)(row, where)
