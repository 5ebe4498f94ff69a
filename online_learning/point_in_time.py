"""Point-in-time vectors of given payments, from the row history (``sql/009_history.sql``).

The training set's computation (``training_set.served_as_of``, the oracle's definitions over
the row versions visible at a commit position) for payments chosen by id rather than by commit
range: what the skew audit (``drift.skew_audit``) compares with the logged vectors and what a
retrain from recomputed vectors (``FRESHLOOP_RETRAIN_VECTORS=recomputed``) learns from.

- ``scored_payments``: each payment as inserted, with its insert's commit position and time
  (a payment without history, committed before it started or pruned since, is absent);
- ``vectors_as_of``: the service's vector (``build_vector``) of each payment as of a commit
  position, read at a given time (default: its commit's), in chunks of one statement each;
- ``positions_near``: the commit positions of changes to the service's tables (or of those
  that reach one payment's customer or merchant) within a time span, the candidates a logged
  vector may have been read at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from feature_pipelines.history import as_of_query, history_table, states_from_row
from feature_pipelines.readout import finalize
from feature_pipelines.services import FeatureService
from feature_pipelines.spec import Lookup
from online_learning.exceptions import TrainingSetError
from online_learning.records import Payment
from online_learning.training_set import ScoredPayment
from online_learning.vector import build_vector

__all__ = ["Probe", "positions_near", "scored_payments", "vectors_as_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FIRST_VERSIONS = """
SELECT DISTINCT ON (h.payment_id) h.payment_id, h.customer_id, h.merchant_id, h.amount,
       h.channel, h.status, h.created_at, h._valid_from, h._committed_at
  FROM payments_history h
 WHERE h.payment_id = ANY(%(ids)s)
 ORDER BY h.payment_id, h._version
"""


@dataclass(frozen=True)
class Probe:
    """One vector to compute: ``scored`` as of commit ``position``, read at ``read_at``."""

    scored: ScoredPayment
    position: int
    read_at: datetime


def scored_payments(conn: psycopg.Connection, ids: Iterable[int]) -> dict[int, ScoredPayment]:
    """The payments ``ids`` as inserted, with their insert's commit position and time."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(_FIRST_VERSIONS, {"ids": wanted}).fetchall()
    return {
        r[0]: ScoredPayment(Payment(r[0], r[1], r[2], r[3], r[4], r[5], r[6]), r[7], r[8])
        for r in rows
    }


def vectors_as_of(
    conn: psycopg.Connection,
    service: FeatureService,
    probes: Sequence[Probe],
    *,
    chunk: int = 1000,
) -> list[dict[str, float]]:
    """The service's vector of every probe, in the probes' order (one statement per chunk).

    The statement is ``training_set.served_as_of``'s (``as_of_query``), built once; its rows
    come in (position, payment) order, which places each probe's row (probes that share both
    go in separate statements). Every probe's payment must have history (``scored_payments``).
    """
    features = service.definitions()
    query, base = as_of_query(features)
    rounds: list[list[int]] = []
    taken: list[set[tuple[int, int]]] = []
    for j, probe in enumerate(probes):
        key = (probe.position, probe.scored.payment.payment_id)
        k = next((n for n, keys in enumerate(taken) if key not in keys), len(taken))
        if k == len(taken):
            rounds.append([])
            taken.append(set())
        rounds[k].append(j)
        taken[k].add(key)
    out: list[dict[str, float] | None] = [None] * len(probes)
    for members in rounds:
        for i in range(0, len(members), chunk):
            part = sorted(
                members[i : i + chunk],
                key=lambda j: (probes[j].position, probes[j].scored.payment.payment_id),
            )
            params = base | {
                "ids": [probes[j].scored.payment.payment_id for j in part],
                "pos": [probes[j].position for j in part],
                "t_us": [_micros(probes[j].read_at) for j in part],
            }
            rows = conn.execute(query, params).fetchall()
            if [r[0] for r in rows] != params["ids"]:
                msg = (
                    f"{len(part) - len(rows)} of {len(part)} payments have no row history: "
                    "pass only payments scored_payments found"
                )
                raise TrainingSetError(msg)
            for j, row in zip(part, rows, strict=True):
                states = states_from_row(features, row[1:])
                served = {f.name: finalize(f, states[f.name]) for f in features}
                out[j] = build_vector(probes[j].scored.payment, served, service.features)
    return [v for v in out if v is not None]


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def positions_near(
    conn: psycopg.Connection,
    service: FeatureService,
    start: datetime,
    end: datetime,
    payment: Payment | None = None,
) -> list[int]:
    """Commit positions of the changes to the service's tables committed in [start, end]:
    every state the history passed through in that span begins at one of them.

    With ``payment``: only the changes of rows that count towards its entities' features (a
    source row of the payment's customer or merchant, directly or through the feature's
    lookup, or a lookup row providing one), the positions where the state its vector reads
    changed; any other position of the span gives the vector of one of these.
    """
    params: dict[str, Any] = {"lo": start, "hi": end}
    parts = []
    for table, cond in _entity_filters(service, payment, params):
        parts.append(
            sql.SQL(
                "SELECT s._valid_from FROM {h} AS s WHERE s._committed_at BETWEEN %(lo)s AND "
                "%(hi)s AND {c} UNION SELECT s._valid_to FROM {h} AS s WHERE s._closed_at "
                "BETWEEN %(lo)s AND %(hi)s AND {c}"
            ).format(h=sql.Identifier(history_table(table)), c=cond)
        )
    rows = conn.execute(sql.SQL(" UNION ").join(parts), params).fetchall()
    return sorted(r[0] for r in rows if r[0] is not None)


def _entity_filters(
    service: FeatureService, payment: Payment | None, params: dict[str, Any]
) -> list[tuple[str, sql.Composable]]:
    """(table, condition on its history's alias ``s``) per distinct way a change of a table
    reaches the payment's entities (no payment: every change); values bound into ``params``."""
    if payment is None:
        return [(table, sql.SQL("true")) for table in service.tables()]
    # (table, column, lookup or None) -> the entity's value
    found: dict[tuple[str, str, Lookup | None], Any] = {}
    for f in service.definitions():
        value = getattr(payment, f.entity.key)
        if f.lookup is None:
            found[(f.table, f.entity.key, None)] = value
        else:
            found[(f.table, f.lookup.provides, f.lookup)] = value
            found[(f.lookup.table, f.lookup.provides, None)] = value
    out: list[tuple[str, sql.Composable]] = []
    for j, ((table, column, lookup), value) in enumerate(found.items()):
        v = sql.Placeholder(f"v{j}")
        params[f"v{j}"] = value
        if lookup is None:
            cond: sql.Composable = sql.SQL("s.{} = {}").format(sql.Identifier(column), v)
        else:
            cond = sql.SQL(
                "EXISTS (SELECT 1 FROM {lh} AS l WHERE l.{key} = s.{col} AND l.{provides} = {v})"
            ).format(
                lh=sql.Identifier(history_table(lookup.table)),
                key=sql.Identifier(lookup.key),
                col=sql.Identifier(lookup.column),
                provides=sql.Identifier(lookup.provides),
                v=v,
            )
        out.append((table, cond))
    return out
