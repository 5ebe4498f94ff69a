"""The SQL that recomputes each feature from Postgres: the oracle (pure: builds statements).

Derived from the same ``Feature`` as the incremental updater, and bound by the same window rule
(``windows``): a read at time t counts event times in [lo, hi) with
lo = (floor((t - W) / w) + 1) * w and hi = (floor(t / w) + 1) * w. The statement returns the
underlying state (row count, an exact decimal as text, values), measured as the feature's
aggregation kind says (``Kind.sql_measures``), which the kind turns into the state
``readout.finalize`` reads exactly as the online read does, so any difference is a real
mismatch.

The same statements serve point-in-time training data: pass the time of each prediction as t.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from feature_pipelines.aggregations import State, kind_of
from feature_pipelines.spec import Feature
from feature_pipelines.windows import bucket_range, scaled

__all__ = ["oracle_query", "state_from_row", "window_bounds"]


def window_bounds(feature: Feature, t_micros: int) -> tuple[int, int] | None:
    """[lo, hi) in whole seconds since the epoch, or None for a lifetime feature."""
    if feature.window is None:
        return None
    lo_bucket, hi_bucket = bucket_range(feature, t_micros)
    w = feature.bucket_seconds
    return ((lo_bucket + 1) * w, (hi_bucket + 1) * w)


def oracle_query(
    feature: Feature, t_micros: int, keys: Sequence[Any] | None = None
) -> tuple[sql.Composed, dict[str, Any]]:
    """``SELECT key, n, total, values`` per entity key, with bound parameters."""
    src = sql.Identifier(feature.table)
    s = sql.Identifier("s")
    if feature.lookup is None:
        key_expr = sql.SQL("{}.{}").format(s, sql.Identifier(feature.entity.key))
        from_clause = sql.SQL("{} AS {}").format(src, s)
    else:
        lk = feature.lookup
        p = sql.Identifier("p")
        key_expr = sql.SQL("{}.{}").format(p, sql.Identifier(lk.provides))
        from_clause = sql.SQL("{} AS {} JOIN {} AS {} ON {}.{} = {}.{}").format(
            src,
            s,
            sql.Identifier(lk.table),
            p,
            p,
            sql.Identifier(lk.key),
            s,
            sql.Identifier(lk.column),
        )
    params: dict[str, Any] = {}
    where = [sql.SQL("{} IS NOT NULL").format(key_expr)]
    for i, cond in enumerate(feature.where):
        params[f"c{i}"] = cond.equals
        where.append(
            sql.SQL("{}.{} = {}").format(s, sql.Identifier(cond.column), sql.Placeholder(f"c{i}"))
        )
    bounds = window_bounds(feature, t_micros)
    if bounds is not None:
        params["lo"], params["hi"] = bounds
        event_time = sql.SQL("{}.{}").format(s, sql.Identifier(feature.event_time))
        where.append(
            sql.SQL("{} >= to_timestamp({}) AND {} < to_timestamp({})").format(
                event_time, sql.Placeholder("lo"), event_time, sql.Placeholder("hi")
            )
        )
    if keys is not None:
        params["keys"] = [str(k) for k in keys]
        where.append(sql.SQL("{}::text = ANY({})").format(key_expr, sql.Placeholder("keys")))
    value = None
    if feature.value is not None:
        value = sql.SQL("{}.{}").format(s, sql.Identifier(feature.value))
    measures = kind_of(feature.agg).sql_measures(value)
    query = sql.SQL("SELECT {key}::text, {measures} FROM {src} WHERE {where} GROUP BY 1").format(
        key=key_expr,
        measures=measures,
        src=from_clause,
        where=sql.SQL(" AND ").join(where),
    )
    return query, params


def state_from_row(feature: Feature, n: int, total: str | None, values: list[str] | None) -> State:
    """The oracle's row as the same ``State`` the online read folds its fields into."""
    units = None if total is None else scaled(total, feature.scale, feature.value or "sum")
    return kind_of(feature.agg).oracle_state(feature, n, units, values)
