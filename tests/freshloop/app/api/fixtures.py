"""Fixtures of the API tests: an isolated namespace, a live server on a free loopback port whose
client sends an admin token of the namespace, and writers for what the dashboard reads (pipeline
stats, drift reports, retrains)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import psycopg
import pytest
import redis
import sqlalchemy

from feature_pipelines.live_stats import StatsPublisher
from freshloop.app.api import ApiServer
from freshloop.app.api.tokens import TokenStore
from freshloop.core.settings import Settings
from tests.fixtures import drop_namespace

__all__ = [
    "ApiHandle",
    "api",
    "api_ns",
    "insert_report",
    "insert_retrain",
    "make_token",
    "serve",
    "unused_port",
    "write_stats",
]


# The shared Redis holds millions of keys of other tests in database 0, where a SCAN for one
# namespace's keys takes tens of seconds; these tests keep theirs in a quiet database.
_REDIS_DB = 3


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def api_ns(pipeline: Settings) -> Iterator[Settings]:
    """Own Redis namespace (in a quiet database), predictions topic, consumer groups and
    Postgres rows (registry, checkpoints, drift reports, retrains); all removed afterwards."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = pipeline.model_copy(
        update={
            "redis_url": _redis_db(pipeline.redis_url, _REDIS_DB),
            "redis_namespace": tag,
            "predictions_topic": f"{tag}.predictions",
            "metrics_port": 0,
            "label_horizon": timedelta(hours=1),
            "label_grace": timedelta(minutes=5),
            "champion_poll_s": 1.0,
            "score_max_age": timedelta(minutes=1),
        }
    )
    yield settings
    drop_namespace(settings, tag)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM api_tokens WHERE namespace = %s", (tag,))


def make_token(settings: Settings, *scopes: str, expires_days: float | None = None) -> str:
    """A new token of the namespace (admin unless scopes are given), under a unique name."""
    engine = sqlalchemy.create_engine(settings.sqlalchemy_url())
    try:
        created = TokenStore(engine, settings.namespace).create(
            f"test-{uuid.uuid4().hex[:8]}", scopes or ("admin",), expires_days=expires_days
        )
    finally:
        engine.dispose()
    return created.token


@dataclass
class ApiHandle:
    settings: Settings
    server: ApiServer
    http: httpx.Client
    token: str

    @property
    def url(self) -> str:
        return self.server.url


def serve(settings: Settings, *, tokens_from: Settings | None = None) -> Iterator[ApiHandle]:
    """The server; its client sends an admin token made in ``tokens_from`` (default: the same
    settings; a server whose Postgres is unreachable needs the token made elsewhere)."""
    token = make_token(tokens_from or settings)
    server = ApiServer(settings, port=0).start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=30, headers=headers) as http:
            yield ApiHandle(settings, server, http, token)
    finally:
        server.stop()


@pytest.fixture
def api(api_ns: Settings) -> Iterator[ApiHandle]:
    """A real uvicorn server of the namespace on an ephemeral loopback port."""
    yield from serve(api_ns)


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield int(sock.getsockname()[1])
    sock.close()


def write_stats(
    settings: Settings,
    consumer: str,
    *,
    applied: int,
    lags_ms: list[float],
    applied_total: int,
    dead_lettered_total: int = 0,
) -> None:
    """A pipeline consumer's live stats, written by the pipeline's own publisher: ``applied``
    changes in the last second (so that many per second) with these commit->applied lags."""
    publisher = StatsPublisher(
        redis.Redis.from_url(settings.redis_conninfo()), settings.namespace, consumer, ttl_s=300
    )
    publisher.record(applied, lags_ms)
    publisher.publish(
        applied_total=applied_total, dead_lettered_total=dead_lettered_total, assigned_partitions=1
    )


def insert_report(
    settings: Settings,
    status: str,
    summary: dict[str, Any],
    html: str = "",
    decision: dict[str, Any] | None = None,
) -> int:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO drift_reports (namespace, status, summary, report, decision, html)"
            " VALUES (%s, %s, %s::jsonb, '{}'::jsonb, %s::jsonb, %s) RETURNING report_id",
            (
                settings.namespace,
                status,
                orjson.dumps(summary).decode(),
                orjson.dumps(decision or {"action": "none"}).decode(),
                html,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def insert_retrain(settings: Settings, status: str, reason: str, report_id: int | None) -> int:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO retrains (namespace, trigger, reason, report_id, status, detail,"
            " finished_at) VALUES (%s, 'policy', %s, %s, %s, %s, now()) RETURNING retrain_id",
            (settings.namespace, reason, report_id, status, f"test {uuid.uuid4().hex[:6]}"),
        ).fetchone()
    assert row is not None
    return int(row[0])
