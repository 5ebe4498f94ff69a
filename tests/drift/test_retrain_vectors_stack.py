"""Retrain from recomputed vectors against the real Postgres: examples logged under the
``fraud`` service lack ``distinct_channels_24h``; a retrain of ``fraud_channels`` cannot learn
them as logged, and learns them recomputed from the row history, as of each payment's commit
(not as of today: a later change of the customer's payments does not leak in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine

from drift.exceptions import NotEnoughExamplesError
from drift.retrain import load_examples, recomputed_inputs, retrain
from freshloop.core.settings import Settings
from online_learning.registry import ModelRegistry
from tests.drift.history_fixtures import log_examples, write_payments
from tests.drift.retrain_fixtures import drift_engine, drift_ns

__all__ = ["drift_engine", "drift_ns"]

pytestmark = pytest.mark.integration


def test_a_retrain_learns_a_feature_added_since_from_history(
    drift_ns: Settings, drift_engine: Engine
) -> None:
    world = write_payments(drift_ns, 120, customers=4)
    logged = log_examples(
        drift_ns, world, service="fraud", labelled_at=datetime.now(UTC) - timedelta(minutes=10)
    )
    assert "distinct_channels_24h" not in logged[world.ids[0]]
    channels = drift_ns.model_copy(update={"feature_service": "fraud_channels"})

    with pytest.raises(NotEnoughExamplesError, match="FRESHLOOP_RETRAIN_VECTORS=recomputed"):
        retrain(channels, trigger="manual", reason="logged", engine=drift_engine)

    # a later change of the first payments: the recomputed vectors stay as of each commit
    with psycopg.connect(drift_ns.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(
            "UPDATE payments SET channel = 'web' WHERE payment_id = ANY(%s)", (world.ids[:12],)
        )
    recomputed = channels.model_copy(update={"retrain_vectors": "recomputed"})
    examples = load_examples(
        drift_engine, drift_ns.namespace, since=datetime(2000, 1, 1, tzinfo=UTC), limit=1000
    )
    vectors = {e.payment_id: e.features for e in recomputed_inputs(recomputed, examples)}
    assert len(vectors) == 120
    # customer k's payments cycle through the channels (payment i has channel i % 3, customer
    # i % 4): as of its first, second and third payment a customer has used 1, 2, 3 channels
    first = [world.ids[i] for i in range(12)]
    assert [vectors[p]["distinct_channels_24h"] for p in first] == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    for pid in world.ids:  # every other input as logged (a scorer reading at the commit)
        assert {k: v for k, v in vectors[pid].items() if k in logged[pid]} == pytest.approx(
            logged[pid]
        )

    result = retrain(recomputed, trigger="manual", reason="recomputed", engine=drift_engine)
    assert result.n_train + result.n_holdout == 120
    registry = ModelRegistry(
        drift_engine, drift_ns.namespace, drift_ns.model_signing_key.get_secret_value().encode()
    )
    model = registry.load(result.challenger_version)
    weights = model._estimator["LogisticRegression"].weights  # the inputs it learned
    assert "distinct_channels_24h" in weights and "payment_count_1h" in weights
