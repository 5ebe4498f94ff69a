"""Event time of a simulated run: wall seconds since its start mapped to ``created_at`` and kin.

A run at ``scale`` X writes X event seconds per wall second (``--time-scale 3600``: one wall
second is one hour of ``created_at`` and ``reported_at``). The span is placed so that it ends at
the wall clock's now when the run ends (``ending_at``): nothing written is in the future, so any
component that still compares event time with the wall clock sees the newest rows as fresh,
and the oldest rows are as old as they would be after a real month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["EventClock"]


@dataclass(frozen=True)
class EventClock:
    """``start`` is the event time at wall second 0; ``scale`` event seconds per wall second."""

    start: datetime
    scale: float

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            msg = f"the event clock needs an aware start, got {self.start.isoformat()}"
            raise ValueError(msg)
        if self.scale <= 0:
            msg = f"time scale must be positive event seconds per wall second, got {self.scale}"
            raise ValueError(msg)

    @classmethod
    def ending_at(cls, end: datetime, scale: float, wall_span_s: float) -> EventClock:
        """The clock whose event time reaches ``end`` after ``wall_span_s`` wall seconds."""
        return cls(end - timedelta(seconds=wall_span_s * scale), scale)

    def event_seconds(self, wall_s: float) -> float:
        """Event seconds since ``start`` after ``wall_s`` wall seconds.

        >>> from datetime import UTC
        >>> EventClock(datetime(2024, 1, 1, tzinfo=UTC), 3600).event_seconds(2.5)
        9000.0
        """
        return wall_s * self.scale

    def wall_seconds(self, event_s: float) -> float:
        """Wall seconds after the start when event second ``event_s`` is due."""
        return event_s / self.scale

    def at(self, event_s: float) -> datetime:
        """The timestamp written for event second ``event_s`` (an operation's ``at``)."""
        return self.start + timedelta(seconds=event_s)
