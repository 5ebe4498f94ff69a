"""Partial loss of the pipeline's Redis state: refuse an evicting Redis, watch evictions, and
sample the expiry indexes for row states that are gone while they must still exist.

The sentinel of ``recovery.py`` sees a namespace wiped as a whole. Single keys can go too:

- **Eviction.** Under ``maxmemory`` any policy but ``noeviction`` drops keys: the ``allkeys-*``
  ones any key, the ``volatile-*`` ones keys with a TTL, which entity hashes of windowed
  features carry (a wall-clock backstop). A lost row state makes the next change to its row
  count the new image without retracting the old one. The pipeline refuses to start on such a
  Redis unless ``redis_allow_eviction`` is set, and then watches ``evicted_keys`` (``INFO
  stats``): any increase is taken as a loss (the counter does not say whose keys went).
- **Anything else** (a ``DEL`` by hand, a bug): row states are indexed per partition by when
  they may expire (``<ns>:expiry:{<group>}:<p>``, a sorted set by ``exp``, event time). The write
  script deletes a row state only after that partition's watermark reached its ``exp``, and
  removes it from the index in the same step; a row state is written by its own partition's
  changes only (the tables of a join are co-partitioned: its lookups come from the same
  partition number). So a member still in its index with a score above the partition's stored
  watermark must exist. A few members per partition are drawn (``ZRANDMEMBER``) at every check
  and confirmed in one ``MULTI`` (existence, score and watermark at one instant, so a batch
  script running in between cannot make a false alarm). The group's positions and watermarks
  hashes, once seen under an epoch, must stay until the epoch changes.

Entity hashes are not sampled: they legitimately vanish through their wall-clock expiry and
through an idle sweep of whichever partition indexed them last, and nothing left behind tells
that apart from a loss. Their eviction is still seen through ``evicted_keys``.

On a Redis Cluster (docs/redis-cluster.md) a primary can lose its data alone: the slots it
held, possibly partition slots (row states, positions) and shard slots (entities) apart.
``evicted_keys`` is summed over every primary; the group's epoch is also marked in every
partition slot and every shard slot (``mark_slots``, before the one sentinel is set), and
``slots_lost`` finds any of these marks gone while the sentinel stayed (one ``EXISTS`` per slot,
pipelined: one round trip per primary); the census above runs per partition slot, each
partition's members, watermark and positions confirmed in one transaction of that slot.

Nothing here scans the keyspace; a check costs one ``INFO`` (per primary), one
``ZRANDMEMBER`` per assigned partition and one transaction (per assigned partition on a
cluster). ``recovery.py`` turns a finding into the rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from prometheus_client import Counter
from redis.cluster import RedisCluster

from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.exceptions import RedisEvictionPolicyError

__all__ = [
    "LOSSES",
    "LossFinding",
    "LossWatch",
    "Probe",
    "eviction_refusal",
    "evictions_between",
    "lost_group_keys",
    "lost_rows",
    "policy_evicts",
]

log = logging.getLogger(__name__)

_ALLOW = "FRESHLOOP_REDIS_ALLOW_EVICTION=true"

LOSSES = Counter(
    "freshloop_redis_state_losses",
    "Partial losses of the pipeline's Redis state found (each starts a rebuild), by kind: "
    "evicted | row_state | group_key | slot_state | offsets_out_of_range.",
    ["kind"],
)


def policy_evicts(policy: str) -> bool:
    """Whether a ``maxmemory-policy`` can drop keys of the namespace: every one but noeviction
    (``volatile-*`` ones too: entity hashes carry a TTL).

    >>> [policy_evicts(p) for p in ("noeviction", "allkeys-lru", "volatile-ttl")]
    [False, True, True]
    """
    return policy.strip().lower() != "noeviction"


def eviction_refusal(policy: str | None, allowed: bool, why_unknown: str = "") -> str | None:
    """The sentence refusing to start on this Redis, or None when the pipeline may start.
    ``policy`` None: the server did not let us read it (``why_unknown``).

    >>> eviction_refusal("noeviction", False) is None
    True
    >>> eviction_refusal("allkeys-lru", True) is None
    True
    >>> "CONFIG SET maxmemory-policy noeviction" in eviction_refusal("allkeys-lru", False)
    True
    """
    if allowed:
        return None
    if policy is None:
        return (
            f"cannot read Redis's maxmemory-policy ({why_unknown or 'CONFIG GET refused'}), so "
            "the feature pipeline cannot make sure Redis never evicts its state; expected "
            "noeviction. Make sure the server runs with maxmemory-policy noeviction and set "
            f"{_ALLOW} to start anyway (evictions are then watched and rebuilt), or let this "
            "user run CONFIG GET"
        )
    if not policy_evicts(policy):
        return None
    return (
        f"Redis's maxmemory-policy is {policy}: under memory pressure it evicts keys of the "
        "namespace, and a lost row state makes the next change count its row without "
        "retracting the old image, so features drift silently; expected noeviction. Run "
        "'redis-cli CONFIG SET maxmemory-policy noeviction' (and put it in redis.conf), or set "
        f"{_ALLOW} to accept evictions (each one is then detected and the features rebuilt)"
    )


def evictions_between(before: int | None, now: int) -> int:
    """Keys evicted since ``before`` was read (None: nothing known yet). A counter below the last
    reading restarted with its server: everything it counts since is new.

    >>> evictions_between(None, 7), evictions_between(7, 7), evictions_between(7, 9)
    (0, 0, 2)
    >>> evictions_between(7, 3)
    3
    """
    if before is None:
        return 0
    return now - before if now >= before else now


@dataclass(frozen=True)
class Probe:
    """One sampled member of a partition's row-state expiry index, as seen in one transaction:
    its score now (None: no longer indexed) and whether the key exists."""

    partition: int
    key: str
    score: float | None
    exists: bool


def lost_rows(probes: Iterable[Probe], watermarks: Mapping[int, int]) -> list[str]:
    """Row states that are gone although their index says they must still exist: still
    indexed, with an ``exp`` the partition's watermark has not reached.

    >>> p = [Probe(0, "r1", 50.0, False), Probe(0, "r2", 10.0, False), Probe(1, "r3", None, False)]
    >>> lost_rows(p, {0: 20})
    ['r1']
    >>> lost_rows([Probe(0, "r4", 50.0, True)], {0: 20})
    []
    """
    return [
        p.key
        for p in probes
        if not p.exists and p.score is not None and p.score > watermarks.get(p.partition, 0)
    ]


def lost_group_keys(seen: Iterable[str], present: Mapping[str, bool]) -> list[str]:
    """Keys of the group seen under the current epoch that are gone now (positions and
    watermarks are only ever deleted with the sentinel).

    >>> lost_group_keys({"offsets"}, {"offsets": False, "watermarks": False})
    ['offsets']
    """
    return sorted(k for k in seen if not present.get(k, True))


@dataclass(frozen=True)
class LossFinding:
    """What a check found missing: ``kind`` evicted | row_state | group_key | slot_state (a
    Redis Cluster primary lost its slots), or offsets_out_of_range (Kafka positions outside the
    topic's offsets, ``recovery.py``)."""

    kind: str
    detail: str
    keys: list[str] = field(default_factory=list)


class LossWatch:
    """The checks above on one group's Redis: ``check_policy`` at start, ``check`` on every
    tick; on a Redis Cluster also ``slots_lost`` with every look at the sentinel.

    ``shards`` and ``partitions``: the cluster layout's virtual shards and the change topics'
    partitions (the slots marked with the epoch); unused on a single Redis."""

    def __init__(
        self,
        client: redis.Redis,
        ns: str,
        group: str,
        *,
        samples: int = 16,
        allow_eviction: bool = False,
        shards: int = 64,
        partitions: int = 0,
    ) -> None:
        self.client = client
        self.samples = samples
        self.allow_eviction = allow_eviction
        self._cluster = isinstance(client, RedisCluster)
        self.keys = KeyLayout(ns, group, "cluster" if self._cluster else "single", shards)
        self.partitions = partitions
        self.offsets_key = f"{ns}:offsets:{{{group}}}"  # the single layout's
        self.marks_key = f"{ns}:watermarks:{{{group}}}"
        self._evicted: int | None = None
        self._stats_readable = True
        self._epoch: str | None = None
        self._seen: set[str] = set()

    def index_key(self, partition: int) -> str:
        return self.keys.expiry(partition)

    # ---- start-up ---------------------------------------------------------------------------
    def check_policy(self) -> str | None:
        """Refuse (``RedisEvictionPolicyError``) a Redis that may evict our keys unless allowed;
        returns the policy read (None: not readable). Also takes the evictions baseline."""
        policy: str | None = None
        why = ""
        try:
            raw = self.client.config_get("maxmemory-policy")
            value = raw.get("maxmemory-policy") or raw.get(b"maxmemory-policy")  # type: ignore[call-overload]
            policy = None if value is None else _text(value)
            if policy is None:
                why = "CONFIG GET answered nothing for maxmemory-policy"
        except redis.ResponseError as exc:  # a managed Redis, or an ACL without CONFIG
            why = f"CONFIG GET refused: {exc}"
        refusal = eviction_refusal(policy, self.allow_eviction, why)
        if refusal is not None:
            raise RedisEvictionPolicyError(refusal)
        if policy is None:
            log.warning(
                "redis_policy_unknown reason=%s: starting as allowed, watching evictions", why
            )
        elif policy_evicts(policy):
            log.warning(
                "redis_may_evict policy=%s: allowed; every eviction is a loss and is rebuilt",
                policy,
            )
        self._evicted = self._evicted_keys()
        return policy

    # ---- the epoch in every slot (Redis Cluster) --------------------------------------------
    def mark_slots(self, epoch: str) -> None:
        """Mark ``epoch`` in every partition and shard slot (a cluster; nothing on one Redis).
        Called before the group's sentinel is set, so a sentinel present means its marks
        were all written."""
        names = self.keys.sentinels(self.partitions)
        if not names:
            return
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.set(name, epoch)
        pipe.execute()

    def slots_lost(self) -> LossFinding | None:
        """A cluster's slots whose epoch mark is gone while the group's sentinel stayed: the
        primary holding them lost its data (a restart without its files, a FLUSHALL), so
        their row states, positions or entities are gone. None on one Redis (the sentinel
        there is the whole check)."""
        names = self.keys.sentinels(self.partitions)
        if not names:
            return None
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(name)
        gone = [name for name, there in zip(names, pipe.execute(), strict=True) if not there]
        if not gone:
            return None
        cluster = cast(RedisCluster, self.client)
        nodes = sorted({str(cluster.get_node_from_key(name).name) for name in gone})
        return LossFinding(
            "slot_state",
            f"the epoch mark of {len(gone)} of {len(names)} slots is gone (primaries "
            f"{', '.join(nodes)}): a primary lost its data",
            gone,
        )

    # ---- the periodic check -----------------------------------------------------------------
    def check(self, partitions: Iterable[int], epoch: str | None) -> LossFinding | None:
        """One look for lost state; None when nothing is missing."""
        evicted = self._evicted_keys()
        if evicted is not None:
            gone = evictions_between(self._evicted, evicted)
            self._evicted = evicted
            if gone:
                return LossFinding("evicted", f"Redis evicted {gone} keys (INFO evicted_keys)")
        if epoch != self._epoch:  # a rebuild started a new state: nothing of it seen yet
            self._epoch, self._seen = epoch, set()
        return self._sample(sorted(set(partitions)))

    def _sample(self, partitions: Sequence[int]) -> LossFinding | None:
        drawn: dict[int, list[str]] = {p: [] for p in partitions}
        if self.samples > 0 and partitions:
            pipe = self.client.pipeline(transaction=False)
            for p in partitions:
                pipe.zrandmember(self.index_key(p), self.samples)
            for p, members in zip(partitions, pipe.execute(), strict=True):
                drawn[p] = [_text(m) for m in members or ()]
        # one instant per transaction, so no batch script runs in between: the whole group on
        # one Redis; per partition slot on a cluster (a transaction keeps to one slot)
        units = [[p] for p in partitions] if self._cluster else [list(partitions)]
        probes: list[Probe] = []
        marks: dict[int, int] = {}
        present: dict[str, bool] = {}
        for unit in units:
            found, unit_marks, unit_present = self._confirm(unit, drawn)
            probes += found
            marks.update(unit_marks)
            present.update(unit_present)
        gone_group = lost_group_keys(self._seen, present)
        self._seen |= {k for k, there in present.items() if there}
        if gone_group:
            return LossFinding(
                "group_key", "the group's positions or watermarks are gone", gone_group
            )
        rows = lost_rows(probes, marks)
        if rows:
            return LossFinding(
                "row_state",
                f"{len(rows)} of {len(probes)} sampled row states are gone before their expiry",
                rows,
            )
        return None

    def _confirm(
        self, partitions: Sequence[int], drawn: Mapping[int, list[str]]
    ) -> tuple[list[Probe], dict[int, int], dict[str, bool]]:
        """The drawn members of ``partitions`` (all in one slot on a cluster, or one Redis),
        their watermarks and positions, in one transaction."""
        keys = self.keys
        first = partitions[0] if partitions else 0
        offsets, marks_key = keys.offsets(first), keys.watermarks(first)
        pairs = [(p, key) for p in partitions for key in drawn.get(p, ())]
        tx = self.client.pipeline(transaction=True)
        for p, key in pairs:
            tx.exists(key)
            tx.zscore(self.index_key(p), key)
        tx.hgetall(marks_key)
        tx.exists(offsets)
        tx.exists(marks_key)
        reply = tx.execute()
        # a cluster client's transaction answers raw replies (no callbacks): scores as bytes
        probes = [
            Probe(p, key, _score(reply[2 * i + 1]), bool(int(reply[2 * i])))
            for i, (p, key) in enumerate(pairs)
        ]
        marks = {int(_text(k)): int(_text(v).partition(":")[0]) for k, v in _pairs(reply[-3])}
        return probes, marks, {offsets: bool(int(reply[-2])), marks_key: bool(int(reply[-1]))}

    def _evicted_keys(self) -> int | None:
        if not self._stats_readable:
            return None
        try:
            if self._cluster:
                nodes = self.client.info("stats", target_nodes=RedisCluster.PRIMARIES)
                return sum(int(stats.get("evicted_keys", 0)) for stats in nodes.values())
            return int(self.client.info("stats").get("evicted_keys", 0))
        except redis.ResponseError as exc:
            self._stats_readable = False
            log.warning("redis_stats_unreadable error=%s: evictions are not watched", exc)
            return None


def _score(raw: Any) -> float | None:
    return None if raw is None else float(raw)


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    """A hash as its (field, value) pairs: a mapping, or the flat list a cluster client's
    transaction answers on RESP2.

    >>> _pairs({"0": "5:1"}), _pairs(["0", "5:1", "1", "7:2"])
    ([('0', '5:1')], [('0', '5:1'), ('1', '7:2')])
    """
    if isinstance(raw, Mapping):
        return list(raw.items())
    return list(zip(raw[::2], raw[1::2], strict=True))


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
