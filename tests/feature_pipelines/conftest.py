"""Fixtures of the feature tests: ``redis_layout`` runs a test against a single Redis and a
Redis Cluster (``cluster_fixtures``, registered for the whole suite in ``tests/conftest.py``, so
that the session starts one cluster however many directories use it)."""
