"""Apply a workload to Postgres at a steady rate: ``freshloop simulate``.

With ``WorkloadConfig.time_scale`` the writer stamps every event-time column the features read
(``payments.created_at`` / ``updated_at``, ``payment_outcomes.reported_at``) from an
``EventClock`` instead of the database's now(): the operation's own event time, not the moment
it happened to commit, so the rows (and every feature built from them) do not depend on how
busy the machine was.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from freshloop.core.db import connect
from freshloop.core.settings import Settings
from freshloop.simulate.clock import EventClock
from freshloop.simulate.workload import Op, Workload, WorkloadConfig

__all__ = ["SimulationReport", "run_simulation", "seed_entities"]

log = logging.getLogger(__name__)

_COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL")
_CATEGORIES = ("grocery", "electronics", "travel", "fashion", "gaming", "food")


@dataclass
class SimulationReport:
    """What a run wrote: per table and kind of change, and the ids it touched."""

    writes: Counter[tuple[str, str]] = field(default_factory=Counter)
    payment_ids: set[int] = field(default_factory=set)
    seconds: float = 0.0  # the steady part: new payments at the rate
    payments_per_s: float = 0.0
    customers: list[int] = field(default_factory=list)
    merchants: list[int] = field(default_factory=list)
    clock: EventClock | None = None  # event time of the run (None: the database's now())

    def count(self, table: str, op: str) -> int:
        return self.writes[(table, op)]


def seed_entities(conn: psycopg.Connection, config: WorkloadConfig) -> tuple[list[int], list[int]]:
    """Insert the workload's customers and merchants; return their database ids in order."""
    import random

    rng = random.Random(config.seed)  # noqa: S311 - sample data, not security
    customer_rows = [
        (f"user{i}.{config.seed}@example.com", rng.choice(_COUNTRIES))
        for i in range(config.customers)
    ]
    merchant_rows = [
        (f"merchant {i}", rng.choice(_CATEGORIES), rng.choice(_COUNTRIES))
        for i in range(config.merchants)
    ]
    # executemany pipelines the statements (one round trip per batch, not per row: 20,000
    # customers take about a second); each row is still its own INSERT, in order.
    with conn.cursor() as cur:
        customers = _insert_returning(
            cur,
            "INSERT INTO customers (email, country) VALUES (%s, %s) RETURNING customer_id",
            customer_rows,
        )
        merchants = _insert_returning(
            cur,
            "INSERT INTO merchants (name, category, country) VALUES (%s, %s, %s) "
            "RETURNING merchant_id",
            merchant_rows,
        )
    return customers, merchants


def _insert_returning(
    cur: psycopg.Cursor, query: str, rows: Sequence[tuple[str, ...]]
) -> list[int]:
    """The id each row's INSERT returned, in order (``executemany(..., returning=True)``)."""
    if not rows:
        return []
    cur.executemany(query, rows, returning=True)
    ids: list[int] = []
    while True:
        row = cur.fetchone()
        if row is not None:
            ids.append(int(row[0]))
        if not cur.nextset():
            return ids


class _Writer:
    """Maps workload handles to database ids and runs each operation as its own commit."""

    def __init__(
        self,
        conn: psycopg.Connection,
        customers: list[int],
        merchants: list[int],
        clock: EventClock | None = None,
    ):
        self.conn = conn
        self.customers = customers
        self.merchants = merchants
        self.clock = clock
        self.ids: dict[int, int] = {}
        self.report = SimulationReport(customers=customers, merchants=merchants)

    def apply(self, op: Op) -> None:
        cur = self.conn.cursor()
        # None lets the column defaults / now() stamp the row, as without a time scale.
        ts = None if self.clock is None else self.clock.at(op.at)
        if op.kind == "insert_payment":
            row = cur.execute(
                "INSERT INTO payments (customer_id, merchant_id, amount, channel, status, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, "
                "coalesce(%s, now()), coalesce(%s, now())) RETURNING payment_id",
                (
                    self.customers[op.customer - 1],
                    self.merchants[op.merchant - 1],
                    op.amount,
                    op.channel,
                    op.status,
                    ts,
                    ts,
                ),
            ).fetchone()
            assert row is not None  # noqa: S101 - RETURNING always gives a row
            self.ids[op.payment] = row[0]
            self.report.payment_ids.add(row[0])
            self.report.writes[("payments", "c")] += 1
            return
        payment_id = self.ids.get(op.payment)
        if payment_id is None:
            return
        if op.kind == "update_status":
            cur.execute(
                "UPDATE payments SET status = %s, updated_at = coalesce(%s, now()) "
                "WHERE payment_id = %s",
                (op.status, ts, payment_id),
            )
            self.report.writes[("payments", "u")] += cur.rowcount
        elif op.kind == "correct_amount":
            cur.execute(
                "UPDATE payments SET amount = %s, updated_at = coalesce(%s, now()) "
                "WHERE payment_id = %s",
                (op.amount, ts, payment_id),
            )
            self.report.writes[("payments", "u")] += cur.rowcount
        elif op.kind == "delete_payment":
            cur.execute("DELETE FROM payments WHERE payment_id = %s", (payment_id,))
            self.report.writes[("payments", "d")] += cur.rowcount
            self.ids.pop(op.payment, None)
        elif op.kind == "insert_outcome":
            cur.execute(
                "INSERT INTO payment_outcomes (payment_id, is_fraud, reported_at) "
                "VALUES (%s, %s, coalesce(%s, now())) ON CONFLICT (payment_id) DO NOTHING",
                (payment_id, op.is_fraud, ts),
            )
            self.report.writes[("payment_outcomes", "c")] += cur.rowcount


