"""What a batch cannot apply, and which change events are behind it (pure).

Every feature field in Redis is an integer that ``HINCRBY`` must be able to add to: a signed
64-bit one. A user feature summing an unconstrained ``numeric`` column can leave that range, and
a field or key changed outside the pipeline can hold what no arithmetic reads. The batch script
checks all of it before its first write and, when something cannot be applied, writes nothing
and answers a ``Rejection``; the shell then finds the events behind it here (``culprits``),
dead-letters them with the reason, and writes the rest of the batch. What one event alone
already cannot carry (an amount past int64 units) is found before planning (``oversized``).

>>> fits(2**63 - 1), fits(2**63), fits(-(2**63)), fits(-(2**63) - 1)
(True, False, True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.decode import ChangeEvent
from feature_pipelines.windows import compile_group

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Rejection",
    "Trace",
    "culprits",
    "fits",
    "oversized",
    "parse_rejection",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_RANGE = "[-2^63, 2^63 - 1]"

# (Redis key, field) -> (index of the event in its batch, what it adds), in planning order;
# field "" lists every event that writes the key at all (``Planner.plan(trace=...)``)
Trace = dict[tuple[str, str], list[tuple[int, int]]]


def fits(units: int) -> bool:
    """Whether ``units`` is a signed 64-bit integer, what a Redis hash field can count."""
    return INT64_MIN <= units <= INT64_MAX


@dataclass(frozen=True)
class Rejection:
    """Why the batch script wrote nothing. ``kind``: ``overflow`` (``field`` of ``key`` holds
    ``found`` and the batch adds ``detail``: past int64), ``value`` (``field`` holds ``found``,
    which is no integer) or ``type`` (``key`` is a Redis ``found``, not a ``detail``)."""

    kind: str
    key: str
    field: str
    found: str
    detail: str
    # the planner's name of ``key`` when the writer keeps it under another (a row state in the
    # Redis Cluster layout: ``cluster_write``); what the culprits are looked up by
    planned: str = ""

    def describe(self) -> str:
        """One sentence: what came, what was expected, what to do."""
        if self.kind == "overflow":
            return (
                f"field {self.field} of {self.key} holds {self.found or '0'} and the batch adds "
                f"{self.detail}: the result leaves the int64 range {_RANGE} of a feature field"
            )
        if self.kind == "value":
            return (
                f"field {self.field} of {self.key} holds {self.found[:40]!r}, not an integer: "
                "it was changed outside the pipeline; rebuild the namespace (README, Rebuilds)"
            )
        return (
            f"Redis key {self.key} is a {self.found}, not a {self.detail}: it was written outside "
            "the pipeline; delete it, or rebuild the namespace (README, Rebuilds)"
        )


def parse_rejection(reply: Sequence[Any]) -> Rejection:
    """The batch script's refusal (five strings) as a ``Rejection``."""
    kind, key, field, found, detail = (
        item.decode() if isinstance(item, bytes) else str(item) for item in reply
    )
    return Rejection(kind, key, field, found, detail)


def oversized(features: FeatureSet, event: ChangeEvent) -> str | None:
    """Why ``event`` alone cannot be applied (its new row adds more than int64 units to a
    feature field), or None. Only amounts past int64 are looked at further, so this costs one
    pass over what decoding parsed. A retracted old image is the batch script's to check (it
    is retracted only when the row was counted)."""
    parsed = event.after_parsed
    if not parsed or (max(parsed.values()) <= INT64_MAX and min(parsed.values()) >= INT64_MIN):
        return None
    after = event.after or {}
    memo = dict(parsed)
    for feature in features.for_table(event.table):
        for name, amount in compile_group((feature,))(after, memo):
            if not fits(amount):
                return (
                    f"{event.table}.{feature.value}={after.get(feature.value or '')} is "
                    f"{amount} units of 10^-{feature.scale} for feature {feature.name} "
                    f"(field {name}): past the int64 range {_RANGE} a feature field holds; "
                    "fix the value at the source (or declare the feature with a smaller scale) "
                    "and send the event again from the dead-letter topic"
                )
    return None


def culprits(trace: Trace, rejection: Rejection) -> dict[int, str]:
    """The events (index in the batch -> reason) to dead-letter so that the batch ``trace``
    describes no longer meets ``rejection``; empty if no event of the batch writes there.

    Overflow: going through the field's contributions in batch order from the value it holds,
    an event is a culprit when its own contribution would carry the running value past int64;
    the others stay, and the running value never leaves the range. A field that is no integer,
    or a key of another type: every event writing it.

    >>> r = Rejection("overflow", "e", "total", "9223372036854775800", "16")
    >>> sorted(culprits({("e", "total"): [(0, 3), (1, 8), (2, 4), (3, -5)]}, r))
    [1]
    """
    key = rejection.planned or rejection.key
    if rejection.kind == "type":
        writers = dict.fromkeys(i for i, _n in trace.get((key, ""), ()))
        return {i: rejection.describe() for i in writers}
    entries = trace.get((key, rejection.field), ())
    if rejection.kind != "overflow":
        return {i: rejection.describe() for i, _n in entries}
    by_event: dict[int, int] = {}
    for i, amount in entries:
        by_event[i] = by_event.get(i, 0) + amount
    running = int(rejection.found or "0")
    out: dict[int, str] = {}
    for i, amount in by_event.items():
        if fits(running + amount):
            running += amount
        else:
            out[i] = (
                f"adds {amount} to field {rejection.field} of {rejection.key}, which would then "
                f"hold {running + amount}: past the int64 range {_RANGE} of a feature field"
            )
    return out
