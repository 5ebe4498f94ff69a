"""A tiny model of the sample tables that emits Debezium-shaped events, and a pure oracle."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.readout import FeatureValue
from feature_pipelines.spec import Feature

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def envelope(
    table: str,
    op: str,
    before: dict | None,
    after: dict | None,
    lsn: int,
    commit_ms: int = 1_795_000_000_000,
) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": commit_ms + 5,
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": "freshloop",
                "ts_ms": commit_ms,
                "snapshot": "false",
                "db": "freshloop",
                "sequence": orjson.dumps([str(lsn - 1), str(lsn)]).decode(),
                "schema": "public",
                "table": table,
                "txId": 7,
                "lsn": lsn,
            },
        }
    )


@dataclass
class Db:
    """Rows of payments and outcomes; every change appends (table, key bytes, value bytes)."""

    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, int, bytes, bytes | None]] = field(default_factory=list)
    lsn: int = 1000

    def _emit(self, table: str, pk: int, op: str, before: dict | None, after: dict | None) -> None:
        self.lsn += 8
        self.log.append(
            (
                table,
                pk,
                orjson.dumps({"payment_id": pk}),
                envelope(table, op, before, after, self.lsn),
            )
        )
        if op == "d":
            self.log.append((table, pk, orjson.dumps({"payment_id": pk}), None))  # tombstone

    def upsert_payment(self, pk: int, **values: Any) -> None:
        before = self.payments.get(pk)
        after = {
            **(
                before
                or {"payment_id": pk, "currency": "USD", "channel": "web", "updated_at": iso(T0)}
            ),
            **values,
        }
        self.payments[pk] = after
        self._emit("payments", pk, "u" if before else "c", before, after)

    def delete_payment(self, pk: int) -> None:
        if pk in self.outcomes:
            self.delete_outcome(pk)  # ON DELETE CASCADE
        if pk in self.payments:
            self._emit("payments", pk, "d", self.payments.pop(pk), None)

    def upsert_outcome(self, pk: int, is_fraud: bool, reported_at: datetime) -> None:
        if pk not in self.payments:
            return  # foreign key
        before = self.outcomes.get(pk)
        after = {"payment_id": pk, "is_fraud": is_fraud, "reported_at": iso(reported_at)}
        self.outcomes[pk] = after
        self._emit("payment_outcomes", pk, "u" if before else "c", before, after)

    def delete_outcome(self, pk: int) -> None:
        if pk in self.outcomes:
            self._emit("payment_outcomes", pk, "d", self.outcomes.pop(pk), None)

    def snapshot(self) -> None:
        """Re-send every current row as op=r (an incremental snapshot)."""
        self.lsn += 8
        for table, rows in (("payments", self.payments), ("payment_outcomes", self.outcomes)):
            for pk, row in rows.items():
                self.log.append(
                    (
                        table,
                        pk,
                        orjson.dumps({"payment_id": pk}),
                        envelope(table, "r", None, row, self.lsn),
                    )
                )


def random_delivery(log: list, rng: random.Random, dup_rate: float = 0.2) -> list:
    """At-least-once delivery: per-key order kept, keys interleaved, some events sent again."""
    streams: dict[tuple[str, int], list] = {}
    for item in log:
        streams.setdefault((item[0], item[1]), []).append(item)
    for key, items in streams.items():
        out = []
        for i, item in enumerate(items):
            out.append(item)
            if rng.random() < dup_rate:  # replay an earlier stretch of this key
                out.extend(items[rng.randint(0, i) : i + 1])
        streams[key] = out
    merged = []
    cursors = {k: 0 for k in streams}
    while cursors:
        key = rng.choice(sorted(cursors))
        merged.append(streams[key][cursors[key]])
        cursors[key] += 1
        if cursors[key] == len(streams[key]):
            del cursors[key]
    return merged


def oracle(
    features: FeatureSet, db: Db, t: datetime
) -> dict[tuple[str, str], dict[str, FeatureValue]]:
    """Each entity's features recomputed from the final rows, written independently of the
    engine: explicit window bounds, Decimal arithmetic, Python sets."""
    t_us = int((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    grouped: dict[tuple[str, str], dict[str, list[Any]]] = {}

    def rows_for(f: Feature):
        if f.lookup is None:
            for row in db.payments.values():
                yield row, row[f.entity.key]
        else:
            for row in db.outcomes.values():
                payment = db.payments.get(row["payment_id"])
                if payment is not None:
                    yield row, payment[f.lookup.provides]

    for f in features:
        for row, key in rows_for(f):
            if any(row[c.column] != c.equals for c in f.where):
                continue
            if f.window is not None:
                w = f.bucket_seconds * 1_000_000
                lo = ((t_us - f.window_seconds * 1_000_000) // w + 1) * w
                hi = (t_us // w + 1) * w
                e = datetime.fromisoformat(row[f.event_time])
                e_us = (e - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
                if not lo <= e_us < hi:
                    continue
            grouped.setdefault((f.entity.name, str(key)), {}).setdefault(f.name, []).append(
                row[f.value] if f.value else None
            )
    out: dict[tuple[str, str], dict[str, FeatureValue]] = {}
    for (entity, key), by_name in grouped.items():
        values: dict[str, FeatureValue] = {}
        for f in features.for_entity(entity):
            items = by_name.get(f.name, [])
            if f.agg == "count":
                values[f.name] = len(items)
            elif f.agg == "distinct":
                values[f.name] = len({str(v) for v in items if v is not None})
            elif f.agg == "sum":  # NULL values count for nothing, as in SQL
                values[f.name] = sum((Decimal(v) for v in items if v is not None), Decimal("0.00"))
            elif f.agg in ("min", "max"):
                known = [Decimal(v) for v in items if v is not None]
                values[f.name] = (min if f.agg == "min" else max)(known) if known else None
            elif f.agg == "mean":
                known = [Decimal(v) for v in items if v is not None]
                values[f.name] = (
                    (sum(known) / len(known)).quantize(Decimal("0.000001")) if known else None
                )
            else:
                msg = f"the oracle does not know {f.agg}: add it when registering a kind"
                raise AssertionError(msg)
        out[(entity, key)] = values
    return out


def amount(cents: int) -> str:
    return str(Decimal(cents).scaleb(-2))


def moment(offset_s: int) -> datetime:
    return T0 + timedelta(seconds=offset_s)
