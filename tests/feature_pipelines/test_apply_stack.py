"""``freshloop features apply`` through the real stack: features added, changed and removed
while the generator writes and the pipeline runs end equal to the SQL oracle."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline, verify_until_clean
from feature_pipelines.backfill import apply_features, plan_features
from feature_pipelines.catalog import CUSTOMER, FeatureSet
from feature_pipelines.cluster_pipeline import batch_writer, redis_client
from feature_pipelines.cluster_read import store_for
from feature_pipelines.registry import fingerprints_key
from feature_pipelines.spec import Condition, Feature
from freshloop.core.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from online_learning.features import SCORING_FEATURES
from tests.redis_layout import client_for, drop_keys, entity_key, scan_keys

pytestmark = pytest.mark.integration

_WORKLOAD = WorkloadConfig(
    rate=60,
    customers=40,
    merchants=10,
    label_delay_s=1.0,
    correction_share=0.15,
    delete_share=0.05,
    seed=21,
)


def _target() -> FeatureSet:
    """The sample set with one feature removed, one changed in place (its window) and four
    added: a filtered sum, a max, a distinct over a column the sample set does not read, and a
    lifetime max (every row of the database is read for it)."""
    changed = replace(SAMPLE_FEATURES.by_name("payment_count_10m"), window=timedelta(minutes=20))
    kept = [
        changed if f.name == changed.name else replace(f, total_from=None, count_from=None)
        for f in SAMPLE_FEATURES
        if f.name != "merchant_payment_count_1h"
    ]
    added = [
        Feature(
            "declined_amount_sum_24h",
            CUSTOMER,
            "payments",
            "created_at",
            "sum",
            "amount",
            (Condition("status", "declined"),),
            timedelta(hours=24),
        ),
        Feature(
            "amount_max_1h",
            CUSTOMER,
            "payments",
            "created_at",
            "max",
            "amount",
            (),
            timedelta(hours=1),
        ),
        SCORING_FEATURES.by_name("distinct_channels_24h"),
        Feature("amount_max_lifetime", CUSTOMER, "payments", "created_at", "max", "amount"),
    ]
    return FeatureSet.of([*kept, *added])


def _start_at_end(settings: Settings) -> None:
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    offsets = {}
    for table in ("payments", "payment_outcomes"):
        topic = settings.topic(table)
        for partition in probe.list_topics(topic, timeout=10).topics[topic].partitions:
            offsets[f"{topic}:{partition}"] = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )[1]
    probe.close()
    group = f"{settings.namespace}-features"
    client = redis_client(settings)  # the settings' layout: one Redis or the cluster
    batch_writer(settings, client, SAMPLE_FEATURES, settings.namespace, group).set_offsets(offsets)


@pytest.fixture
def ns(pipeline: Settings) -> Iterator[Settings]:
    """A namespace and consumer group of the test's own, starting at the topics' end: the
    test checks the entities its own workload creates."""
    settings = pipeline.model_copy(
        update={"redis_namespace": f"t{uuid.uuid4().hex[:10]}", "metrics_port": 0}
    )
    _start_at_end(settings)
    yield settings
    drop_keys(client_for(settings), f"{settings.namespace}:*")  # every primary of a cluster
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in ("freshloop_feature_registry", "freshloop_feature_jobs"):
            conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (settings.namespace,))  # noqa: S608


def _runs(pipeline: FeaturePipeline, features: FeatureSet) -> bool:
    """Whether ``pipeline`` runs ``features`` within a few seconds (it follows the switch
    between batches)."""
    deadline = time.monotonic() + 10
    while pipeline.features != features and time.monotonic() < deadline:
        time.sleep(0.02)
    return pipeline.features == features


def _feature_names(settings: Settings) -> set[str]:
    """Names of the features that have fields in the namespace's entity hashes."""
    client = client_for(settings, decode_responses=True)
    out: set[str] = set()
    for key in scan_keys(client, f"{settings.namespace}:e:*"):  # every primary of a cluster
        fields: list[str] = client.hkeys(key)
        out |= {re.split(r"[@#:]", f, maxsplit=1)[0] for f in fields}
    return out


def _written(report: SimulationReport) -> dict[str, list[int]]:
    return {"customer": report.customers, "merchant": report.merchants}


