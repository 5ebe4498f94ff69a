"""Fencing: which copy owns a namespace's learner or drift scheduler, and whose writes count.

A session advisory lock elects one copy per namespace and role, but alone it does not protect
the data: a Postgres restart or a killed session frees it while the copy goes on, and a second
copy waiting for it takes it. So taking ownership also increments an epoch (the fencing token,
``freshloop_epochs`` in ``sql/007_fencing.sql``); every session of the owner's engine carries
``freshloop.fence = '<role>:<epoch>:<namespace>'`` and a trigger on the tables the owner writes
refuses, inside the writing transaction, a write whose epoch is no longer the current one
(SQLSTATE ``LF001``, raised here as ``FencedError``).

``Ownership.check`` (about once a second) re-checks the lock session and the epoch. A lost
session is taken back only if nobody took the role meanwhile (its epoch is compared and
incremented in one statement): a Postgres restart does not stop a lone learner. Otherwise, or
when the epoch moved on, ``FencedError``: the part says so and stops.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Literal

import psycopg
import psycopg.errors
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

from freshloop.core.db import connect
from freshloop.core.exceptions import FencedError
from freshloop.core.settings import Settings

__all__ = [
    "FENCED_SQLSTATE",
    "Ownership",
    "Role",
    "fence_token",
    "fenced_error",
    "parse_fence_token",
]

log = logging.getLogger(__name__)

Role = Literal["learner", "scheduler"]

# The SQLSTATE of sql/007_fencing.sql's trigger; class "LF" is no standard class, so psycopg
# raises a plain DatabaseError: never mistaken for "Postgres is down, try again".
FENCED_SQLSTATE = "LF001"
_INFO_KEY = "freshloop_fence"
_TAKE = (
    "INSERT INTO freshloop_epochs (namespace, role, epoch, owner) VALUES (%s, %s, 1, %s) "
    "ON CONFLICT (namespace, role) DO UPDATE SET epoch = freshloop_epochs.epoch + 1, "
    "owner = EXCLUDED.owner, taken_at = now() RETURNING epoch"
)
_TAKE_BACK = (
    "UPDATE freshloop_epochs SET epoch = epoch + 1, owner = %s, taken_at = now() "
    "WHERE namespace = %s AND role = %s AND epoch = %s RETURNING epoch"
)
_CURRENT = "SELECT epoch FROM freshloop_epochs WHERE namespace = %s AND role = %s"


def fence_token(role: str, epoch: int, namespace: str) -> str:
    """The value of ``freshloop.fence`` for a session writing as ``role`` at ``epoch``.

    >>> fence_token("learner", 3, "demo:eu")
    'learner:3:demo:eu'
    """
    return f"{role}:{epoch}:{namespace}"


def parse_fence_token(token: str) -> tuple[str, int, str]:
    """Role, epoch and namespace of a token, read as the trigger reads it (the namespace is
    everything after the second colon).

    >>> parse_fence_token("scheduler:12:a:b")
    ('scheduler', 12, 'a:b')
    """
    role, epoch, namespace = token.split(":", 2)
    return role, int(epoch), namespace


def fenced_error(exc: BaseException) -> FencedError | None:
    """The ``FencedError`` a database error stands for (its chain holds SQLSTATE LF001), else
    None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, FencedError):
            return current
        if getattr(current, "sqlstate", None) == FENCED_SQLSTATE:
            diag = getattr(current, "diag", None)
            text = getattr(diag, "message_primary", None) or str(current).splitlines()[0]
            msg = (
                f"{text}; this copy wrote nothing of that transaction and stops "
                "(run one per namespace: a supervisor restarting it is fine)"
            )
            return FencedError(msg)
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return None


