"""The pure side of ``make month``: which curve a sample value belongs to, when a curve can be
judged, and the ``flat`` verdict (growth over the last days within a tolerance).

A curve is judged only after it had time to settle: state bounded by a window can only stop
growing once that window (plus the label horizon, for what waits on labels) has passed. Before
that, growth is expected and says nothing; a run too short for a curve says so (``flat`` None)
instead of guessing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DAY_S",
    "Verdict",
    "curves_of",
    "expired_fields",
    "key_class",
    "settle_days",
    "verdict",
]

DAY_S = 86_400


def key_class(namespace: str, key: str) -> str:
    """The class of a Redis key: the part after the namespace, up to the entity or row key.

    >>> key_class("m1", "m1:e:{customer:42}")
    'e:{customer'
    >>> key_class("m1", "m1:r:{payment_outcomes:7}")
    'r:{payment_outcomes'
    >>> key_class("m1", "m1:pred:{123}")
    'pred'
    >>> key_class("m1", "m1:expiry:{m1-features}:3")
    'expiry'

    On a Redis Cluster (``cluster_keys.KeyLayout``) the slot's tag comes first; the class is
    the same as on one Redis:

    >>> key_class("m1", "m1:e:{m1/s12}:customer:42")
    'e:{customer'
    >>> key_class("m1", "m1:r:{m1/p3}:payments:7")
    'r:{payments'
    """
    rest = key[len(namespace) + 1 :] if key.startswith(f"{namespace}:") else key
    head, _, tail = rest.partition(":")
    if head in ("e", "r") and tail.startswith(f"{{{namespace}/"):
        return f"{head}:{{{tail.split(':', 2)[1]}"
    if head in ("e", "r") and tail.startswith("{"):
        return f"{head}:{tail.split(':', 1)[0]}"
    return head


def expired_fields(
    fields: Sequence[str], windows: Mapping[str, tuple[int, int]], t_s: float, slack_s: float
) -> int:
    """Bucket fields (``feature@bucket[#value]``) whose bucket left its window more than
    ``slack_s`` before event second ``t_s``: state an event-time sweeper should have dropped.

    ``windows`` maps a feature name to (window seconds, bucket seconds); fields of other
    features (lifetime, bookkeeping such as ``_commit_ms``) are not buckets and never count.

    >>> expired_fields(["n_1h@10", "n_1h@100", "n_lifetime", "_swept"], {"n_1h": (3600, 60)},
    ...                t_s=100 * 60, slack_s=0)
    1
    """
    stale = 0
    for name in fields:
        feature, at, rest = name.partition("@")
        if not at or feature not in windows:
            continue
        window, width = windows[feature]
        try:
            bucket = int(rest.split("#", 1)[0])
        except ValueError:
            continue
        if (bucket + 1) * width <= t_s - window - width - slack_s:
            stale += 1
    return stale


def settle_days(seconds: float) -> float:
    """Days after which state bounded by ``seconds`` (window + horizon ...) stops growing."""
    return seconds / DAY_S


@dataclass(frozen=True)
class Verdict:
    """``flat``: growth from ``from_day`` to ``to_day`` at most the tolerance; None: not judged."""

    flat: bool | None
    growth: float | None
    from_day: float | None
    to_day: float | None
    settles_after_days: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "flat": self.flat,
            "growth": None if self.growth is None else round(self.growth, 4),
            "from_day": self.from_day,
            "to_day": self.to_day,
            "settles_after_days": round(self.settles_after_days, 3),
            "reason": self.reason,
        }


def verdict(
    points: Sequence[tuple[float, float | None]],
    settles_after_days: float,
    *,
    last_days: float = 10.0,
    tolerance: float = 0.05,
    slack: float = 0.0,
    peak: bool = False,
) -> Verdict:
    """Judge a curve of (day, value) points: growth from the first points at or after
    max(settle, last day - ``last_days``) to the last ones (medians of up to three each),
    relative to the first.

    Growth from zero is infinite unless the curve stays at zero. ``slack``: an absolute rise
    that counts as flat whatever its share (a value that moves in pages or segments).
    ``peak``: the curve is a maximum over entities (the largest hash), which jumps between
    whichever entity is largest at each sample: flat when the last ``last_days`` set no new
    high, their peak within the tolerance of the peak of the settled days before them.

    >>> verdict([(d, 1000.0 + 300.0 * (d % 2)) for d in range(31)], 8, peak=True).flat
    True
    >>> verdict([(d, 1000.0 + 40.0 * d) for d in range(31)], 8, peak=True).flat
    False

    >>> verdict([(d, 1000.0 + d) for d in range(31)], 8).flat
    True
    >>> verdict([(d, 100.0 * d) for d in range(31)], 8).flat
    False
    >>> verdict([(d, 1.0) for d in range(4)], 8).flat is None
    True
    """
    known = sorted((day, value) for day, value in points if value is not None)
    if not known:
        return Verdict(None, None, None, None, settles_after_days, "no samples")
    if peak:
        return _peak(known, settles_after_days, last_days, tolerance, slack)
    end_day = known[-1][0]
    start_at = max(settles_after_days, end_day - last_days)
    window = [(d, v) for d, v in known if d >= start_at - 1e-9]
    if len(window) < 2 or window[-1][0] - window[0][0] < 1.0 - 1e-9:
        reason = (
            f"cannot be judged: settles after {settles_after_days:.1f} days, "
            f"the run has {end_day:.1f}"
        )
        return Verdict(None, None, None, None, settles_after_days, reason)
    # each end is the median of up to three daily samples: a value sampled once a day at
    # whatever phase of a checkpoint or prune cycle moves by that cycle, not by history
    ends = max(1, min(3, len(window) // 3))
    d0, d1 = window[0][0], window[-1][0]
    v0 = statistics.median(v for _, v in window[:ends])
    v1 = statistics.median(v for _, v in window[-ends:])
    if v0 == 0:
        growth = 0.0 if v1 == 0 else math.inf
    else:
        growth = (v1 - v0) / abs(v0)
    flat = growth <= tolerance or v1 - v0 <= slack
    reason = f"{'flat' if flat else 'grows'}: {_pct(growth)} from day {d0:g} to day {d1:g}"
    return Verdict(flat, growth, d0, d1, settles_after_days, reason)


def _pct(growth: float) -> str:
    return "from zero" if math.isinf(growth) else f"{growth * 100:+.1f}%"


def curves_of(
    samples: Sequence[Mapping[str, Any]], zero_prefixes: tuple[str, ...] = ("redis.keys.",)
) -> dict[str, list[tuple[float, float | None]]]:
    """Each sample's ``values`` (name -> number) as curves of (day, value), names sorted.

    A name missing from a sample is a None point, or 0 for counts (``zero_prefixes``: a key
    class with no key in that sample).
    """
    names = sorted({name for s in samples for name in s["values"]})
    out: dict[str, list[tuple[float, float | None]]] = {}
    for name in names:
        missing = 0.0 if name.startswith(zero_prefixes) else None
        out[name] = [(float(s["day"]), _num(s["values"].get(name, missing))) for s in samples]
    return out


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _peak(
    known: Sequence[tuple[float, float]],
    settles_after_days: float,
    last_days: float,
    tolerance: float,
    slack: float,
) -> Verdict:
    """``verdict(peak=True)``: no new high in the last days (see there)."""
    end_day = known[-1][0]
    # the last ``last_days`` against the settled days before them; a run too short for both
    # compares the second half of its settled days with the first
    start_at = max(end_day - last_days, settles_after_days + (end_day - settles_after_days) / 2)
    before = [v for d, v in known if settles_after_days - 1e-9 <= d < start_at - 1e-9]
    last = [(d, v) for d, v in known if d >= start_at - 1e-9]
    if len(before) < 3 or not last:  # a peak of one or two samples says little
        reason = (
            f"cannot be judged: settles after {settles_after_days:.1f} days, "
            f"the run has {end_day:.1f}"
        )
        return Verdict(None, None, None, None, settles_after_days, reason)
    v0, v1 = max(before), max(v for _, v in last)
    growth = 0.0 if v0 == v1 else (math.inf if v0 == 0 else (v1 - v0) / abs(v0))
    flat = growth <= tolerance or v1 - v0 <= slack
    reason = (
        f"{'flat' if flat else 'grows'}: peak {_pct(growth)} over the peak before day {start_at:g}"
    )
    return Verdict(flat, growth, last[0][0], last[-1][0], settles_after_days, reason)
