"""The learner's event-time watermark, taken from the change stream, never from the wall clock.

Each input partition (``"topic:partition"``) reports the event times of its messages (a
prediction's ``created_at``, an outcome's ``reported_at``) and whether it is at its end. The
watermark is the smallest of the newest event times of the partitions that still have messages
to deliver, so a partition drained slowly holds it back: a learner catching up after downtime
does not pass a payment's horizon while that payment's outcome is still in the backlog. A
partition at its end does not hold the watermark back (an idle topic would stop it forever);
with every partition at its end the watermark is the newest event time seen. It never goes back.

Pure: the shell calls ``observe`` per message and ``at_end`` per end-of-partition event. A
replay of the same topics moves it through the same event times, whatever the wall clock does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["EventClock"]


class EventClock:
    """Per-partition newest event times, idle flags, and the monotonic watermark over them."""

    def __init__(self) -> None:
        self._newest: dict[str, datetime] = {}
        self._idle: dict[str, bool] = {}
        self._watermark: datetime | None = None

    def expect(self, partition: str) -> None:
        """A partition the learner reads: it holds the watermark back until it says where it is."""
        self._idle.setdefault(partition, False)

    def observe(self, partition: str, at: datetime) -> None:
        """A message of ``partition`` with event time ``at`` (the partition is not at its end)."""
        self._idle[partition] = False
        newest = self._newest.get(partition)
        if newest is None or at > newest:
            self._newest[partition] = at

    def at_end(self, partition: str) -> None:
        """``partition`` has delivered everything it holds for now."""
        self._idle[partition] = True

    @property
    def watermark(self) -> datetime | None:
        """Every busy partition's newest time, at the least; None before any event time."""
        busy = [p for p, idle in self._idle.items() if not idle]
        if any(p not in self._newest for p in busy):
            return self._watermark  # a partition that has said nothing yet holds it back
        candidates = [self._newest[p] for p in busy] if busy else list(self._newest.values())
        if candidates:
            low = min(candidates) if busy else max(candidates)
            if self._watermark is None or low > self._watermark:
                self._watermark = low
        return self._watermark

    def snapshot(self) -> dict[str, Any]:
        """The newest times and the watermark (idle flags are re-learned from the topics)."""
        wm = self.watermark
        return {
            "partitions": sorted(self._idle),
            "newest": {p: t.isoformat() for p, t in self._newest.items()},
            "watermark": None if wm is None else wm.isoformat(),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> EventClock:
        clock = cls()
        clock._newest = {str(p): datetime.fromisoformat(t) for p, t in state["newest"].items()}
        # Every partition is busy until it says it is at its end again.
        clock._idle = dict.fromkeys([*state["partitions"], *clock._newest], False)
        wm = state["watermark"]
        clock._watermark = None if wm is None else datetime.fromisoformat(wm)
        return clock
