"""Fingerprints of feature definitions and the plan between two feature sets (pure).

A feature's fingerprint is a hash of its normalized definition: entity and key column, source
table, event-time column, aggregation kind, value column, filter (sorted), window, lookup and
scale; not its name or description. ``freshloop features plan`` compares the definitions in
code with the set last applied to a namespace (``registry``): a name that is new is *added*,
a name whose fingerprint (or storage: the fields a mean shares with a sum or a count) differs
is *changed*, a name no longer declared is *removed*. Added and changed features need a
backfill (``backfill``); a removed one only has its fields cleaned.

Example:
    >>> from feature_pipelines.catalog import SAMPLE_FEATURES
    >>> f = SAMPLE_FEATURES.by_name("payment_count_1h")
    >>> feature_from(definition(f)) == f
    True
    >>> len(fingerprint(f))
    16
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

import orjson

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import DefinitionError
from feature_pipelines.spec import Condition, Entity, Feature, Lookup

__all__ = [
    "SHADOW",
    "Change",
    "FeaturePlan",
    "definition",
    "feature_from",
    "fingerprint",
    "interim_set",
    "plan_changes",
    "shadow_name",
]

# The suffix of the name a changed feature is computed and backfilled under until the switch
# (``interim_set``), while its old definition keeps serving under its own name.
SHADOW = "__next"

Action = Literal["add", "change", "remove"]


def definition(feature: Feature) -> dict[str, Any]:
    """The normalized definition of ``feature`` as plain JSON values (what is fingerprinted,
    with its name and storage, which are not)."""
    return {
        "name": feature.name,
        "entity": {"name": feature.entity.name, "key": feature.entity.key},
        "table": feature.table,
        "event_time": feature.event_time,
        "agg": feature.agg,
        "value": feature.value,
        "where": [[c.column, c.equals] for c in _sorted_where(feature.where)],
        "window_s": feature.window_seconds if feature.window is not None else None,
        "lookup": None
        if feature.lookup is None
        else {
            "column": feature.lookup.column,
            "table": feature.lookup.table,
            "key": feature.lookup.key,
            "provides": feature.lookup.provides,
        },
        "scale": feature.scale,
        "storage": {"total_from": feature.total_from, "count_from": feature.count_from},
    }


def _sorted_where(where: Iterable[Condition]) -> list[Condition]:
    # a filter is a conjunction: its order means nothing; the value's type does (True != 1)
    return sorted(where, key=lambda c: (c.column, type(c.equals).__name__, str(c.equals)))


def feature_from(data: Mapping[str, Any]) -> Feature:
    """The ``Feature`` a ``definition`` describes (as the registry stores it)."""
    lookup = data.get("lookup")
    storage = data.get("storage") or {}
    window = data.get("window_s")
    return Feature(
        str(data["name"]),
        Entity(data["entity"]["name"], data["entity"]["key"]),
        data["table"],
        data["event_time"],
        data["agg"],
        data.get("value"),
        tuple(Condition(column, equals) for column, equals in data.get("where", ())),
        None if window is None else timedelta(seconds=int(window)),
        None if lookup is None else Lookup(**lookup),
        int(data.get("scale", 2)),
        total_from=storage.get("total_from"),
        count_from=storage.get("count_from"),
    )


def fingerprint(feature: Feature) -> str:
    """A stable hash (16 hex digits) of what ``feature`` computes: equal definitions, equal
    fingerprints, whatever their name, description or the order of their filter."""
    body = definition(feature)
    for ignored in ("name", "storage"):
        body.pop(ignored)
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Change:
    """One feature that differs between the applied set and the declared one."""

    name: str
    action: Action
    fingerprint: str | None  # declared (None: removed)
    applied: str | None  # applied (None: added)
    reason: str = ""  # why a changed feature differs
    blocked: str | None = None  # why ``apply`` cannot do it (then nothing is applied)
    # filled from the database: added or changed, unless nothing was ever applied (then the
    # pipelines build every feature from their start)
    backfill: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "fingerprint": self.fingerprint,
            "applied": self.applied,
            "backfill": self.backfill,
            "reason": self.reason,
            "blocked": self.blocked,
        }


@dataclass(frozen=True)
class FeaturePlan:
    """What ``apply`` would do to make the applied set the declared one."""

    changes: tuple[Change, ...]
    unchanged: tuple[str, ...] = ()
    target: FeatureSet | None = field(default=None, compare=False)

    @property
    def empty(self) -> bool:
        return not self.changes

    def of(self, action: Action) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action == action)

    @property
    def backfilled(self) -> tuple[str, ...]:
        """Names of the features ``apply`` fills from the database, in plan order."""
        return tuple(c.name for c in self.changes if c.backfill)

    @property
    def blocked(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.blocked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [c.to_dict() for c in self.of("add")],
            "changed": [c.to_dict() for c in self.of("change")],
            "removed": [c.to_dict() for c in self.of("remove")],
            "unchanged": list(self.unchanged),
            "backfill": list(self.backfilled),
            "blocked": [c.to_dict() for c in self.blocked],
        }

    def lines(self) -> list[str]:
        """The plan for a terminal, one line per change."""
        marks = {"add": "+", "change": "~", "remove": "-"}
        out = []
        for c in self.changes:
            what = {
                "add": f"added ({c.fingerprint}){', backfill' if c.backfill else ''}",
                "change": f"changed ({c.applied} -> {c.fingerprint}: {c.reason}), backfill",
                "remove": f"removed ({c.applied}), fields cleaned",
            }[c.action]
            line = f"{marks[c.action]} {c.name}: {what}"
            if c.blocked:
                line += f" -- BLOCKED: {c.blocked}"
            out.append(line)
        out.append(
            f"{len(self.of('add'))} to add, {len(self.of('change'))} to change, "
            f"{len(self.of('remove'))} to remove, {len(self.unchanged)} unchanged"
        )
        return out


def _reason(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = [k for k in new if k != "name" and old.get(k) != new.get(k)]
    return ", ".join(keys) or "definition"


def plan_changes(applied: Iterable[Feature], declared: FeatureSet) -> FeaturePlan:
    """The changes from the ``applied`` definitions to the ``declared`` set, in the declared
    order (removals last). Against nothing applied, every feature is added without a
    backfill (the pipelines build them all from their start). A feature ``apply`` cannot
    backfill is marked ``blocked``: one reading through a lookup (its join state lives in the
    stream's row states), or one over a table the applied set does not read (the running
    pipelines do not consume its topic)."""
    before = {f.name: f for f in applied}
    tables = {f.table for f in before.values()} | {
        f.lookup.table for f in before.values() if f.lookup
    }
    fresh = not before
    changes: list[Change] = []
    unchanged: list[str] = []
    for f in declared:
        new = definition(f)
        old_f = before.get(f.name)
        if old_f is not None and definition(old_f) == new:
            unchanged.append(f.name)
            continue
        blocked = None
        if fresh:
            pass
        elif f.lookup is not None:
            blocked = (
                "it reads its entity through a lookup, which apply cannot backfill: restart "
                "the pipelines with it and run 'freshloop features rebuild'"
            )
        elif f.table not in tables:
            blocked = (
                f"it reads table {f.table}, which the running pipelines do not consume: "
                "restart them with it and run 'freshloop features rebuild'"
            )
        if old_f is None:
            changes.append(
                Change(f.name, "add", fingerprint(f), None, blocked=blocked, backfill=not fresh)
            )
        else:
            changes.append(
                Change(
                    f.name,
                    "change",
                    fingerprint(f),
                    fingerprint(old_f),
                    _reason(definition(old_f), new),
                    blocked,
                )
            )
    declared_names = {f.name for f in declared}
    for name, old_f in before.items():
        if name not in declared_names:
            changes.append(Change(name, "remove", None, fingerprint(old_f), backfill=False))
    plan = FeaturePlan(tuple(changes), tuple(unchanged), declared)
    if fresh or not plan.backfilled:
        return plan
    conflicts = _interim_conflicts(tuple(before.values()), plan)
    if not conflicts:
        return plan
    return replace(
        plan,
        changes=tuple(
            replace(c, blocked=conflicts[c.name]) if c.name in conflicts and not c.blocked else c
            for c in changes
        ),
    )


def shadow_name(name: str) -> str:
    """The name ``name`` is computed and backfilled under while a change of it is applied."""
    return f"{name}{SHADOW}"


def _interim_extra(plan: FeaturePlan) -> list[tuple[str, Feature]]:
    """(name, definition as the interim set computes it) per feature the plan backfills."""
    if plan.target is None:
        msg = "a plan without its target set has no interim set"
        raise ValueError(msg)
    names = {c.name for c in plan.changes if c.action == "change"}
    added = {c.name for c in plan.changes if c.action == "add"}

    def ref(name: str | None) -> str | None:
        return shadow_name(name) if name in names else name

    return [
        (
            f.name,
            replace(
                f,
                name=shadow_name(f.name) if f.name in names else f.name,
                total_from=ref(f.total_from),
                count_from=ref(f.count_from),
            ),
        )
        for f in plan.target
        if f.name in names or f.name in added
    ]


def interim_set(applied: Iterable[Feature], plan: FeaturePlan) -> FeatureSet:
    """What the pipelines compute while ``apply`` backfills: the applied set as it is (what
    reads see until the switch, removed features too), the added features, and each changed
    one under its ``shadow_name`` (new fields; at the switch they replace the old ones)."""
    return FeatureSet.of([*applied, *(f for _name, f in _interim_extra(plan))])


def _interim_conflicts(applied: tuple[Feature, ...], plan: FeaturePlan) -> dict[str, str]:
    """Features ``apply`` cannot compute beside the applied set with the storage they will
    have after it (a mean that would share the fields of a feature this plan removes or
    changes), with why."""
    why = (
        "beside the applied set it would be stored otherwise than after the switch (a mean "
        "sharing the fields of a feature this plan changes or removes): apply it in two steps"
    )
    taken = {f.name for f in applied}
    out = {
        name: f"the name {f.name} is taken"
        for name, f in _interim_extra(plan)
        if f.name != name and f.name in taken
    }
    if out:
        return out
    try:
        interim = interim_set(applied, plan)
    except DefinitionError as exc:
        return {c.name: f"{why} ({exc})" for c in plan.changes if c.backfill}
    return {name: why for name, f in _interim_extra(plan) if interim.by_name(f.name) != f}
