"""Batch retrain against the real Postgres: promoted after a concept change, kept without one,
one at a time, and nothing left 'running' by failures or crashed processes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine

from drift.exceptions import NotEnoughExamplesError, RetrainBusyError
from drift.ledger import RetrainLedger
from drift.retrain import retrain
from freshloop.core.settings import Settings
from online_learning import ModelRegistry
from tests.drift.retrain_fixtures import (
    Concept,
    drift_engine,
    drift_ns,
    insert_examples,
    make_rows,
    trained_model,
)

pytestmark = pytest.mark.integration

__all__ = ["drift_engine", "drift_ns"]  # the fixtures, re-exported for pytest

OLD, NEW = Concept("a"), Concept("b")


def _registry(settings: Settings, engine: Engine) -> ModelRegistry:
    return ModelRegistry(
        engine, settings.namespace, settings.model_signing_key.get_secret_value().encode()
    )


def _ledger(settings: Settings, engine: Engine) -> RetrainLedger:
    return RetrainLedger(engine, settings.namespace, settings.retrain_stale_after_s)


def _champion_of_the_old_concept(
    settings: Settings, engine: Engine, n: int = 3000
) -> ModelRegistry:
    registry = _registry(settings, engine)
    registry.register(trained_model(make_rows(n, OLD, seed=1), "champion-old"), "champion")
    return registry


def test_after_a_concept_change_the_challenger_is_promoted(
    drift_ns: Settings, drift_engine: Engine
) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine)
    champion = registry.load("champion-old")
    # The champion served (and kept learning) through the change: still mostly the old concept.
    insert_examples(
        drift_ns, make_rows(800, NEW, seed=2), champion, end=datetime.now(UTC), learn=True
    )
    seen: list[dict] = []
    result = retrain(
        drift_ns, trigger="manual", reason="test: concept change", on_progress=seen.append
    )

    assert result.status == "promoted", result.detail
    assert registry.champion_ref() is not None
    assert registry.champion_ref().version == result.challenger_version  # type: ignore[union-attr]
    statuses = {m["version"]: m["status"] for m in registry.models()}
    assert statuses == {"champion-old": "retired", result.challenger_version: "champion"}
    assert result.challenger_metrics["roc_auc"] >= result.champion_metrics["roc_auc"] + 0.02
    assert result.n_train == 600 and result.n_holdout == 200
    # The promoted model learned the holdout too, after being judged on it.
    assert registry.load(result.challenger_version).n_learned == 600 * 2 + 200

    row = _ledger(drift_ns, drift_engine).get(result.retrain_id)
    assert row is not None
    assert row["status"] == "promoted" and row["trigger"] == "manual"
    assert row["reason"] == "test: concept change" and row["finished_at"] is not None
    assert row["champion_version"] == "champion-old"
    assert row["challenger_version"] == result.challenger_version
    assert row["n_train"] == 600 and row["n_holdout"] == 200
    assert row["data_start"] < row["data_end"]
    assert row["champion_metrics"]["n"] == row["challenger_metrics"]["n"] == 200
    assert row["champion_metrics"]["roc_auc"] == pytest.approx(result.champion_metrics["roc_auc"])
    assert row["progress"]["phase"] == "done" and row["progress"]["pct"] == 100.0
    # Progress: monotone, reported during training about every tenth, then done.
    pcts = [p["pct"] for p in seen]
    assert pcts == sorted(pcts) and pcts[-1] == 100.0
    assert sum(1 for p in seen if p["phase"] == "training") >= 10


def test_without_a_change_the_champion_is_kept(drift_ns: Settings, drift_engine: Engine) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine, n=6000)
    champion = registry.load("champion-old")
    insert_examples(
        drift_ns, make_rows(800, OLD, seed=3), champion, end=datetime.now(UTC), learn=True
    )
    result = retrain(drift_ns, trigger="policy", reason="test: no change")

    assert result.status == "kept", result.detail
    assert "kept" in result.detail
    assert registry.champion_ref().version == "champion-old"  # type: ignore[union-attr]
    # The challenger is registered all the same, for an operator to promote by hand.
    assert {m["version"]: m["status"] for m in registry.models()}[result.challenger_version] == (
        "challenger"
    )
    row = _ledger(drift_ns, drift_engine).get(result.retrain_id)
    assert row is not None and row["status"] == "kept" and row["detail"] == result.detail
    assert row["trigger"] == "policy"


def test_only_examples_inside_the_window_are_read(drift_ns: Settings, drift_engine: Engine) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine, n=500)
    champion = registry.load("champion-old")
    now = datetime.now(UTC)
    insert_examples(
        drift_ns, make_rows(300, OLD, seed=4), champion, end=now - timedelta(hours=2), first_id=1
    )
    insert_examples(drift_ns, make_rows(200, NEW, seed=5), champion, end=now, first_id=1000)
    result = retrain(drift_ns, trigger="manual", reason="test: window")
    assert result.n_train + result.n_holdout == 200
    assert result.data_start is not None and result.data_start > now - timedelta(hours=1)


def test_a_second_retrain_while_one_runs_is_refused(
    drift_ns: Settings, drift_engine: Engine
) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine, n=500)
    insert_examples(
        drift_ns, make_rows(400, NEW, seed=6), registry.load("champion-old"), end=datetime.now(UTC)
    )
    training = threading.Event()
    refused = threading.Event()
    outcome: dict = {}

    def slow(progress: dict) -> None:  # hold the first retrain mid-training
        if progress["phase"] == "training" and not training.is_set():
            training.set()
            refused.wait(30)

    def first() -> None:
        outcome["first"] = retrain(drift_ns, trigger="manual", reason="first", on_progress=slow)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert training.wait(30)
        with pytest.raises(RetrainBusyError, match="is running since .* one retrain at a time"):
            retrain(drift_ns, trigger="policy", reason="second")
        assert _ledger(drift_ns, drift_engine).state().running
    finally:
        refused.set()
        thread.join(60)
    assert outcome["first"].status in {"promoted", "kept"}
    rows = _ledger(drift_ns, drift_engine).latest()
    assert [r["reason"] for r in rows] == ["first"]  # the refused one recorded nothing
    assert not _ledger(drift_ns, drift_engine).state().running


def test_too_few_examples_fail_the_retrain_and_free_the_guard(
    drift_ns: Settings, drift_engine: Engine
) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine, n=200)
    insert_examples(
        drift_ns, make_rows(50, NEW, seed=7), registry.load("champion-old"), end=datetime.now(UTC)
    )
    with pytest.raises(NotEnoughExamplesError, match="only 50 labelled examples.*need 100"):
        retrain(drift_ns, trigger="manual", reason="too early")
    (row,) = _ledger(drift_ns, drift_engine).latest()
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["detail"].startswith("NotEnoughExamplesError: only 50")
    assert registry.champion_ref().version == "champion-old"  # type: ignore[union-attr]
    # The guard is free again: the next retrain may run (and fails the same way here).
    with pytest.raises(NotEnoughExamplesError):
        retrain(drift_ns, trigger="manual", reason="still too early")


def test_a_crashed_retrain_is_given_up_after_the_stale_timeout(
    drift_ns: Settings, drift_engine: Engine
) -> None:
    registry = _champion_of_the_old_concept(drift_ns, drift_engine, n=500)
    insert_examples(
        drift_ns, make_rows(300, NEW, seed=8), registry.load("champion-old"), end=datetime.now(UTC)
    )
    ledger = _ledger(drift_ns, drift_engine)
    crashed = ledger.start("manual", "a process that died")
    ledger.progress(crashed, "training", 40.0)
    # Not stale yet: busy.
    with pytest.raises(RetrainBusyError):
        retrain(drift_ns, trigger="manual", reason="too soon")
    # Its last sign of life an hour ago (older than retrain_stale_after_s = 1800 s).
    with psycopg.connect(drift_ns.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(
            "UPDATE retrains SET started_at = now() - interval '2 hours', progress = "
            "jsonb_set(progress, '{updated_at}', to_jsonb((now() - interval '1 hour')::text)) "
            "WHERE retrain_id = %s",
            (crashed,),
        )
    assert not ledger.state().running
    result = retrain(drift_ns, trigger="manual", reason="after the crash")
    assert result.status in {"promoted", "kept"}
    old = ledger.get(crashed)
    assert old is not None and old["status"] == "failed"
    assert old["detail"].startswith("abandoned: no progress for 1800s")
