"""Online/offline skew, the pure part: logged vectors against point-in-time ones (no I/O).

A logged vector (``training_examples.features``, what the scorer read from Redis) is compared
input by input with the vector the row history gives at the payment's own commit position,
read at its ``predicted_at`` (``online_learning.point_in_time``). An input is

- ``exact``: equal there;
- ``tolerated``: not equal there, but the logged inputs of its entity (the customer's, or the
  merchant's: the scorer reads them apart) all equal the history's at another commit position
  within the tolerance (``FRESHLOOP_SKEW_TOLERANCE_S``) of the payment's commit: the batch that
  applied the insert held a change of the same entity committed just after it, or missed one
  committed just before (docs/training-sets.md: every difference measured was of this kind);
- ``beyond``: neither; this is the skew the audit exists to find, and it should be 0.

Inputs the payment alone gives (amount, channel, hour) have no entity: they are exact or beyond.
Values are equal when they agree to ``REL_TOL`` (JSON round trips, sums in another order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "REL_TOL",
    "Difference",
    "ExampleVerdict",
    "InputSkew",
    "SkewSummary",
    "Verdict",
    "judge_example",
    "summarize",
]

REL_TOL = 1e-9

Verdict = Literal["exact", "tolerated", "beyond"]


def _same(a: float, b: float) -> bool:
    """
    >>> _same(0.1 + 0.2, 0.3), _same(1.0, 1.001)
    (True, False)
    """
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


@dataclass(frozen=True)
class ExampleVerdict:
    """One example's inputs judged, and the inputs logged or recomputed alone (not compared:
    scored under another feature service)."""

    payment_id: int
    inputs: dict[str, Verdict]
    logged: dict[str, float]
    recomputed: dict[str, float]
    unmatched: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        seen = set(self.inputs.values())
        return "beyond" if "beyond" in seen else "tolerated" if "tolerated" in seen else "exact"


def judge_example(
    payment_id: int,
    logged: Mapping[str, Any],
    own: Mapping[str, float],
    neighbours: Iterable[Mapping[str, float]],
    groups: Mapping[str, str],
) -> ExampleVerdict:
    """Judge every input both vectors hold (rules in the module docstring).

    ``own``: the history's vector at the payment's commit position; ``neighbours``: its vectors
    at the other positions within the tolerance; ``groups``: input -> entity ('' for inputs
    of the payment alone).

    >>> judge_example(1, {"a": 1.0, "c": 2.0, "m": 5.0}, {"a": 1.0, "c": 3.0, "m": 4.0},
    ...               [{"a": 1.0, "c": 2.0, "m": 6.0}], {"c": "customer", "m": "merchant"}).inputs
    {'a': 'exact', 'c': 'tolerated', 'm': 'beyond'}
    """
    shared = [k for k in own if k in logged]
    values = {k: float(logged[k]) for k in shared}
    differ = [k for k in shared if not _same(values[k], own[k])]
    inputs: dict[str, Verdict] = {k: "exact" for k in shared}
    if differ:
        by_group: dict[str, list[str]] = {}
        for k in shared:
            by_group.setdefault(groups.get(k, ""), []).append(k)
        open_groups = {groups.get(k, "") for k in differ} - {""}
        matched: set[str] = set()
        for vector in neighbours:
            for g in open_groups - matched:
                if all(k in vector and _same(values[k], vector[k]) for k in by_group[g]):
                    matched.add(g)
            if matched == open_groups:
                break
        for k in differ:
            inputs[k] = "tolerated" if groups.get(k, "") in matched else "beyond"
    unmatched = tuple(sorted(set(own) ^ {k for k in logged if isinstance(logged[k], int | float)}))
    return ExampleVerdict(
        payment_id, inputs, values, {k: own[k] for k in shared}, unmatched=unmatched
    )


@dataclass(frozen=True)
class Difference:
    """One input of one payment that differs beyond the tolerance."""

    payment_id: int
    logged: float
    recomputed: float

    @property
    def size(self) -> float:
        return abs(self.logged - self.recomputed)


@dataclass
class InputSkew:
    """One input over the sample: how many compared, exact, tolerated and beyond, and the
    largest differences beyond the tolerance."""

    name: str
    compared: int = 0
    exact: int = 0
    tolerated: int = 0
    beyond: int = 0
    largest: list[Difference] = field(default_factory=list)

    @property
    def beyond_share(self) -> float:
        return self.beyond / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "exact": self.exact,
            "tolerated": self.tolerated,
            "beyond": self.beyond,
            "beyond_share": round(self.beyond_share, 6),
            "largest": [
                {
                    "payment_id": d.payment_id,
                    "logged": d.logged,
                    "recomputed": d.recomputed,
                    "difference": d.size,
                }
                for d in self.largest
            ],
        }


@dataclass
class SkewSummary:
    """The audit of a sample: per input and per example, with its status.

    ``status``: ``no_data`` when nothing could be compared, ``warning`` when an input's share
    beyond the tolerance exceeds ``max_share``, else ``ok``.
    """

    tolerance_s: float
    max_share: float
    sampled: int = 0
    no_history: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, InputSkew] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    window: tuple[str | None, str | None] = (None, None)

    @property
    def compared(self) -> int:
        return sum(self.examples.values())

    @property
    def beyond_share(self) -> float:
        """The largest share of any input beyond the tolerance."""
        return max((i.beyond_share for i in self.inputs.values()), default=0.0)

    @property
    def skewed_inputs(self) -> list[str]:
        return sorted(n for n, i in self.inputs.items() if i.beyond_share > self.max_share)

    @property
    def status(self) -> str:
        if self.compared == 0:
            return "no_data"
        return "warning" if self.skewed_inputs else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "tolerance_s": self.tolerance_s,
            "max_share": self.max_share,
            "from": self.window[0],
            "to": self.window[1],
            "sampled": self.sampled,
            "compared": self.compared,
            "no_history": self.no_history,
            "examples": dict(self.examples),
            "beyond_share": round(self.beyond_share, 6),
            "skewed_inputs": self.skewed_inputs,
            "unmatched_inputs": dict(sorted(self.unmatched.items())),
            "inputs": {n: self.inputs[n].to_dict() for n in sorted(self.inputs)},
        }


def summarize(
    verdicts: Sequence[ExampleVerdict],
    *,
    tolerance_s: float,
    max_share: float = 0.0,
    sampled: int | None = None,
    largest: int = 5,
) -> SkewSummary:
    """Per input and per example counts of ``verdicts``, with the ``largest`` differences.

    >>> v = judge_example(7, {"a": 1.0}, {"a": 3.0}, [], {})
    >>> s = summarize([v], tolerance_s=1.0)
    >>> s.status, s.inputs["a"].beyond, s.inputs["a"].largest[0].size
    ('warning', 1, 2.0)
    """
    out = SkewSummary(tolerance_s, max_share, sampled=len(verdicts) if sampled is None else sampled)
    out.no_history = out.sampled - len(verdicts)
    for v in verdicts:
        out.examples[v.verdict] = out.examples.get(v.verdict, 0) + 1
        for name in v.unmatched:
            out.unmatched[name] = out.unmatched.get(name, 0) + 1
        for name, verdict in v.inputs.items():
            s = out.inputs.setdefault(name, InputSkew(name))
            s.compared += 1
            if verdict == "exact":
                s.exact += 1
            elif verdict == "tolerated":
                s.tolerated += 1
            else:
                s.beyond += 1
                s.largest.append(Difference(v.payment_id, v.logged[name], v.recomputed[name]))
    for s in out.inputs.values():
        s.largest = sorted(s.largest, key=lambda d: (-d.size, d.payment_id))[:largest]
    return out
