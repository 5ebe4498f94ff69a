"""Fencing (``freshloop.core.fencing``, ``sql/007_fencing.sql``): the token the trigger reads, the
database error it raises, and ownership against the real Postgres: taking it, a lost lock
session taken back while nobody waited, and a copy whose epoch was superseded writing nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError

from freshloop.core.db import POSTGRES_DOWN
from freshloop.core.exceptions import FencedError
from freshloop.core.fencing import (
    FENCED_SQLSTATE,
    Ownership,
    fence_token,
    fenced_error,
    parse_fence_token,
)
from freshloop.core.settings import Settings


# ---- pure -----------------------------------------------------------------------------------
@given(
    role=st.sampled_from(["learner", "scheduler"]),
    epoch=st.integers(min_value=0, max_value=2**62),
    namespace=st.text(min_size=1, max_size=40),
)
def test_a_token_reads_back_as_written(role: str, epoch: int, namespace: str) -> None:
    assert parse_fence_token(fence_token(role, epoch, namespace)) == (role, epoch, namespace)


class _Diag:
    message_primary = "fenced: the learner of namespace 'x' holds epoch 1 but the current one is 2"


class _DbError(Exception):
    sqlstate = FENCED_SQLSTATE
    diag = _Diag()


def test_the_trigger_error_is_found_anywhere_in_the_chain() -> None:
    wrapped = RuntimeError("statement failed")
    wrapped.orig = _DbError("x")  # type: ignore[attr-defined]  # as sqlalchemy wraps it
    try:
        try:
            raise wrapped
        except RuntimeError as inner:
            msg = "outer"
            raise ValueError(msg) from inner
    except ValueError as exc:
        found = fenced_error(exc)
    assert isinstance(found, FencedError)
    assert str(found).startswith(_Diag.message_primary)
    assert "stops" in str(found)
    assert fenced_error(RuntimeError("another error")) is None


def test_postgres_down_is_not_mistaken_for_fenced() -> None:
    """The trigger's SQLSTATE class is no standard one: psycopg raises a plain DatabaseError,
    never an OperationalError, which the parts retry as 'Postgres is down'."""
    from psycopg.errors import _class_for_state  # the mapping psycopg applies to a result

    assert not issubclass(_class_for_state(FENCED_SQLSTATE), POSTGRES_DOWN)


# ---- against Postgres -----------------------------------------------------------------------
pg = pytest.mark.integration


@pytest.fixture
def fence_ns(stack_settings: Settings) -> Iterator[Settings]:
    tag = f"t{uuid.uuid4().hex[:10]}"
    yield stack_settings.model_copy(update={"redis_namespace": tag})
    with psycopg.connect(stack_settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM drift_reports WHERE namespace = %s", (tag,))
        conn.execute("DELETE FROM freshloop_epochs WHERE namespace = %s", (tag,))


def _owner(settings: Settings) -> Ownership:
    ns = settings.namespace
    return Ownership(settings, ns, "scheduler", f"freshloop drift scheduler {ns}")


def _kill(settings: Settings, pid: int | None) -> None:
    assert pid is not None
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def _report(conn: object, ns: str) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO drift_reports (namespace, status, summary, report, decision, html) "
            "VALUES (:ns, 'ok', '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, '')"
        ),
        {"ns": ns},
    )


def _reports(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM drift_reports WHERE namespace = %s", (settings.namespace,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pg
def test_one_owner_and_a_lost_session_taken_back_while_nobody_waits(fence_ns: Settings) -> None:
    first, second = _owner(fence_ns), _owner(fence_ns)
    try:
        assert first.take(wait_s=1)
        epoch = first.epoch
        assert not second.take(wait_s=0.5)  # held: the second one does not get it
        _kill(fence_ns, first.backend_pid)
        first.check()  # lost, nobody took over: taken back, one epoch on
        assert first.epoch == epoch + 1 and first.backend_pid is not None
        first.check()  # and held
    finally:
        first.release()
        second.release()


@pg
def test_a_superseded_owner_writes_nothing_and_stops(fence_ns: Settings) -> None:
    first, second = _owner(fence_ns), _owner(fence_ns)
    engine = first.fence(create_engine(fence_ns.sqlalchemy_url(), pool_pre_ping=True))
    try:
        with engine.connect() as conn:  # a session opened before: it holds no epoch yet
            conn.execute(text("SELECT 1"))
        assert first.take(wait_s=1)
        with engine.begin() as conn:
            _report(conn, fence_ns.namespace)  # the owner writes
        assert _reports(fence_ns) == 1
        _kill(fence_ns, first.backend_pid)
        assert second.take(wait_s=5)  # another copy takes over: the epoch moves on
        with pytest.raises(DatabaseError) as raised, engine.begin() as conn:
            _report(conn, fence_ns.namespace)
        fenced = fenced_error(raised.value)
        assert fenced is not None and "another copy took ownership" in str(fenced)
        assert _reports(fence_ns) == 1  # nothing written after the takeover
        with pytest.raises(FencedError, match="another session holds the lock"):
            first.check()
        with pytest.raises(DatabaseError):  # still nothing, whatever it tries
            with engine.begin() as conn:
                _report(conn, fence_ns.namespace)
        # sessions without the fence (the command line, people) are not fenced
        with psycopg.connect(fence_ns.postgres_conninfo(), autocommit=True) as plain:
            plain.execute(
                "INSERT INTO drift_reports (namespace, status, summary, report, decision, html) "
                "VALUES (%s, 'ok', '{}', '{}', '{}', '')",
                (fence_ns.namespace,),
            )
        assert _reports(fence_ns) == 2
    finally:
        engine.dispose()
        first.release()
        second.release()


@pg
def test_an_engine_used_before_ownership_writes_nothing(fence_ns: Settings) -> None:
    owner = _owner(fence_ns)
    engine = owner.fence(create_engine(fence_ns.sqlalchemy_url()))
    try:
        with pytest.raises(DatabaseError), engine.begin() as conn:
            _report(conn, fence_ns.namespace)
        assert _reports(fence_ns) == 0
    finally:
        engine.dispose()
