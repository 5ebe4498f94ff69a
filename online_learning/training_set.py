"""Point-in-time training sets: each payment's vector as of its commit, with its label.

``freshloop training-set --from T1 --to T2 --service NAME --out FILE.parquet``. For every
payment committed in [T1, T2) (its insert's commit, from ``payments_history``):

- the vector ``build_vector`` makes from the payment as inserted (what the scorer saw) and the
  service's features computed in Postgres as of the payment's commit position, read at its
  commit time (``feature_pipelines.history``: the oracle's definitions and window rule over the
  row versions visible then, not today's rows). Online, the scorer reads Redis right after the
  batch holding the insert is written, so the logged vector can differ where another change to
  the same customer or merchant was applied in that batch or still waited in another partition,
  or where its read time (``predicted_at``) lies in another bucket than the commit time;
- its label as the learner gives it (``stream_join``): the payment's outcome if reported within
  ``label_horizon`` of ``created_at``, else a negative at the horizon (``horizon_negatives``;
  without it the label stays empty), and empty (``pending``) while the horizon has not passed.

Written with pyarrow, one row group per chunk of payments, one statement per chunk for the
features and one for the outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from feature_pipelines.history import as_of_query, states_from_row
from feature_pipelines.readout import finalize
from feature_pipelines.services import FeatureService
from freshloop.core.settings import Settings
from online_learning.exceptions import TrainingSetError
from online_learning.records import FeatureValue, Payment
from online_learning.services import feature_service
from online_learning.vector import build_vector, input_names

__all__ = [
    "Label",
    "ScoredPayment",
    "TrainingSetReport",
    "build_training_set",
    "label_of",
    "payments_between",
    "served_as_of",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PAYMENTS = """
SELECT h.payment_id, h.customer_id, h.merchant_id, h.amount, h.channel, h.status,
       h.created_at, h._valid_from, h._committed_at
  FROM payments_history h
 WHERE h._committed_at >= %(t1)s AND h._committed_at < %(t2)s
   AND NOT EXISTS (SELECT 1 FROM payments_history e
                    WHERE e.payment_id = h.payment_id AND e._version < h._version)
 ORDER BY h._valid_from, h.payment_id
"""

_OUTCOMES = """
SELECT DISTINCT ON (o.payment_id) o.payment_id, o.is_fraud, o.reported_at
  FROM payment_outcomes_history o
 WHERE o.payment_id = ANY(%(ids)s)
 ORDER BY o.payment_id, o._version
"""


@dataclass(frozen=True)
class ScoredPayment:
    """A payment as inserted, with the commit position and time of its insert."""

    payment: Payment
    position: int
    committed_at: datetime


@dataclass(frozen=True)
class Label:
    """A payment's label as the learner gives it; ``value`` None: not known (yet)."""

    value: bool | None
    source: str  # outcome | horizon | pending | none
    at: datetime | None


def label_of(
    created_at: datetime,
    outcome: tuple[bool, datetime] | None,
    horizon: timedelta,
    negatives: bool,
    now: datetime,
) -> Label:
    """The learner's rule (``StreamJoin._label`` / ``on_due``), decided in event time.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> h = timedelta(hours=1)
    >>> label_of(t, (True, t + timedelta(minutes=5)), h, True, t + h * 2).source
    'outcome'
    >>> label_of(t, (True, t + h * 2), h, True, t + h * 3)
    Label(value=False, source='horizon', at=...)
    >>> label_of(t, None, h, True, t + timedelta(minutes=5)).source
    'pending'
    """
    due = created_at + horizon
    if outcome is not None:
        is_fraud, at = outcome
        if not negatives or at <= due:
            return Label(bool(is_fraud), "outcome", at)
        return Label(False, "horizon", due)
    if due > now:
        return Label(None, "pending", None)
    if negatives:
        return Label(False, "horizon", due)
    return Label(None, "none", None)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def payments_between(
    conn: psycopg.Connection, t1: datetime, t2: datetime, chunk: int
) -> Iterator[list[ScoredPayment]]:
    """Payments whose insert committed in [t1, t2), in commit order, ``chunk`` at a time."""
    with conn.cursor(name=f"training_set_{id(conn)}") as cur:
        cur.itersize = chunk
        cur.execute(_PAYMENTS, {"t1": t1, "t2": t2})
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            yield [
                ScoredPayment(Payment(r[0], r[1], r[2], r[3], r[4], r[5], r[6]), r[7], r[8])
                for r in rows
            ]