class Ownership:
    """One role of one namespace owned by this process: its lock session and its epoch."""

    def __init__(self, settings: Settings, namespace: str, role: Role, lock_key: str) -> None:
        self.settings = settings
        self.ns = namespace
        self.role = role
        self.lock_key = lock_key  # the advisory lock: hashtext(lock_key)
        self.epoch = 0  # 0: not owned (no epoch is 0, so a fenced engine writes nothing)
        self._conn: psycopg.Connection | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def token(self) -> str:
        return fence_token(self.role, self.epoch, self.ns)

    @property
    def backend_pid(self) -> int | None:
        """The Postgres backend holding the lock (None while it is lost)."""
        return None if self._conn is None else int(self._conn.info.backend_pid)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.settings.postgres_conninfo(), autocommit=True, connect_timeout=5
        )

    def take(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for the lock, then take the next epoch; False if another copy
        still holds the lock. A blocked wait wakes as soon as the holder's session ends."""
        conn = connect(self.settings)  # unreachable: one sentence saying how to start it
        try:
            conn.execute(
                "SELECT set_config('lock_timeout', %s, false)", (f"{max(1, round(wait_s * 1000))}",)
            )
            try:
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.lock_key,))
            except psycopg.errors.LockNotAvailable:
                conn.close()
                return False
            conn.execute("SELECT set_config('lock_timeout', '0', false)")
            row = conn.execute(_TAKE, (self.ns, self.role, self._owner)).fetchone()
        except BaseException:
            conn.close()
            raise
        assert row is not None  # noqa: S101 - RETURNING of an upsert returns its row
        self._conn, self.epoch = conn, int(row[0])
        log.info("ownership taken role=%s namespace=%s epoch=%d", self.role, self.ns, self.epoch)
        return True

    def fence(self, engine: Engine) -> Engine:
        """Make every session of ``engine`` write as this owner (``freshloop.fence``), at the
        epoch current when the session is checked out; returns ``engine``."""
        event.listen(engine, "checkout", self._on_checkout)
        return engine

    def _on_checkout(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        token = self.token
        if record.info.get(_INFO_KEY) == token:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT set_config('freshloop.fence', %s, false)", (token,))
            dbapi_conn.commit()  # a setting made in a rolled-back transaction would be undone
        except psycopg.Error as exc:  # a dead session: the pool tries a fresh one
            raise DisconnectionError(str(exc)) from exc
        record.info[_INFO_KEY] = token

    def check(self) -> None:
        """Re-check the lock session and the epoch: ``FencedError`` once another copy owns the
        role; a lost session is taken back if nobody took the role meanwhile. While Postgres
        is unreachable this raises its connection error: call again after a backoff."""
        if self._conn is not None:
            try:
                row = self._conn.execute(_CURRENT, (self.ns, self.role)).fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._conn.close()
                self._conn = None
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                log.warning(
                    "lock_session_lost role=%s namespace=%s epoch=%d error=%s: taking it back "
                    "unless another copy took over",
                    self.role,
                    self.ns,
                    self.epoch,
                    first,
                )
            else:
                now = None if row is None else int(row[0])
                if now != self.epoch:
                    why = f"the current epoch is {now}, this copy holds {self.epoch}"
                    raise self._fenced(why)
                return
        self._take_back()

    def _take_back(self) -> None:
        conn = self._connect()
        try:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (self.lock_key,)
            ).fetchone()
            if got is None or not got[0]:
                why = "its lock session was lost and another session holds the lock now"
                raise self._fenced(why)
            row = conn.execute(_TAKE_BACK, (self._owner, self.ns, self.role, self.epoch)).fetchone()
            if row is None:
                why = f"its lock session was lost and epoch {self.epoch} is gone"
                raise self._fenced(why)
        except BaseException:
            conn.close()
            raise
        self._conn, old, self.epoch = conn, self.epoch, int(row[0])
        log.warning(
            "lock_session_taken_back role=%s namespace=%s epoch=%d->%d: no other copy took over",
            self.role,
            self.ns,
            old,
            self.epoch,
        )

    def _fenced(self, why: str) -> FencedError:
        msg = (
            f"the {self.role} of namespace {self.ns!r} is no longer the owner ({why}): another "
            "copy took over, so this one writes nothing more and stops (run one per namespace)"
        )
        return FencedError(msg)

    def release(self) -> None:
        """Close the lock session (the lock goes with it); the epoch stays for the next owner."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
