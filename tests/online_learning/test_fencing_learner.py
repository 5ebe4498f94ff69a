"""Fencing of the learner through the real stack: once another learner took the namespace over
(the first one's lock session killed while the second waited), the first writes no checkpoint and
no training example, and its loop stops with ``FencedError`` within a second or two."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from freshloop.core.exceptions import FencedError
from freshloop.core.settings import Settings
from online_learning import LearnerService
from online_learning.records import LabelledExample
from tests.online_learning.stack import learn_ns, wait_for

pytestmark = pytest.mark.integration

__all__ = ["learn_ns"]


def lock_sessions(settings: Settings, lock_key: str, *, granted: bool) -> list[int]:
    """The backends holding (``granted``) or waiting for the advisory lock ``hashtext(key)``."""
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = %s "
            "AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND objid::bigint = (hashtext(%s)::bigint & 4294967295)",
            (granted, lock_key),
        ).fetchall()
    return [int(r[0]) for r in rows]


def kill_session(settings: Settings, pid: int) -> None:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def _written(settings: Settings) -> tuple[int, set[int]]:
    """Checkpoints and training examples of the namespace."""
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM learner_checkpoints WHERE namespace = %s", (settings.namespace,)
        ).fetchone()
        ids = conn.execute(
            "SELECT payment_id FROM training_examples WHERE namespace = %s", (settings.namespace,)
        ).fetchall()
    assert row is not None
    return int(row[0]), {int(r[0]) for r in ids}


def take_over(settings: Settings) -> LearnerService:
    """Start a second learner, and once it waits for the lock, kill the owner's lock session:
    the second one takes the namespace over."""
    key = f"freshloop learner {settings.namespace}"
    (pid,) = lock_sessions(settings, key, granted=True)
    second = LearnerService(settings)
    starting = threading.Thread(target=second.start, daemon=True)
    starting.start()
    deadline = time.monotonic() + 5  # until it waits in Postgres (a poller never shows)
    while time.monotonic() < deadline and not lock_sessions(settings, key, granted=False):
        time.sleep(0.1)
    kill_session(settings, pid)
    starting.join(60)
    assert second.learner is not None, "the second learner did not start"
    return second


def test_a_superseded_learner_writes_no_checkpoint_and_no_example(learn_ns: Settings) -> None:
    first = LearnerService(learn_ns)
    first.start()  # its first checkpoint: the start position
    second = None
    try:
        second = take_over(learn_ns)
        before = _written(learn_ns)
        assert before[0] >= 1
        now = datetime.now(UTC)
        payment_id = uuid.uuid4().int % 2**62
        assert first.learner is not None
        first._learned(
            [
                LabelledExample(  # the first one goes on learning in memory...
                    payment_id=payment_id,
                    features={"amount": 12.5},
                    label=True,
                    score=0.4,
                    model_version=first.learner.model.version,
                    predicted_at=now,
                    labelled_at=now,
                    source="outcome",
                )
            ]
        )
        with pytest.raises(FencedError, match="another copy took ownership"):
            first.checkpoint()  # ...but writes nothing of it
        assert _written(learn_ns) == before
        second.checkpoint()  # the owner writes
        assert _written(learn_ns)[0] == before[0] + 1
        assert payment_id not in _written(learn_ns)[1]
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_learner_that_lost_its_lock_to_another_stops(learn_ns: Settings) -> None:
    first = LearnerService(learn_ns)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            first.run()
        except BaseException as exc:  # noqa: BLE001 - what the loop ended with, checked below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    second = None
    try:
        wait_for(lambda: first.counts.checkpoints >= 1, 30, "the first learner's checkpoint")
        second = take_over(learn_ns)
        thread.join(10)
        assert not thread.is_alive(), "the superseded learner goes on"
        assert len(errors) == 1 and isinstance(errors[0], FencedError), errors
        assert "is no longer the owner" in str(errors[0])
    finally:
        first.stop.set()
        thread.join(30)
        if second is not None:
            second.close()
