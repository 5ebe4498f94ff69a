"""``features verify --sample N`` checks N entities of every kind the feature set defines."""

from __future__ import annotations

import uuid

import pytest
import redis

from feature_pipelines import SAMPLE_FEATURES, FeatureStore, verify
from freshloop.settings import Settings
from tests.fixtures import drop_namespace

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the oracle over the whole database


def test_a_sample_takes_every_entity_kind(stack_settings: Settings) -> None:
    tag = f"vk{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack_settings.redis_conninfo(), protocol=2)
    client.hset(f"{tag}:e:{{merchant:-7}}", mapping={"_written_ms": 1, "_commit_ms": 1})
    try:
        store = FeatureStore(client, SAMPLE_FEATURES, tag)
        kinds = sorted(SAMPLE_FEATURES.entities())
        assert kinds == ["customer", "merchant"]
        report = verify(stack_settings.postgres_conninfo(), store, sample=2)
        assert report.by_entity == dict.fromkeys(kinds, 2), report.by_entity
        assert report.entities_checked == 4
        only = verify(stack_settings.postgres_conninfo(), store, only={"merchant": ["-7"]})
        assert only.by_entity == {"customer": 0, "merchant": 1}
    finally:
        drop_namespace(stack_settings, tag)
