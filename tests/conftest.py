"""Session fixtures: settings, and the real stack for tests marked ``integration``.

``FRESHLOOP_TEST_STACK`` chooses the backend:
- ``local`` (default): use the stack if it is already up (ours or servers named by the
  settings); otherwise start it with ``freshloop stack`` and stop, at the end, only what this
  session started;
- ``external``: use the servers named by the ``FRESHLOOP_`` settings, start nothing;
- ``containers``: start the same services with testcontainers (needs a Docker engine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from freshloop.core.settings import Settings

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
def stack_settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings of a running stack (Postgres, Redis, Kafka, Connect+Debezium), schema applied."""
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
    yield settings
    for _ in gen:  # run the backend's teardown
        pass
