"""``features verify --sample N`` checks N entities of every kind the feature set defines, on a
single Redis and on a Redis Cluster (entities found by a SCAN of every primary)."""

from __future__ import annotations

import pytest

from feature_pipelines import SAMPLE_FEATURES, verify
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from tests.feature_pipelines.cluster_fixtures import LayoutRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the oracle over the whole database


def test_a_sample_takes_every_entity_kind(
    redis_layout: LayoutRedis, stack_settings: Settings
) -> None:
    tag = redis_layout.ns
    keys = KeyLayout(tag, "", "cluster" if redis_layout.layout == "cluster" else "single")
    redis_layout.client.hset(
        keys.entity("merchant", -7), mapping={"_written_ms": 1, "_commit_ms": 1}
    )
    settings = redis_layout.settings.model_copy(update={"redis_namespace": tag})
    store = store_for(settings, SAMPLE_FEATURES)  # the reader user, as 'features verify'
    assert store.scan_keys("merchant") == ["-7"]
    kinds = sorted(SAMPLE_FEATURES.entities())
    assert kinds == ["customer", "merchant"]
    report = verify(stack_settings.postgres_conninfo(), store, sample=2)
    assert report.by_entity == dict.fromkeys(kinds, 2), report.by_entity
    assert report.entities_checked == 4
    only = verify(stack_settings.postgres_conninfo(), store, only={"merchant": ["-7"]})
    assert only.by_entity == {"customer": 0, "merchant": 1}
    assert only.values_checked > 0 and only.mismatches == []
