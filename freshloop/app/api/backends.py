"""The API's connections (Redis, Postgres), which failure belongs to which dependency, and the
``/healthz`` checks of all four backing services, each with a short timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from feature_pipelines import FeatureSet
from feature_pipelines.cluster_read import async_layout_client, async_store_for, layout_client
from freshloop.app.api.exceptions import DependencyUnavailable
from freshloop.app.api.models import DependencyState
from freshloop.core.redis_errors import REDIS_DOWN
from freshloop.core.settings import Settings
from freshloop.core.wal import SlotState, read_slot
from online_learning import ModelRegistry

__all__ = ["Backends", "dependency_error"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2.0
_CHECK_TIMEOUT_S = 3.0
# Redis unreachable, one Redis or a Redis Cluster (no node answers, a slot's primary is down)
_REDIS_DOWN = (*REDIS_DOWN, redis.exceptions.RedisClusterException)


def _where(settings: Settings, dependency: str) -> str:
    """Where a dependency is, without credentials."""
    if dependency == "postgres":
        return f"{settings.postgres_host}:{settings.postgres_port}/{settings.postgres_db}"
    if dependency == "redis":
        from urllib.parse import urlsplit

        parts = urlsplit(settings.redis_url)
        return f"{parts.hostname}:{parts.port}{parts.path}"
    if dependency == "kafka":
        return settings.kafka_bootstrap
    return settings.connect_url


def dependency_error(settings: Settings, exc: BaseException) -> DependencyUnavailable | None:
    """The ``DependencyUnavailable`` a failure means, or None when it is not a dependency's."""
    if isinstance(exc, DependencyUnavailable):
        return exc
    if isinstance(exc, _REDIS_DOWN):
        dep, reason = "redis", str(exc)
    elif isinstance(exc, ProgrammingError) and isinstance(exc.orig, psycopg.errors.UndefinedTable):
        dep = "postgres"
        reason = "its schema is missing (run 'freshloop db init')"
    elif isinstance(exc, OperationalError | psycopg.OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        dep = "postgres"
        orig = getattr(exc, "orig", None) or exc
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    else:
        return None
    msg = f"{dep} is unavailable at {_where(settings, dep)}: {reason}"
    return DependencyUnavailable(dep, msg)


class _Connecting:
    """A Redis client made at its first use, and made again at the next use while that
    fails: a Redis Cluster client asks a node for the cluster's layout when it is made and
    raises when none answers, so the API still starts while the cluster is down and answers
    503 naming Redis, as with one Redis (whose client connects at its first command)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class Backends:
    """Connections of one app: a Redis client and a pooled engine, both with short timeouts."""

    def __init__(self, settings: Settings, features: FeatureSet) -> None:
        self.settings = settings
        self.ns = settings.namespace
        # the API only reads: Redis's read-only user (settings.redis_read_user), of one Redis
        # or a Redis Cluster (redis_layout; a cluster client asks for the layout when made)
        self.redis: Any = _Connecting(
            lambda: layout_client(
                settings,
                "reader",
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_CONNECT_TIMEOUT_S,
            )
        )
        self.engine: Engine = create_engine(
            settings.sqlalchemy_url(),
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
            pool_timeout=_CONNECT_TIMEOUT_S,
            connect_args={
                "connect_timeout": int(_CONNECT_TIMEOUT_S),
                "options": "-c statement_timeout=5000",
            },
        )
        # Feature reads run on the event loop with their own asyncio client: a read is one
        # short Redis round trip, shorter than a hop to a worker thread and back. RESP2:
        # hashes come as flat lists, which parse faster than RESP3's maps.
        self.aredis = async_layout_client(
            settings,
            "reader",
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_CONNECT_TIMEOUT_S,
        )
        self.features = features
        self.astore = async_store_for(settings, features, self.aredis)
        self.registry = ModelRegistry(
            self.engine, self.ns, settings.model_signing_key.get_secret_value().encode()
        )
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="freshloop-health")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()
        self.redis.close()

    async def aclose(self) -> None:
        await self.aredis.aclose()
        self.close()

    # -- /healthz -------------------------------------------------------------------------
    def health(self) -> dict[str, DependencyState]:
        """Each dependency's state; the four checks run in parallel, each bounded in time."""
        checks: dict[str, Callable[[], str]] = {
            "postgres": self._check_postgres,
            "redis": self._check_redis,
            "kafka": self._check_kafka,
            "connect": self._check_connect,
        }
        started = time.monotonic()
        futures = {name: self._pool.submit(_timed, check) for name, check in checks.items()}
        out: dict[str, DependencyState] = {}
        for name, future in futures.items():
            left = max(0.05, _CHECK_TIMEOUT_S - (time.monotonic() - started))
            try:
                ok, latency_ms, detail = future.result(timeout=left)
            except FutureTimeout:
                ok, latency_ms = False, _CHECK_TIMEOUT_S * 1000
                detail = f"no answer within {_CHECK_TIMEOUT_S:.0f} s"
            if not ok:
                detail = f"unavailable at {_where(self.settings, name)}: {detail}"
            out[name] = DependencyState(ok=ok, latency_ms=round(latency_ms, 2), detail=detail)
        return out

    def replication_slot(self) -> SlotState | None:
        """The connector slot's WAL state; None when Postgres cannot say (its check fails)."""
        try:
            with self.engine.connect() as conn:
                return read_slot(conn, self.settings)
        except (DBAPIError, OperationalError) as exc:
            log.warning("replication slot not read error=%s", str(exc).splitlines()[0])
            return None

    def _check_postgres(self) -> str:
        with self.engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
        return f"server {version}"

    def _check_redis(self) -> str:
        info = self.redis.info("server")
        return f"redis {info.get('redis_version', '?')}"

    def _check_kafka(self) -> str:
        from confluent_kafka.admin import AdminClient

        config: dict[str, Any] = {
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "socket.connection.setup.timeout.ms": int(_CONNECT_TIMEOUT_S * 1000),
            "logger": logging.getLogger("freshloop.api.kafka"),
        }
        admin = AdminClient(config)
        meta = admin.list_topics(timeout=_CONNECT_TIMEOUT_S)
        return f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics"

    def _check_connect(self) -> str:
        url = self.settings.connect_url.rstrip("/")
        name = quote(self.settings.connector_name, safe="")
        with httpx.Client(timeout=_CONNECT_TIMEOUT_S) as client:
            answer = client.get(f"{url}/connectors/{name}/status")
        if answer.status_code == 404:
            return f"connector {self.settings.connector_name} not created"
        answer.raise_for_status()
        body = answer.json()
        tasks = ",".join(t.get("state", "?") for t in body.get("tasks", []))
        return f"connector {body['connector']['state']} tasks [{tasks}]"


def _timed(check: Callable[[], str]) -> tuple[bool, float, str]:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # any failure of a check is that dependency's state, not ours
        detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        ok = False
    return ok, (time.perf_counter() - started) * 1000, detail
