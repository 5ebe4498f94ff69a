"""A long-running stage started before its Redis Cluster waits for it: the cluster client is
made once a node answers (``layout_client_when_up``), instead of the start failing at once, and
the stage's stop event ends the wait. Real redis-server processes, no Kafka or Postgres."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import pytest
from redis.exceptions import RedisClusterException

from feature_pipelines.cluster_read import layout_client_when_up
from freshloop.core.health import HEALTH
from freshloop.core.redis_errors import REDIS_DOWN
from freshloop.core.settings import Settings
from freshloop.stack.redis_cluster import free_cluster_base, private_cluster

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make setup)"
)


def _cluster_settings(base: int) -> Settings:
    return Settings().model_copy(
        update={"redis_layout": "cluster", "redis_url": f"redis://127.0.0.1:{base}/0"}
    )


def _start(settings: Settings, stop: threading.Event) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def make() -> None:
        try:
            out["client"] = layout_client_when_up(settings, "writer", stop, "wait-test")
        except Exception as exc:  # noqa: BLE001 - the test reports whatever ended the wait
            out["error"] = exc

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    return thread, out


def test_a_stage_waits_for_its_cluster_and_goes_on_once_a_node_answers() -> None:
    base = free_cluster_base(3)
    if base is None:
        pytest.skip("no three free loopback ports for a cluster")
    stop = threading.Event()
    thread, out = _start(_cluster_settings(base), stop)
    time.sleep(2.5)
    assert thread.is_alive(), f"the client gave up before the cluster came: {out}"
    waiting = HEALTH.components()["wait-test"]  # said on /healthz meanwhile
    assert [d.dependency for d in waiting] == ["redis"]
    with private_cluster(Settings(), base=base):
        thread.join(timeout=60)
        assert not thread.is_alive(), "still waiting with every node up"
        assert "error" not in out, f"the wait ended in an error: {out.get('error')}"
        client = out["client"]
        client.set("wait-test{a}", "1")
        assert client.get("wait-test{a}") == b"1"
        assert len(client.get_primaries()) == 3
        assert HEALTH.components()["wait-test"] == []  # healthy again
        client.close()
    stop.set()


@pytest.mark.integration
def test_a_redis_that_is_not_a_cluster_node_is_refused_at_once(stack_settings: Settings) -> None:
    """A misconfiguration (the layout says cluster, the URL names one Redis) is not waited
    out: the client's error comes at the first try."""
    if stack_settings.redis_layout == "cluster":
        pytest.skip("the suite's Redis is a cluster here")
    settings = stack_settings.model_copy(update={"redis_layout": "cluster"})
    started = time.monotonic()
    with pytest.raises(RedisClusterException, match="not enabled"):
        layout_client_when_up(settings, "writer", threading.Event(), "wait-test")
    assert time.monotonic() - started < 10


def test_stop_ends_the_wait_with_the_last_error() -> None:
    base = free_cluster_base(3)
    if base is None:
        pytest.skip("no three free loopback ports for a cluster")
    stop = threading.Event()
    thread, out = _start(_cluster_settings(base), stop)
    time.sleep(1.5)
    assert thread.is_alive()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the stop event did not end the wait"
    assert isinstance(out.get("error"), REDIS_DOWN) and "client" not in out
