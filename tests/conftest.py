"""Session fixtures: settings, and the real stack for tests marked ``integration``.

``FRESHLOOP_TEST_STACK`` chooses the backend:
- ``local`` (default): use the stack if it is already up (ours or servers named by the
  settings); otherwise start it with ``freshloop stack`` and stop, at the end, only what this
  session started;
- ``external``: use the servers named by the ``FRESHLOOP_`` settings, start nothing;
- ``containers``: start the same services with testcontainers (needs a Docker engine).

``FRESHLOOP_TEST_REDIS_LAYOUT=cluster`` (``make test-cluster``) runs the same tests with the
stack's Redis replaced by a Redis Cluster of three primaries (``tests/redis_layout.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from freshloop.core.settings import Settings
from tests.redis_layout import SUITE_LAYOUT

# Fixtures parametrized over the two Redis layouts: each case runs in the run of its layout
# (``make test`` the single case, ``make test-cluster`` the cluster one; CI runs both), so
# neither run repeats what the other covers. Outside tests/feature_pipelines and tests/system
# (which the cluster run does not collect) both cases run in ``make test``.
LAYOUT_FIXTURES = ("redis_layout", "ns_start")
CLUSTER_RUN_DIRS = ("tests/feature_pipelines/", "tests/system/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the other layout's case of tests parametrized over layouts (see above); on a
    cluster run, skip the tests only one Redis can run (``single_redis``, with the marker's
    reason)."""
    other = "single" if SUITE_LAYOUT == "cluster" else "cluster"
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        in_both_runs = item.nodeid.startswith(CLUSTER_RUN_DIRS)
        if in_both_runs and any(params.get(name) == other for name in LAYOUT_FIXTURES):
            dropped.append(item)
            continue
        marker = item.get_closest_marker("single_redis")
        if marker is not None and SUITE_LAYOUT == "cluster":
            why = marker.args[0] if marker.args else "needs one Redis"
            item.add_marker(pytest.mark.skip(reason=f"single Redis only: {why}"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# cluster_fixtures: one Redis Cluster per session for every test that asks for it
pytest_plugins = ["tests.fixtures", "tests.feature_pipelines.cluster_fixtures"]

# The suite shares 2 cores with the whole stack: how fast an example is drawn or run says
# nothing about correctness here, so neither is a failure (properties still run in full).
hypothesis_settings.register_profile(
    "freshloop", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("freshloop")


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


def _local_backend(settings: Settings) -> Iterator[Settings]:
    from freshloop.stack import Stack

    stack = Stack(settings, echo=lambda m: print(f"[stack] {m}", flush=True))
    # Servers already answering at the configured ports (ours or not) are used as they are.
    started = [] if stack.all_healthy() else stack.up()
    try:
        yield settings
    finally:
        if started:
            stack.down(started)


@pytest.fixture(scope="session")
def stack_settings(base_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings of a running stack (Postgres, Redis, Kafka, Connect+Debezium), schema applied;
    under ``FRESHLOOP_TEST_REDIS_LAYOUT=cluster`` its Redis is the session's Redis Cluster."""
    from feature_pipelines.definitions import tables_to_capture
    from freshloop.core.db import init_database

    backend = os.environ.get("FRESHLOOP_TEST_STACK", "local")
    if backend == "external":
        gen: Iterator[Settings] = iter([base_settings])
    elif backend == "containers":
        from tests.container_stack import container_backend

        gen = container_backend(base_settings)
    elif backend == "local":
        gen = _local_backend(base_settings)
    else:
        pytest.fail(f"FRESHLOOP_TEST_STACK={backend!r}: use local, external or containers")
    settings = next(gen)
    init_database(settings, capture=tables_to_capture(settings))
    if SUITE_LAYOUT == "cluster":
        cluster: Settings = request.getfixturevalue("redis_cluster")
        settings = settings.model_copy(
            update={"redis_layout": "cluster", "redis_url": cluster.redis_url}
        )
    yield settings
    for _ in gen:  # run the backend's teardown
        pass