def served_as_of(
    conn: psycopg.Connection,
    service: FeatureService,
    payments: Sequence[ScoredPayment],
    read_at: Sequence[datetime] | None = None,
) -> dict[int, dict[str, FeatureValue]]:
    """The service's features of each payment's customer and merchant as of its commit
    position, read at its commit time (or at ``read_at``, one per payment): one statement."""
    if not payments:
        return {}
    features = service.definitions()
    query, params = as_of_query(features)
    times = read_at if read_at is not None else [p.committed_at for p in payments]
    params |= {
        "ids": [p.payment.payment_id for p in payments],
        "pos": [p.position for p in payments],
        "t_us": [_micros(t) for t in times],
    }
    out: dict[int, dict[str, FeatureValue]] = {}
    for row in conn.execute(query, params):
        states = states_from_row(features, row[1:])
        out[row[0]] = {f.name: finalize(f, states[f.name]) for f in features}
    return out


def _outcomes(conn: psycopg.Connection, ids: list[int]) -> dict[int, tuple[bool, datetime]]:
    return {r[0]: (r[1], r[2]) for r in conn.execute(_OUTCOMES, {"ids": ids})}


@dataclass
class TrainingSetReport:
    """What ``build_training_set`` wrote and how fast."""

    path: str
    service: str
    rows: int = 0
    seconds: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _schema(names: Sequence[str]) -> pa.Schema:
    ts = pa.timestamp("us", tz="UTC")
    head = [
        ("payment_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("created_at", ts),
        ("committed_at", ts),
        ("label", pa.bool_()),
        ("label_source", pa.string()),
        ("labelled_at", ts),
    ]
    return pa.schema([*head, *((n, pa.float64()) for n in names)])


def build_training_set(
    settings: Settings,
    t1: datetime,
    t2: datetime,
    out: str | Path,
    *,
    service: str | None = None,
    chunk: int = 2000,
    on_chunk: Callable[[TrainingSetReport], None] | None = None,
) -> TrainingSetReport:
    """Write the training set of payments committed in [t1, t2) to Parquet ``out``."""
    for name, moment in (("from", t1), ("to", t2)):
        if moment.tzinfo is None:
            msg = f"--{name} {moment.isoformat()} has no time zone: give UTC or an offset"
            raise TrainingSetError(msg)
    if t1 >= t2:
        msg = f"--from {t1.isoformat()} is not before --to {t2.isoformat()}: swap or widen them"
        raise TrainingSetError(msg)
    svc = feature_service(settings, service)
    names = input_names(svc.features)
    schema = _schema(names).with_metadata(
        {
            "freshloop.service": svc.name,
            "freshloop.features": ",".join(svc.features),
            "freshloop.from": t1.isoformat(),
            "freshloop.to": t2.isoformat(),
            "freshloop.label_horizon_s": str(settings.label_horizon.total_seconds()),
        }
    )
    report = TrainingSetReport(str(out), svc.name)
    started = time.perf_counter()
    try:
        with (
            psycopg.connect(settings.postgres_conninfo()) as reader,
            psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn,
            pq.ParquetWriter(str(out), schema) as writer,
        ):
            # many small index scans per statement: compiling them (JIT) costs more than it saves
            conn.execute("SET jit = off")
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            for scored in payments_between(reader, t1, t2, chunk):
                writer.write_table(
                    _chunk(conn, settings, svc, names, scored, now, report), row_group_size=chunk
                )
                report.seconds = time.perf_counter() - started
                if on_chunk is not None:
                    on_chunk(report)
    except psycopg.errors.UndefinedTable as exc:
        msg = (
            f"the row history is missing ({str(exc).strip().splitlines()[0]}): run "
            "'freshloop db init' (sql/009_history.sql); payments committed before it are not "
            "in any training set"
        )
        raise TrainingSetError(msg) from exc
    report.seconds = time.perf_counter() - started
    return report


def _chunk(
    conn: psycopg.Connection,
    settings: Settings,
    svc: FeatureService,
    names: Sequence[str],
    scored: list[ScoredPayment],
    now: datetime,
    report: TrainingSetReport,
) -> pa.Table:
    served = served_as_of(conn, svc, scored)
    outcomes = _outcomes(conn, [s.payment.payment_id for s in scored])
    columns: dict[str, list[Any]] = {n: [] for n in _schema(names).names}
    for s in scored:
        p = s.payment
        label = label_of(
            p.created_at,
            outcomes.get(p.payment_id),
            settings.label_horizon,
            settings.horizon_negatives,
            now,
        )
        x = build_vector(p, served.get(p.payment_id, {}), svc.features)
        for key, value in (
            ("payment_id", p.payment_id),
            ("customer_id", p.customer_id),
            ("merchant_id", p.merchant_id),
            ("created_at", p.created_at),
            ("committed_at", s.committed_at),
            ("label", label.value),
            ("label_source", label.source),
            ("labelled_at", label.at),
        ):
            columns[key].append(value)
        for n in names:
            columns[n].append(x[n])
        report.labels[label.source] = report.labels.get(label.source, 0) + 1
    report.rows += len(scored)
    return pa.table(columns, schema=_schema(names))
