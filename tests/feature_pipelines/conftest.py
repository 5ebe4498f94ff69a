"""Fixtures of the feature tests: ``redis_layout`` runs a test against a single Redis and a
Redis Cluster (``cluster_fixtures``)."""

from tests.feature_pipelines.cluster_fixtures import redis_cluster, redis_layout

__all__ = ["redis_cluster", "redis_layout"]
