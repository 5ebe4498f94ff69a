"""The applied feature definitions of a namespace in Redis, and how running pipelines follow
them (``freshloop features apply``, see ``backfill`` and docs/features.md).

Keys (all under the namespace; ``<tag>`` is ``<ns>:features:{<ns>/features}``, one hash slot):
- ``<tag>:defs`` (hash): ``applied``, the JSON definitions the namespace runs and reads
  serve (``serving_set``); ``source``, ``pipeline`` (a pipeline recorded the set it was started
  with) or ``apply`` (``freshloop features apply`` set it: from then on every pipeline runs
  these definitions, whatever its code declares); ``generation``.
- ``<tag>:fingerprints`` (hash): feature name -> fingerprint of the applied set.
- ``<tag>:generation`` (hash): the newest apply. ``state`` is ``prepare`` (every
  pipeline finishes its batch, acknowledges in ``<ns>:features:acks:<gen>:prepare`` and
  waits), ``go`` (the database snapshot is taken: pipelines run ``target``, the interim set,
  and the backfill runs), ``swap`` (pipelines acknowledge in ``...:swap`` and wait while the
  shadow fields of changed features replace their old ones), ``done`` (``target`` is the new
  applied set); ``aborted`` when an apply gave up. ``hidden``: per apply, its snapshot and the
  features it backfilled.

Exactness. A backfilled feature is counted by exactly one side for every row version: the
backfill counts the rows its REPEATABLE READ snapshot S sees; the pipelines count the changes
of every transaction S does not see (Debezium's ``source.txId``), and skip, for those features
only, the changes of transactions S sees (``Planner.hidden``). An update counted by the stream
retracts its before image: the row's version in S (a transaction S sees cannot have changed the
row after one it does not), which the backfill counted. Pipelines switch only after every one of
them acknowledged ``prepare`` and before S is taken, so none counted a change S does not see
with the old definitions. The swap renames fields while every pipeline waits, so no increment
lands on a name in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import redis

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import meta_pipeline
from feature_pipelines.plan import definition, feature_from, fingerprint

if TYPE_CHECKING:
    from feature_pipelines.consumer import FeaturePipeline

__all__ = [
    "DefinitionWatch",
    "Hidden",
    "Snapshot",
    "applied_from_redis",
    "defs_key",
    "fingerprints_key",
    "generation_key",
    "hidden_from_json",
    "acks_key",
    "serving_set",
    "write_applied",
]

log = logging.getLogger(__name__)

_XID_SPAN = 1 << 32


def _tag(ns: str) -> str:
    # one hash tag: the registry's keys change together (MULTI) in a Redis Cluster too
    return f"{ns}:features:{{{ns}/features}}"


def defs_key(ns: str) -> str:
    return f"{_tag(ns)}:defs"


def fingerprints_key(ns: str) -> str:
    return f"{_tag(ns)}:fingerprints"


def generation_key(ns: str) -> str:
    return f"{_tag(ns)}:generation"


def acks_key(ns: str, generation: int, phase: str = "prepare") -> str:
    return f"{ns}:features:acks:{generation}:{phase}"


@dataclass(frozen=True)
class Snapshot:
    """A Postgres snapshot (``pg_current_snapshot()``: ``xmin:xmax:xip,...``): which
    transactions it sees.

    >>> s = Snapshot.parse("100:105:101,103")
    >>> [s.visible(x) for x in (99, 101, 102, 103, 104, 105, 106)]
    [True, False, True, False, True, False, False]
    """

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def text(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"

    def _widen(self, txid: int) -> int:
        """A 32-bit transaction id (what Debezium sends) in the 64-bit space of the snapshot:
        the epoch that puts it nearest ``xmax``."""
        if txid >= _XID_SPAN:
            return txid
        full = (self.xmax & ~(_XID_SPAN - 1)) | txid
        if full > self.xmax + _XID_SPAN // 2:
            full -= _XID_SPAN
        elif full < self.xmax - _XID_SPAN // 2:
            full += _XID_SPAN
        return full

    def visible(self, txid: int) -> bool:
        """Whether the snapshot sees the changes of (top-level) transaction ``txid``."""
        full = self._widen(txid)
        return full < self.xmin or (full < self.xmax and full not in self.xip)


# Per apply: its snapshot and the features it backfilled (skipped by pipelines for changes of
# transactions the snapshot sees).
Hidden = tuple[tuple[Snapshot, frozenset[str]], ...]


def hidden_to_json(hidden: Hidden) -> bytes:
    return orjson.dumps([[snap.text(), sorted(names)] for snap, names in hidden])


def hidden_from_json(raw: str | bytes | None) -> Hidden:
    if not raw:
        return ()
    return tuple((Snapshot.parse(text), frozenset(names)) for text, names in orjson.loads(raw))


def _set_of(raw: str | bytes) -> FeatureSet:
    return FeatureSet.of(feature_from(d) for d in orjson.loads(raw))


def defs_json(features: Iterable[Any]) -> bytes:
    return orjson.dumps([definition(f) for f in features])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def applied_from_redis(client: redis.Redis, ns: str) -> tuple[FeatureSet | None, str]:
    """The applied set the namespace's Redis records and who recorded it (``pipeline`` or
    ``apply``); (None, "") when nothing is recorded."""
    raw = client.hmget(defs_key(ns), ["applied", "source"])
    if raw[0] is None:
        return None, ""
    return _set_of(raw[0]), _text(raw[1] or "pipeline")


def serving_set(client: redis.Redis, ns: str, default: FeatureSet) -> FeatureSet:
    """What the namespace's pipelines compute: the set ``apply`` recorded, else ``default``
    (the code's set, which pipelines run until an apply): what reads and ``verify`` use."""
    applied, source = applied_from_redis(client, ns)
    return applied if applied is not None and source == "apply" else default


def write_applied(
    pipe: Any, ns: str, features: FeatureSet, source: str, generation: int | None = None
) -> None:
    """Queue on ``pipe`` (a Redis pipeline) the writes recording ``features`` as applied."""
    mapping: dict[str, Any] = {"applied": defs_json(features), "source": source}
    if generation is not None:
        mapping["generation"] = generation
    pipe.hset(defs_key(ns), mapping=mapping)
    pipe.delete(fingerprints_key(ns))
    pipe.hset(fingerprints_key(ns), mapping={f.name: fingerprint(f) for f in features})


class DefinitionWatch:
    """A pipeline's side of ``apply``: which definitions it runs, and the switches to new ones
    at batch boundaries (``FeaturePipeline.switch_features``): to the generation's interim set
    at ``go``, to its target at ``done``."""

    CHECK_EVERY_S = 0.05  # how often the generation is looked at between batches
    WAIT_STEP_S = 0.01

    def __init__(
        self, pipeline: FeaturePipeline, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.pipeline = pipeline
        self._now = now
        self._next = 0.0
        # the newest (generation, phase) this pipeline runs: phase 1 its interim set, 2 its
        # target
        self.seen: tuple[int, int] = (0, 0)
        self.missed: int | None = None

    @property
    def client(self) -> redis.Redis:
        return self.pipeline.writer.client

    def start(self) -> None:
        """At start: run what ``apply`` recorded (and what the newest generation runs now), or
        record the code's set as the namespace's applied one."""
        ns = self.pipeline.ns
        applied, source = applied_from_redis(self.client, ns)
        if applied is None or source == "pipeline":
            pipe = meta_pipeline(self.client)
            write_applied(pipe, ns, self.pipeline.features, "pipeline")
            pipe.execute()
        else:
            self.pipeline.switch_features(applied, self._hidden())
        self.check(force=True)

    def _hidden(self) -> Hidden:
        return hidden_from_json(self.client.hget(generation_key(self.pipeline.ns), "hidden"))

    def _barrier(self, gen: int, status: str) -> dict[str, str] | None:
        """Acknowledge the ``prepare`` or ``swap`` of ``gen`` and wait until it moves on; the
        state then, or None (timed out, or superseded: looked at again next time)."""
        ns = self.pipeline.ns
        self.pipeline.flush_held()  # planned with the definitions run so far: written first
        member = self.pipeline.consumer.memberid() or self.pipeline.live.consumer
        key = acks_key(ns, gen, status)
        self.client.hset(key, member, str(int(time.time() * 1000)))
        self.client.pexpire(key, 86_400_000)
        log.info("features_%s ns=%s generation=%d member=%s: waiting", status, ns, gen, member)
        state: dict[str, str] = {"gen": str(gen), "state": status}
        while state.get("state") == status:
            time.sleep(self.WAIT_STEP_S)
            state = self._state() or {}
            if int(state.get("gen", gen)) != gen:
                return None
            if state.get("state") == status and int(state.get("deadline_ms", 0)) <= _now_ms():
                log.warning("features_%s ns=%s generation=%d timed out: going on", status, ns, gen)
                return None
        return state

    def check(self, *, force: bool = False) -> None:
        """Between batches: follow the newest generation (acknowledge ``prepare`` and ``swap``
        and wait through them; switch to its interim set at ``go``, its target at ``done``)."""
        now = self._now()
        if not force and now < self._next:
            return
        self._next = now + self.CHECK_EVERY_S
        ns = self.pipeline.ns
        state = self._state()
        if state is None:
            return
        gen, status = int(state.get("gen", 0)), state.get("state", "")
        if status not in ("prepare", "go", "swap", "done") or (gen, 2) <= self.seen:
            return
        acked = False
        if status == "prepare":
            after = self._barrier(gen, status)
            if after is None:
                return
            state, status, acked = after, after.get("state", ""), True
        if status in ("go", "swap") and (gen, 1) > self.seen:
            if not acked:
                self._missed(gen, state)
            interim = _set_of(state["target"])  # the target once ``done``
            self.pipeline.switch_features(interim, hidden_from_json(state.get("hidden")))
            self.seen = (gen, 1)
            log.info("features_switched ns=%s generation=%d interim=%d", ns, gen, len(interim))
        if status == "swap":
            after = self._barrier(gen, status)
            if after is None:
                return
            state, status = after, after.get("state", "")
        if status == "done":
            if not acked and (gen, 1) > self.seen:
                self._missed(gen, state)
            target = _set_of(state["target"])
            self.pipeline.switch_features(target, hidden_from_json(state.get("hidden")))
            self.seen = (gen, 2)
            log.info("features_switched ns=%s generation=%d features=%d", ns, gen, len(target))

    def _missed(self, gen: int, state: Mapping[str, str]) -> None:
        """Went past a barrier of ``gen`` without acknowledging it: batches planned meanwhile
        may hold changes the snapshot does not see, counted with the definitions run before.
        (A pipeline that starts past a barrier has planned nothing yet.)"""
        if not self.pipeline.stats.batches or not int(state.get("prepared_ms", 0)):
            return
        self.missed = gen
        self.client.hset(generation_key(self.pipeline.ns), "missed", self.pipeline.live.consumer)
        log.error(
            "features_boundary_missed ns=%s generation=%d: run 'freshloop features apply' again",
            self.pipeline.ns,
            gen,
        )

    def _state(self) -> dict[str, str] | None:
        raw = self.client.hgetall(generation_key(self.pipeline.ns))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)


def generation_state(client: redis.Redis, ns: str) -> Mapping[str, str]:
    raw = client.hgetall(generation_key(ns))
    return {_text(k): _text(v) for k, v in raw.items()}
