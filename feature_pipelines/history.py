"""Features as of a past commit, from the row history (pure: builds statements).

The tables hold only each row's current version; ``sql/009_history.sql`` keeps every version in
``<table>_history`` with the commit positions it was visible between (``_valid_from`` <= S <
``_valid_to``, NULL while current). A feature as of position S and read time t is the oracle's
computation (``oracle``: the same definitions, the same ``Kind.sql_measures``, the same window
rule) over the versions visible at S instead of the current rows:

    event time in [(floor((t - W) / w) + 1) * w, (floor(t / w) + 1) * w)

``as_of_query`` does it for a chunk of scored rows (e.g. payments) in one statement: a LATERAL
subquery per feature, each an index range scan of one entity's versions, so the cost grows with
the rows and their entities' activity, not with a query per row. The entity keys come from the
scored row's first version (the insert a scorer saw), so the scored table must carry each
feature's entity key column (``payments.customer_id``, ``payments.merchant_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from feature_pipelines.aggregations import State, kind_of
from feature_pipelines.oracle import state_from_row
from feature_pipelines.spec import Feature

__all__ = ["HISTORY_SUFFIX", "as_of_query", "history_table", "states_from_row"]

HISTORY_SUFFIX = "_history"


def history_table(table: str) -> str:
    """The history table of ``table`` (``sql/009_history.sql``)."""
    return f"{table}{HISTORY_SUFFIX}"


def _visible(alias: sql.Identifier) -> sql.Composable:
    return sql.SQL(
        "{a}._valid_from <= p._pos AND ({a}._valid_to IS NULL OR {a}._valid_to > p._pos)"
    ).format(a=alias)


def _window(feature: Feature, column: sql.Composable) -> sql.Composable | None:
    """The window rule over ``p._t_us`` (microseconds, positive), in integer arithmetic."""
    if feature.window is None:
        return None
    w_us = feature.bucket_seconds * 1_000_000
    big_w = feature.window_seconds * 1_000_000
    w_s = feature.bucket_seconds
    return sql.SQL(
        "{c} >= to_timestamp(((p._t_us - {W}) / {w} + 1) * {ws}) "
        "AND {c} < to_timestamp((p._t_us / {w} + 1) * {ws})"
    ).format(c=column, W=sql.Literal(big_w), w=sql.Literal(w_us), ws=sql.Literal(w_s))


def _feature_lateral(feature: Feature, index: int, params: dict[str, Any]) -> sql.Composable:
    """``SELECT <measures> FROM <versions of one entity visible at p._pos> WHERE ...``."""
    s = sql.Identifier("s")
    src = sql.SQL("{} AS {}").format(sql.Identifier(history_table(feature.table)), s)
    where: list[sql.Composable] = [_visible(s)]
    entity_key = sql.SQL("p.{}").format(sql.Identifier(feature.entity.key))
    if feature.lookup is None:
        where.append(
            sql.SQL("{}.{} = {}").format(s, sql.Identifier(feature.entity.key), entity_key)
        )
    else:
        lk = feature.lookup
        l_ = sql.Identifier("l")
        src = sql.SQL("{} JOIN {} AS {} ON {}.{} = {}.{} AND {}").format(
            src,
            sql.Identifier(history_table(lk.table)),
            l_,
            l_,
            sql.Identifier(lk.key),
            s,
            sql.Identifier(lk.column),
            _visible(l_),
        )
        where.append(sql.SQL("{}.{} = {}").format(l_, sql.Identifier(lk.provides), entity_key))
    for j, cond in enumerate(feature.where):
        name = f"f{index}_c{j}"
        params[name] = cond.equals
        where.append(
            sql.SQL("{}.{} = {}").format(s, sql.Identifier(cond.column), sql.Placeholder(name))
        )
    window = _window(feature, sql.SQL("{}.{}").format(s, sql.Identifier(feature.event_time)))
    if window is not None:
        where.append(window)
    value = (
        None if feature.value is None else sql.SQL("{}.{}").format(s, sql.Identifier(feature.value))
    )
    return sql.SQL("CROSS JOIN LATERAL (SELECT {m} FROM {src} WHERE {w}) AS {alias}").format(
        m=kind_of(feature.agg).sql_measures(value),
        src=src,
        w=sql.SQL(" AND ").join(where),
        alias=sql.Identifier(f"f{index}"),
    )


def as_of_query(
    features: Sequence[Feature], *, scored_table: str = "payments", scored_key: str = "payment_id"
) -> tuple[sql.Composed, dict[str, Any]]:
    """One statement computing ``features`` for a chunk of scored rows, each as of its own
    commit position and read time.

    Bind ``ids`` (the scored rows' keys), ``pos`` (commit positions) and ``t_us`` (read times,
    microseconds since the epoch), three arrays of equal length, into the returned parameters.
    Rows: the scored key, then three measures per feature in order (``states_from_row``).
    A scored row without history yields no row.

    >>> from feature_pipelines.catalog import SAMPLE_FEATURES
    >>> q, params = as_of_query([SAMPLE_FEATURES.by_name("declined_count_24h")])
    >>> params
    {'f0_c0': 'declined'}
    """
    params: dict[str, Any] = {}
    keys = sorted({f.entity.key for f in features})
    h = sql.Identifier("h")
    first = sql.SQL(
        "SELECT {cols} FROM {hist} AS h WHERE h.{key} = c._id ORDER BY h._version LIMIT 1"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(h, sql.Identifier(k)) for k in keys),
        hist=sql.Identifier(history_table(scored_table)),
        key=sql.Identifier(scored_key),
    )
    laterals = [_feature_lateral(f, i, params) for i, f in enumerate(features)]
    measures = [sql.SQL("{}.*").format(sql.Identifier(f"f{i}")) for i in range(len(features))]
    query = sql.SQL(
        "WITH c AS (SELECT * FROM unnest({ids}::bigint[], {pos}::bigint[], {t}::bigint[]) "
        "AS c(_id, _pos, _t_us)), "
        "p AS (SELECT c._id, c._pos, c._t_us, fv.* FROM c CROSS JOIN LATERAL ({first}) AS fv) "
        "SELECT p._id{sep}{measures} FROM p {laterals} ORDER BY p._pos, p._id"
    ).format(
        ids=sql.Placeholder("ids"),
        pos=sql.Placeholder("pos"),
        t=sql.Placeholder("t_us"),
        first=first,
        sep=sql.SQL(", ") if measures else sql.SQL(""),
        measures=sql.SQL(", ").join(measures),
        laterals=sql.SQL(" ").join(laterals),
    )
    return query, params


def states_from_row(features: Sequence[Feature], row: Sequence[Any]) -> dict[str, State]:
    """A row of ``as_of_query`` (without its leading key) as each feature's ``State``."""
    out: dict[str, State] = {}
    for i, f in enumerate(features):
        n, total, values = row[3 * i : 3 * i + 3]
        out[f.name] = state_from_row(f, n, total, values)
    return out
