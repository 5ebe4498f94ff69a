"""The whole system as processes: `learn serve` scorers, the `learn run` learner, a workload,
faults in between, and the two end checks every scenario shares: features equal the SQL oracle,
every outcome of a scored payment learned exactly once.

Namespaces, topics and registry rows come from ``learn_ns`` (tests/online_learning/stack.py);
the group starts at the change topics' end (``_start_at_end``), so a scenario checks exactly
what its own workload wrote, however long the shared topics' history is.

Both Redis layouts (``settings.redis_layout``): a scenario that breaks "Redis" breaks one Redis or
every primary of the Redis Cluster the run names (``redis_stack``, ``wipe_namespace``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from feature_pipelines import verify_until_clean
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from freshloop.stack import Stack
from online_learning import SCORING_FEATURES
from online_learning.messages import decode_prediction
from tests.feature_pipelines.test_pipeline_stack import _start_at_end
from tests.online_learning.stack import learn_ns, wait_for
from tests.redis_layout import client_for, drop_keys, scan_keys

__all__ = [
    "WORKLOAD",
    "Proc",
    "System",
    "learn_ns",
    "read_to_end",
    "redis_stack",
    "run_with_fault",
    "settings_env",
    "system",
    "wait_for",
    "wipe_namespace",
]

WORKLOAD = WorkloadConfig(
    rate=50,
    customers=80,
    merchants=16,
    burst_share=0.03,
    label_delay_s=1.0,
    correction_share=0.05,
    delete_share=0.01,
    seed=31,
)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    return settings.environment(os.environ)


class Proc:
    """One child process with its stdout+stderr in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        with log.open("ab") as fh:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "freshloop.app.cli", *args],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class System:
    """Scorers, a learner and their logs for one scenario's namespace. ``redis_cluster``: on a
    cluster layout, the settings the cluster was started with (its folder), for the scenarios
    that stop, kill or wipe its primaries (``redis_stack``)."""

    def __init__(
        self,
        settings: Settings,
        logdir: Path,
        log_level: str = "INFO",
        redis_cluster: Settings | None = None,
    ) -> None:
        self.settings = settings
        self.redis_cluster = redis_cluster
        self.logdir = logdir
        self.env = settings_env(settings)
        self.log_level = log_level  # the CLI's --log-level
        self.serving: list[Proc] = []
        self.learner: Proc | None = None
        self.retired: list[Proc] = []
        self._n = 0

    def spawn(self, name: str, *args: str) -> Proc:
        self._n += 1
        args = ("--log-level", self.log_level, *args)
        return Proc(name, list(args), self.env, self.logdir / f"{self._n:02d}-{name}.log")

    def start(self, serve: int = 1, learner: bool = True) -> None:
        if learner:
            self.start_learner()
        for _ in range(serve):
            self.add_server()
        wait_for(self.sentinel_written, 60, "the scorers' first look at Redis")

    def start_learner(self) -> None:
        self.learner = self.spawn("learner", "learn", "run")
        try:
            wait_for(lambda: self.checkpoint() is not None, 60, "the learner's first checkpoint")
        except AssertionError:
            self.learner.kill9()
            raise AssertionError(self.learner.log()[-3000:]) from None

    def add_server(self) -> Proc:
        proc = self.spawn("serve", "learn", "serve")
        self.serving.append(proc)
        return proc

    def retire_server(self, proc: Proc, kill: bool = False) -> None:
        if kill:
            proc.kill9()
        else:
            assert proc.stop() == 0, proc.log()[-3000:]
        self.serving.remove(proc)
        self.retired.append(proc)

    def sentinel_written(self) -> bool:
        client = client_for(self.settings, "writer")  # one Redis or every cluster primary
        try:
            return bool(scan_keys(client, f"{self.settings.namespace}:epoch:*"))
        finally:
            client.close()

    def procs(self) -> list[Proc]:
        return [*self.retired, *self.serving, *([self.learner] if self.learner else [])]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.procs())

    def stop(self) -> dict[str, int]:
        codes = {}
        for proc in [*self.serving, *([self.learner] if self.learner else [])]:
            codes[f"{proc.name}:{proc.pid}"] = proc.stop()
        return codes

    # ---- what the system holds -----------------------------------------------------------
    def checkpoint(self) -> dict[str, Any] | None:
        with psycopg.connect(self.settings.postgres_conninfo()) as conn:
            row = conn.execute(
                "SELECT checkpoint_id, n_learned, status FROM learner_checkpoints "
                "WHERE namespace = %s ORDER BY checkpoint_id DESC LIMIT 1",
                (self.settings.namespace,),
            ).fetchone()
        return None if row is None else {"id": row[0], "n_learned": row[1], **row[2]}

    def example_ids(self) -> list[int]:
        with psycopg.connect(self.settings.postgres_conninfo()) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT payment_id FROM training_examples WHERE namespace = %s",
                    (self.settings.namespace,),
                )
            ]

    def scored(self) -> set[int]:
        """Payment ids on this namespace's predictions topic."""
        messages = read_to_end(self.settings, self.settings.predictions_topic_name)
        return {decode_prediction(msg.value()).payment_id for msg in messages}

    def outcomes_of(self, payment_ids: set[int]) -> set[int]:
        with psycopg.connect(self.settings.postgres_conninfo()) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT payment_id FROM payment_outcomes WHERE payment_id = ANY(%s)",
                    (sorted(payment_ids),),
                )
            }

    # ---- the two end checks ----------------------------------------------------------------
    def assert_features_exact(self, report: SimulationReport, wait_s: float = 90) -> None:
        s = self.settings
        store = store_for(s, SCORING_FEATURES)  # one Redis or a Redis Cluster (redis_layout)
        result = verify_until_clean(
            self.settings.postgres_conninfo(),
            store,
            wait_s=wait_s,
            only={"customer": report.customers, "merchant": report.merchants},
        )
        assert result.entities_checked > 0 and result.values_checked > 0
        assert result.mismatches == [], result.mismatches[:10]

    def check(self, report: SimulationReport, wait_s: float = 90) -> dict[str, int]:
        """Both end checks of a scenario: exact features, every outcome learned once."""
        self.assert_features_exact(report, wait_s=wait_s)
        return self.assert_learned_exactly_once(report, wait_s=wait_s)

    def assert_learned_exactly_once(
        self, report: SimulationReport, wait_s: float = 90
    ) -> dict[str, int]:
        """Every outcome of a scored payment learned once; returns the counts for the report."""
        scored = self.scored() & report.payment_ids
        for _ in range(30):  # scorers may still be flushing: read until the set stops growing
            time.sleep(2)
            again = self.scored() & report.payment_ids
            if again == scored:
                break
            scored = again
        expected = self.outcomes_of(scored)
        wait_for(lambda: expected <= set(self.example_ids()), wait_s, "every outcome learned")
        # the learner's counts come from its newest checkpoint: wait until it holds them all
        wait_for(
            lambda: (self.checkpoint() or {}).get("n_learned", -1) == len(self.example_ids()),
            60,
            "a checkpoint covering every example",
        )
        ids = self.example_ids()
        status = self.checkpoint()
        assert status is not None
        assert status["n_learned"] == status["counts"]["learned"] == len(ids) == len(set(ids))
        assert len(expected) > 0
        unscored = len(report.payment_ids) - len(scored)
        print(
            f"payments={len(report.payment_ids)} scored={len(scored)} unscored={unscored} "
            f"outcomes_expected={len(expected)} learned={len(ids)}"
        )
        return {"scored": len(scored), "learned": len(ids), "unscored": unscored}


