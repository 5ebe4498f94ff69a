"""Peer of the freshness benchmark: a batch job recomputing every feature by SQL on a schedule.

The classic alternative to streaming features: every ``interval_s`` seconds, run the oracle
statements of the feature set (``feature_pipelines.oracle``, the same SQL that checks
Freshloop) over the whole ``payments`` / ``payment_outcomes`` tables and write every entity's
values to Redis (a namespace of its own, one pipelined HSET per entity). A change committed at
time c becomes visible when the first recompute that started after c has finished; its
commit -> visible lag is that finish time minus c. Needs only Postgres and Redis, so it runs in
the project's virtualenv (no peer package).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import psycopg
import redis

from bench.common import drop_keys
from feature_pipelines import FeatureSet
from feature_pipelines.oracle import oracle_query, state_from_row
from feature_pipelines.readout import finalize

__all__ = ["BatchRecompute"]


@dataclass
class BatchRecompute:
    """The schedule in a thread: ``start()``, ``stop()``, then ``lags_ms(commit_times_ms)``."""

    conninfo: str
    redis_url: str
    features: FeatureSet
    ns: str
    interval_s: float = 10.0
    cycles: list[tuple[float, float]] = field(default_factory=list)  # (start_ms, end_ms)
    entities_written: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> BatchRecompute:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=300)
        if self.error is not None:
            raise self.error

    def recompute_once(self, conn: psycopg.Connection, client: redis.Redis) -> None:
        t_us = int(time.time() * 1_000_000)
        values: dict[str, dict[str, str]] = {}
        with conn.transaction():  # one snapshot for every statement
            for feature in self.features:
                query, params = oracle_query(feature, t_us)
                for key, n, total, distinct in conn.execute(query, params):
                    state = state_from_row(feature, n, total, distinct)
                    entity = f"{self.ns}:e:{{{feature.entity.name}:{key}}}"
                    values.setdefault(entity, {})[feature.name] = str(finalize(feature, state))
        pipe = client.pipeline(transaction=False)
        for n, (entity, mapping) in enumerate(values.items(), start=1):
            pipe.hset(entity, mapping=mapping)
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
        self.entities_written = len(values)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                while not self._stop.is_set():
                    started = time.time() * 1000
                    self.recompute_once(conn, client)
                    self.cycles.append((started, time.time() * 1000))
                    wait = self.interval_s - (time.time() * 1000 - started) / 1000
                    if wait > 0:
                        self._stop.wait(wait)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def lags_ms(self, commit_times_ms: list[float]) -> list[float]:
        """Commit -> visible of each change (changes no finished cycle covered are left out)."""
        starts = [s for s, _ in self.cycles]
        out = []
        for commit in commit_times_ms:
            i = bisect.bisect_right(starts, commit)
            if i < len(self.cycles):
                out.append(self.cycles[i][1] - commit)
        return out

    def cleanup(self) -> None:
        drop_keys(self.redis_url, f"{self.ns}:*")
