"""How much WAL the connector's replication slot holds back, and when that is an alarm.

While Debezium is down (or slow), Postgres keeps every WAL segment from the slot's
``restart_lsn`` on. ``max_slot_wal_keep_size`` bounds that (the local stack sets it from
``wal_keep_size``); past the bound Postgres invalidates the slot (``wal_status = 'lost'``) and
the connector needs a new snapshot. Health and metrics show the retained bytes and raise an
alarm above ``wal_warning_bytes`` or once the slot is ``unreserved`` (about to be lost) or lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, text

from freshloop.core.settings import Settings

__all__ = ["SlotState", "read_slot", "slot_alarm"]


@dataclass(frozen=True)
class SlotState:
    """The connector's slot as Postgres reports it (``exists`` False: no connector yet)."""

    slot_name: str
    exists: bool
    active: bool = False
    wal_status: str | None = None  # reserved | extended | unreserved | lost
    retained_bytes: int = 0  # pg_current_wal_lsn() - restart_lsn
    safe_wal_size: int | None = None  # bytes left before the slot is lost (None: unbounded)
    max_slot_wal_keep_size: str = "-1"
    alarm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slot_alarm(
    slot: str, retained_bytes: int, wal_status: str | None, warning_bytes: int
) -> str | None:
    """The alarm sentence for a slot's state, or None when all is well (pure).

    >>> slot_alarm("s", 10, "reserved", 100) is None
    True
    >>> slot_alarm("s", 0, "lost", 100)[:28]
    'replication slot s was lost:'
    """
    if wal_status == "lost":
        return (
            f"replication slot {slot} was lost: WAL it needed passed max_slot_wal_keep_size "
            "and was removed; the connector needs a new snapshot"
        )
    if wal_status == "unreserved":
        return (
            f"replication slot {slot} is about to be lost: it holds more WAL than "
            "max_slot_wal_keep_size allows; restart the connector now"
        )
    if retained_bytes >= warning_bytes:
        return (
            f"replication slot {slot} retains {retained_bytes} bytes of WAL (warning at "
            f"{warning_bytes}): the connector is down or behind"
        )
    return None


def read_slot(conn: Connection, settings: Settings) -> SlotState:
    """The connector slot's state, with its alarm (read-only; any role may run it)."""
    name = settings.slot_name
    keep = str(conn.execute(text("SHOW max_slot_wal_keep_size")).scalar_one())
    row = conn.execute(
        text(
            "SELECT active, wal_status, safe_wal_size, "
            "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0) AS retained "
            "FROM pg_replication_slots WHERE slot_name = :name"
        ),
        {"name": name},
    ).first()
    if row is None:
        return SlotState(name, exists=False, max_slot_wal_keep_size=keep)
    retained = int(row.retained)
    return SlotState(
        name,
        exists=True,
        active=bool(row.active),
        wal_status=row.wal_status,
        retained_bytes=retained,
        safe_wal_size=None if row.safe_wal_size is None else int(row.safe_wal_size),
        max_slot_wal_keep_size=keep,
        alarm=slot_alarm(name, retained, row.wal_status, settings.wal_warning_bytes),
    )