def run_simulation(
    settings: Settings,
    config: WorkloadConfig,
    duration_s: float,
    *,
    drain: bool = True,
    on_tick: Callable[[SimulationReport], None] | None = None,
    stop: Callable[[], bool] | None = None,
    connections: int = 1,
    on_start: Callable[[EventClock | None, float], None] | None = None,
) -> SimulationReport:
    """Write the workload for ``duration_s`` seconds at its rate; then its follow-ups if drain.

    With several connections, operations are sharded by payment, so each payment's changes
    still commit in order; use them for rates a single connection cannot commit.

    With ``config.time_scale`` the follow-ups are drained in (fast) event time, not at once, and
    the event clock is placed so that the last of them is stamped about now; ``on_start`` gets
    that clock and the ``time.monotonic()`` of wall second 0 once the entities are seeded.
    """
    workload = Workload(config)
    with connect(settings, autocommit=True) as conn:
        customers, merchants = seed_entities(conn, config)
    clock: EventClock | None = None
    if config.time_scale is not None:
        tail_s = workload.max_follow_up_s() / config.time_scale if drain else 0.0
        clock = EventClock.ending_at(datetime.now(UTC), config.time_scale, duration_s + tail_s)
    shards = [_Shard(settings, customers, merchants, clock) for _ in range(max(1, connections))]
    report = SimulationReport(customers=customers, merchants=merchants, clock=clock)
    report.writes[("customers", "c")] += len(customers)
    report.writes[("merchants", "c")] += len(merchants)

    def event_s(wall_s: float) -> float:
        return wall_s if clock is None else clock.event_seconds(wall_s)

    try:
        start = time.monotonic()
        if on_start is not None:
            on_start(clock, start)
        last_tick = start
        while (elapsed := time.monotonic() - start) < duration_s:
            if stop is not None and stop():
                break
            for op in workload.due(event_s(elapsed)):
                shards[op.payment % len(shards)].put(op)
            now = time.monotonic()
            if on_tick is not None and now - last_tick >= 1.0:
                last_tick = now
                on_tick(_merge(report, shards))
            time.sleep(max(0.0, min(0.005, 1.0 / config.rate)))
        for shard in shards:
            shard.wait_idle()
        steady = time.monotonic() - start
        if drain and clock is None:
            for op in workload.drain():
                shards[op.payment % len(shards)].put(op)
        elif drain:
            workload.stop_payments()
            while workload.pending() and not (stop is not None and stop()):
                for op in workload.due(event_s(time.monotonic() - start)):
                    shards[op.payment % len(shards)].put(op)
                now = time.monotonic()
                if on_tick is not None and now - last_tick >= 1.0:
                    last_tick = now
                    on_tick(_merge(report, shards))
                time.sleep(0.02)
    finally:
        for shard in shards:
            shard.close()
    result = _merge(report, shards)
    result.seconds = steady
    result.payments_per_s = result.count("payments", "c") / steady if steady else 0.0
    log.info("simulation done writes=%s", dict(result.writes))
    return result


def _merge(base: SimulationReport, shards: list[_Shard]) -> SimulationReport:
    merged = SimulationReport(customers=base.customers, merchants=base.merchants, clock=base.clock)
    merged.writes.update(base.writes)
    for shard in shards:
        merged.writes.update(shard.writer.report.writes)
        merged.payment_ids |= shard.writer.report.payment_ids
    return merged


class _Shard:
    """One connection and thread applying its share of operations in order."""

    def __init__(
        self,
        settings: Settings,
        customers: list[int],
        merchants: list[int],
        clock: EventClock | None = None,
    ) -> None:
        self.conn = connect(settings, autocommit=True)
        self.writer = _Writer(self.conn, customers, merchants, clock)
        self.queue: queue.Queue[Op | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, op: Op) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(op)

    def wait_idle(self) -> None:
        self.queue.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            op = self.queue.get()
            try:
                if op is None:
                    return
                if self.error is None:
                    self.writer.apply(op)
            except BaseException as exc:  # noqa: BLE001 - surfaced by put/wait_idle
                self.error = exc
            finally:
                self.queue.task_done()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=60)
        self.conn.close()
        if self.error is not None:
            raise self.error