def test_apply_while_the_generator_writes_gives_zero_mismatches(ns: Settings) -> None:
    target = _target()
    pipeline = FeaturePipeline(ns, SAMPLE_FEATURES, max_batch=500)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    reports: list[SimulationReport] = []
    writer = threading.Thread(
        target=lambda: reports.append(run_simulation(ns, _WORKLOAD, duration_s=9)), daemon=True
    )
    try:
        writer.start()
        time.sleep(3)  # the pipeline runs the sample set, the generator writes
        plan, origin = plan_features(ns, target)
        assert origin == "pipeline"  # what the running pipeline recorded
        assert [c.name for c in plan.of("remove")] == ["merchant_payment_count_1h"]
        assert [c.name for c in plan.of("change")] == ["payment_count_10m"]
        assert len(plan.of("add")) == 4
        lines: list[str] = []
        during: list[set[str]] = []
        report = apply_features(
            ns,
            target,
            echo=lines.append,
            # what reads find after the first chunk (a scan of every entity hash per chunk
            # would make the test's time grow with the rows the database holds)
            on_progress=lambda _done, _total: during or during.append(_feature_names(ns)),
            chunk_rows=200,
        )
        assert report.rows > 0 and report.snapshot, lines
        # while it backfilled, reads still found the old definitions' fields (the changed
        # feature's and the removed one's) beside the new fields of the changed one
        assert (
            during
            and {
                "payment_count_10m",
                "payment_count_10m__next",
                "merchant_payment_count_1h",
            }
            <= during[0]
        ), during[:1]
        after = _feature_names(ns)
        assert "payment_count_10m" in after and "declined_amount_sum_24h" in after
        assert not {"payment_count_10m__next", "merchant_payment_count_1h"} & after
        assert _runs(pipeline, target)  # switched at a batch boundary, still running
        assert worker.is_alive()
        writer.join(timeout=60)
        (sim,) = reports
        assert sim.count("payments", "u") > 0 and sim.count("payments", "d") > 0
        store = store_for(ns, target)
        verified = verify_until_clean(ns.postgres_conninfo(), store, wait_s=60, only=_written(sim))
        assert verified.values_checked > 0
        assert verified.mismatches == []
        # the removed feature's fields are gone, the registry and its mirror hold the target
        client = client_for(ns, decode_responses=True)
        merchant = sim.merchants[0]
        fields: list[str] = client.hkeys(entity_key(ns, "merchant", merchant))
        assert fields  # the merchant has features: the check below looks at a real hash
        assert not [f for f in fields if f.startswith("merchant_payment_count_1h")]
        assert set(client.hkeys(fingerprints_key(ns.namespace))) == {f.name for f in target}
        again, origin = plan_features(ns, target)
        assert again.empty and origin == "registry"
        with psycopg.connect(ns.postgres_conninfo()) as conn:
            job = conn.execute(
                "SELECT state, rows_done, rows_total FROM freshloop_feature_jobs "
                "WHERE namespace = %s",
                (ns.namespace,),
            ).fetchall()
        assert job == [("done", report.rows, report.rows)]
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)


def _slow_apply(settings: Settings) -> None:
    """An apply that reads a few rows a chunk, slowly: killed by the test part way."""
    apply_features(
        settings,
        _target(),
        echo=lambda _m: None,
        on_progress=lambda _done, _total: time.sleep(0.1),
        chunk_rows=10,
    )


def test_an_apply_killed_mid_backfill_is_superseded_by_the_next(ns: Settings) -> None:
    """A job whose process dies part way stays 'running' with half-filled features; the next
    apply marks it superseded, cleans and fills the same features again: 0 mismatches."""
    pipeline = FeaturePipeline(ns, SAMPLE_FEATURES, max_batch=500)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    reports: list[SimulationReport] = []
    writer = threading.Thread(
        target=lambda: reports.append(run_simulation(ns, _WORKLOAD, duration_s=12)), daemon=True
    )
    writer.start()
    killed = multiprocessing.get_context("spawn").Process(target=_slow_apply, args=(ns,))
    try:
        time.sleep(4)
        killed.start()
        query = (
            "SELECT generation, state, rows_done, rows_total FROM freshloop_feature_jobs "
            "WHERE namespace = %s ORDER BY generation"
        )
        with psycopg.connect(ns.postgres_conninfo(), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while True:
                jobs = conn.execute(query, (ns.namespace,)).fetchall()
                if jobs and 0 < jobs[-1][2] < jobs[-1][3]:
                    break  # part way through its backfill
                assert time.monotonic() < deadline, jobs
                assert killed.is_alive(), jobs
                time.sleep(0.05)
            killed.kill()
            killed.join(timeout=10)
            assert jobs[-1][1] == "running"
            lines: list[str] = []
            report = apply_features(ns, _target(), echo=lines.append)
            assert any("superseded" in line for line in lines), lines
            assert report.generation == jobs[-1][0] + 1
            jobs = conn.execute(query, (ns.namespace,)).fetchall()
        assert [j[1] for j in jobs] == ["superseded", "done"]
        assert _runs(pipeline, _target()) and worker.is_alive()
        writer.join(timeout=60)
        (sim,) = reports
        store = store_for(ns, _target())
        verified = verify_until_clean(ns.postgres_conninfo(), store, wait_s=60, only=_written(sim))
        assert verified.values_checked > 0
        assert verified.mismatches == []
    finally:
        if killed.is_alive():
            killed.kill()
        pipeline.stop.set()
        worker.join(timeout=30)


def test_plan_and_apply_commands(ns: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line: plan as JSON, apply asks unless --yes, then nothing is left to do."""
    from freshloop.app.cli import cli

    for name, value in ns.environment({}).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    shown = runner.invoke(cli, ["features", "plan", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"applied_from": "none"' in shown.output
    applied = runner.invoke(cli, ["features", "apply", "--yes"])
    assert applied.exit_code == 0, applied.output
    assert "no applied set yet" in applied.output
    shown = runner.invoke(cli, ["features", "plan"])
    assert "0 to add, 0 to change, 0 to remove" in shown.output
    assert "[plan] applied set from: registry" in shown.output