def read_to_end(settings: Settings, topic: str, timeout: float = 30) -> list[Message]:
    """Every record of ``topic`` up to its end as of now (all partitions, from offset 0)."""
    reader = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4().hex}"}
    )
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        reader.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[Message] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in reader.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                out.append(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return out
    finally:
        reader.close()


def run_with_fault(
    system: System,
    fault: Callable[[], None],
    *,
    seconds: float = 12,
    fault_at: float = 4,
    config: WorkloadConfig = WORKLOAD,
) -> SimulationReport:
    """Write the workload for ``seconds`` while ``fault`` runs once, ``fault_at`` s in."""
    reports: list[SimulationReport] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            reports.append(run_simulation(system.settings, config, seconds))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(fault_at)
    fault()
    writer.join(timeout=seconds + 300)
    assert not errors, errors
    return reports[0]


def stack_of(settings: Settings) -> Stack:
    """The local stack, for scenarios that restart services; skips on servers it did not start.
    On a cluster layout its Redis is not the one the scenario uses: ``redis_stack`` acts on that."""
    stack = Stack(settings, echo=lambda m: print(f"[stack] {m}", flush=True))
    foreign = [
        s.name
        for s in stack.status()
        if s.pid is None and not (settings.redis_layout == "cluster" and s.name.startswith("redis"))
    ]
    if foreign:
        pytest.skip(f"services {foreign} were not started by freshloop stack: cannot restart them")
    return stack


def redis_stack(system: System) -> Stack:
    """The stack whose ``redis`` services are the scenario's Redis: the local stack's one Redis,
    or the primaries of the run's Redis Cluster (``redis``, ``redis-2``, ``redis-3``: the name
    ``redis`` in ``up``/``down`` means all of them, in ``kill`` the first). Skips when the
    cluster was not started by this session (``FRESHLOOP_TEST_REDIS_CLUSTER_URL``)."""
    settings = system.settings
    if settings.redis_layout != "cluster":
        return stack_of(settings)
    if system.redis_cluster is None:
        pytest.skip("the Redis Cluster's folder is unknown: cannot restart its primaries")
    stack = Stack(system.redis_cluster, echo=lambda m: print(f"[cluster] {m}", flush=True))
    stack.setup = lambda for_tests=False: None  # type: ignore[method-assign] # redis-server only
    foreign = [svc.name for svc in stack.select(["redis"]) if stack.pid_of(svc) is None]
    if foreign:
        pytest.skip(f"cluster primaries {foreign} were not started by this session")
    return stack


# Every key of a namespace in one atomic step per Redis server. The flag lets the script touch
# keys of several slots (of the node it runs on: KEYS lists only those) on a Redis Cluster.
_WIPE = """#!lua flags=allow-cross-slot-keys
local n = 0
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', key) end
return n
"""


def wipe_namespace(settings: Settings) -> int:
    """Delete every key of the namespace, atomically on each Redis server, as a FLUSHALL or a
    lost disk would (a SCAN-then-DEL could interleave with a batch and keep half of it, which no
    real loss does); on a cluster every primary, one after the other. How many keys went."""
    client = client_for(settings, "writer")
    try:
        nodes = (
            [n.redis_connection for n in client.get_primaries()]
            if settings.redis_layout == "cluster"
            else [client]
        )
        return sum(int(node.eval(_WIPE, 0, f"{settings.namespace}:*")) for node in nodes)
    finally:
        client.close()


@pytest.fixture
def system(learn_ns: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """A System on the test's own namespace, its group starting at the change topics' end."""
    cluster: Settings | None = None
    if learn_ns.redis_layout == "cluster":  # the run's cluster: the same session fixture
        cluster = request.getfixturevalue("redis_cluster")
        if cluster.home.resolve() == learn_ns.home.resolve():
            cluster = None  # a running cluster named by URL: its folder is not known here
    _start_at_end(learn_ns)
    sys_ = System(learn_ns, tmp_path, redis_cluster=cluster)
    yield sys_
    sys_.stop()
    if learn_ns.redis_layout == "cluster":  # learn_ns's cleanup reaches one Redis server only
        client = client_for(learn_ns, "writer")
        drop_keys(client, f"{learn_ns.namespace}:*")
        client.close()
