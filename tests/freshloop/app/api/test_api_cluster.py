"""The API and the scorer on a Redis Cluster (``redis_layout=cluster``, docs/redis-cluster.md):
a payment written to Postgres is scored by the scoring pipeline, which reads its features from
the cluster's shards, and the API serves that prediction and the features, read through the
asyncio cluster client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_read import cluster_client, layout_client, store_for
from freshloop.core.settings import Settings
from online_learning import SCORING_FEATURES
from tests.feature_pipelines.test_pipeline_stack import drop_keys
from tests.freshloop.app.api.fixtures import ApiHandle, api_ns, serve, unused_port
from tests.freshloop.app.api.test_api import _write_payment
from tests.online_learning.stack import ScoringPipeline, wait_for

pytestmark = pytest.mark.integration

__all__ = ["api_ns", "unused_port"]  # fixtures, re-exported for pytest


@pytest.fixture
def cluster_api(api_ns: Settings, redis_cluster: Settings) -> Iterator[ApiHandle]:
    """The API of a namespace of the test's own, kept in the session's Redis Cluster."""
    settings = api_ns.model_copy(
        update={"redis_layout": "cluster", "redis_url": redis_cluster.redis_url}
    )
    try:
        yield from serve(settings)
    finally:
        drop_keys(cluster_client(settings.redis_conninfo()), settings.namespace)


def test_a_payment_is_scored_and_served_from_the_cluster(cluster_api: ApiHandle) -> None:
    settings = cluster_api.settings
    http = cluster_api.http
    with ScoringPipeline(settings):
        customer, merchant, payment = _write_payment(settings, "23.45")
        wait_for(
            lambda: http.get(f"/predictions/{payment}").status_code == 200,
            60,
            "the payment's prediction",
        )

    prediction = http.get(f"/predictions/{payment}").json()
    assert 0.0 <= prediction["score"] <= 1.0
    # the scorer read the payment's own features from the cluster (they include it)
    assert prediction["features"]["payment_count_lifetime"] == 1.0

    body = http.get(f"/features/customer/{customer}").json()
    assert body["found"] is True and body["values"]["payment_count_lifetime"] == 1
    assert Decimal(body["values"]["amount_sum_lifetime"]) == Decimal("23.45")
    batch = http.post("/features/merchant/batch", json={"keys": [merchant, 0]}).json()
    assert [r["found"] for r in batch["results"]] == [True, False]

    # the entity lives under its shard's tag, not the single layout's key
    layout = KeyLayout(settings.namespace, "", "cluster", settings.redis_cluster_shards)
    reader = layout_client(settings)
    assert reader.exists(layout.entity("customer", customer)) == 1
    assert reader.exists(f"{settings.namespace}:e:{{customer:{customer}}}") == 0
    # the sync store of the same layout reads what the API served
    synced = store_for(settings, SCORING_FEATURES).get("customer", customer)
    assert synced.values["payment_count_lifetime"] == 1
    assert http.get("/healthz").json()["dependencies"]["redis"]["ok"] is True


def test_a_cluster_down_is_a_503_naming_redis(api_ns: Settings, unused_port: int) -> None:
    """No primary answers: the API still starts (its cluster clients learn the layout at their
    first use) and every Redis read is a 503 naming Redis, as with one Redis down."""
    down = api_ns.model_copy(
        update={"redis_layout": "cluster", "redis_url": f"redis://127.0.0.1:{unused_port}/0"}
    )
    for handle in serve(down):
        answer = handle.http.get("/features/customer/1")
        assert answer.status_code == 503 and answer.json()["dependency"] == "redis"
        assert f"127.0.0.1:{unused_port}" in answer.json()["detail"]
        assert handle.http.get("/predictions/1").json()["dependency"] == "redis"
        assert handle.http.get("/models").status_code == 200  # Postgres is still there
        health = handle.http.get("/healthz")
        assert health.status_code == 503 and not health.json()["dependencies"]["redis"]["ok"]
        assert set(handle.http.get("/api/summary").json()["errors"]) == {"redis"}
        assert handle.http.get("/metrics").status_code == 200
