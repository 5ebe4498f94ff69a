"""Fingerprints, plan diffing, snapshot visibility, and the split between backfill and stream
(pure: no stack)."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from feature_pipelines.backfill import _groups, _increments
from feature_pipelines.catalog import CUSTOMER, MERCHANT, SAMPLE_FEATURES, FeatureSet
from feature_pipelines.decode import ChangeEvent
from feature_pipelines.plan import (
    SHADOW,
    definition,
    feature_from,
    fingerprint,
    interim_set,
    plan_changes,
    shadow_name,
)
from feature_pipelines.planner import Planner, row_after
from feature_pipelines.registry import Snapshot, hidden_from_json, hidden_to_json
from feature_pipelines.spec import Condition, Feature, Lookup
from online_learning.features import SCORING_FEATURES

H1 = timedelta(hours=1)


def _pay(name: str, agg: str, window: timedelta | None = H1, value: str | None = None, **kw: Any):
    return Feature(name, CUSTOMER, "payments", "created_at", agg, value, window=window, **kw)


# ---- fingerprints ----------------------------------------------------------------------------
def test_definitions_round_trip_for_every_shipped_feature() -> None:
    for f in SCORING_FEATURES:
        assert feature_from(definition(f)) == f
        assert fingerprint(feature_from(definition(f))) == fingerprint(f)


def test_fingerprint_is_pinned() -> None:
    # a fingerprint is stored in the registry: changing how it is computed re-plans every
    # feature of every namespace, so its value is pinned
    assert fingerprint(SAMPLE_FEATURES.by_name("payment_count_1h")) == "cbc00a0fa9a8e308"


def test_fingerprint_ignores_name_description_and_filter_order() -> None:
    a = _pay("a", "count", where=(Condition("status", "declined"), Condition("channel", "web")))
    b = replace(
        a,
        name="b",
        description="other words",
        where=(Condition("channel", "web"), Condition("status", "declined")),
    )
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(
    "change",
    [
        {"window": timedelta(hours=2)},
        {"window": None},
        {"where": (Condition("status", "approved"),)},
        {"where": (Condition("status", 1),)},
        {"event_time": "updated_at"},
        {"agg": "max", "value": "amount"},
        {"entity": MERCHANT},
        {"table": "refunds"},
    ],
)
def test_fingerprint_changes_with_what_is_computed(change: dict[str, Any]) -> None:
    a = _pay("a", "count", where=(Condition("status", True),))
    assert fingerprint(a) != fingerprint(replace(a, **change))


def test_fingerprint_tells_a_boolean_filter_from_an_integer_one() -> None:
    assert fingerprint(_pay("a", "count", where=(Condition("flag", True),))) != fingerprint(
        _pay("a", "count", where=(Condition("flag", 1),))
    )


# ---- plans -------------------------------------------------------------------------------------
def test_plan_lists_added_changed_removed_and_backfills() -> None:
    applied = SAMPLE_FEATURES
    changed = replace(SAMPLE_FEATURES.by_name("payment_count_10m"), window=timedelta(minutes=20))
    added = _pay("amount_max_1h", "max", value="amount")
    declared = FeatureSet.of(
        [
            *(
                changed if f.name == changed.name else f
                for f in SAMPLE_FEATURES
                if f.name != "merchant_payment_count_1h"
            ),
            added,
        ]
    )
    plan = plan_changes(applied, declared)
    assert [c.name for c in plan.of("add")] == ["amount_max_1h"]
    assert [(c.name, c.reason) for c in plan.of("change")] == [("payment_count_10m", "window_s")]
    assert [c.name for c in plan.of("remove")] == ["merchant_payment_count_1h"]
    assert plan.backfilled == ("payment_count_10m", "amount_max_1h")
    assert not plan.blocked
    assert len(plan.unchanged) == len(SAMPLE_FEATURES) - 2
    as_dict = plan.to_dict()
    assert as_dict["backfill"] == ["payment_count_10m", "amount_max_1h"]
    assert plan.lines()[-1] == "1 to add, 1 to change, 1 to remove, 11 unchanged"
    assert plan_changes(declared, declared).empty


def test_plan_sees_a_mean_whose_storage_moves() -> None:
    # without the sum it read its total from, the mean keeps a total of its own: refilled
    declared = FeatureSet.of(
        replace(f, total_from=None, count_from=None)
        for f in SAMPLE_FEATURES
        if f.name != "amount_sum_24h"
    )
    plan = plan_changes(SAMPLE_FEATURES, declared)
    assert [(c.name, c.action) for c in plan.changes] == [
        ("amount_mean_24h", "change"),
        ("amount_sum_24h", "remove"),
    ]
    assert plan.of("change")[0].reason == "storage"
    # computed beside the applied set, where the sum still is, it would share its fields: not
    # what it has after the switch, so apply refuses it (two steps do it)
    assert [c.name for c in plan.blocked] == ["amount_mean_24h"]
    assert "two steps" in (plan.blocked[0].blocked or "")


def test_the_interim_set_keeps_the_applied_one_and_shadows_changed_features() -> None:
    changed = replace(SAMPLE_FEATURES.by_name("payment_count_10m"), window=timedelta(minutes=20))
    added = _pay("amount_max_1h", "max", value="amount")
    declared = FeatureSet.of(
        [
            *(changed if f.name == changed.name else f for f in SAMPLE_FEATURES),
            added,
        ]
    )
    declared = FeatureSet.of(f for f in declared if f.name != "merchant_payment_count_1h")
    plan = plan_changes(SAMPLE_FEATURES, declared)
    interim = interim_set(SAMPLE_FEATURES, plan)
    # what reads see until the switch is still computed, the removed feature too
    assert [f for f in interim if f.name in {g.name for g in SAMPLE_FEATURES}] == list(
        SAMPLE_FEATURES
    )
    assert interim.by_name("payment_count_10m") == SAMPLE_FEATURES.by_name("payment_count_10m")
    assert interim.by_name(shadow_name("payment_count_10m")) == replace(
        changed, name="payment_count_10m__next"
    )
    assert interim.by_name("amount_max_1h") == added
    assert len(interim) == len(SAMPLE_FEATURES) + 2


def test_a_shadow_name_in_use_blocks_the_change() -> None:
    taken = _pay("payment_count_10m__next", "count")
    applied = FeatureSet.of([*SAMPLE_FEATURES, taken])
    changed = replace(SAMPLE_FEATURES.by_name("payment_count_10m"), window=timedelta(minutes=20))
    declared = FeatureSet.of([changed if f.name == changed.name else f for f in applied])
    plan = plan_changes(applied, declared)
    assert [c.name for c in plan.blocked] == ["payment_count_10m"]
    assert "taken" in (plan.blocked[0].blocked or "")


def test_plan_blocks_lookups_and_unread_tables() -> None:
    lookup = Feature(
        "merchant_refund_count_7d",
        MERCHANT,
        "payment_outcomes",
        "reported_at",
        "count",
        window=timedelta(days=7),
        lookup=Lookup("payment_id", "payments", "payment_id", "merchant_id"),
    )
    other = Feature("refund_count_1h", CUSTOMER, "refunds", "created_at", "count", window=H1)
    plan = plan_changes(SAMPLE_FEATURES, FeatureSet.of([*SAMPLE_FEATURES, lookup, other]))
    assert [c.name for c in plan.blocked] == ["merchant_refund_count_7d", "refund_count_1h"]
    assert "lookup" in (plan.blocked[0].blocked or "")
    assert "refunds" in (plan.blocked[1].blocked or "")


def test_an_empty_applied_set_adds_everything() -> None:
    # nothing applied: the pipelines build every feature from their start, nothing to backfill
    # and nothing blocked (a lookup too)
    plan = plan_changes((), SAMPLE_FEATURES)
    assert len(plan.of("add")) == len(SAMPLE_FEATURES)
    assert plan.backfilled == () and plan.blocked == ()


# ---- snapshots ---------------------------------------------------------------------------------
def test_snapshot_visibility() -> None:
    s = Snapshot.parse("100:105:101,103")
    assert [x for x in range(95, 110) if s.visible(x)] == [95, 96, 97, 98, 99, 100, 102, 104]
    assert Snapshot.parse(s.text()) == s
    assert Snapshot.parse("7:7:").visible(6) and not Snapshot.parse("7:7:").visible(7)


def test_snapshot_takes_32_bit_ids_into_its_epoch() -> None:
    epoch = 3 << 32
    s = Snapshot.parse(f"{epoch + 10}:{epoch + 20}:{epoch + 15}")
    assert s.visible(9) and not s.visible(15) and s.visible(16) and not s.visible(25)
    # just past a wraparound: the snapshot's epoch began a moment ago
    w = Snapshot.parse(f"{epoch - 5}:{epoch + 5}:")
    assert w.visible((1 << 32) - 6) and w.visible(2) and not w.visible(6)


def test_hidden_round_trip() -> None:
    hidden = ((Snapshot.parse("1:4:2"), frozenset({"a", "b"})),)
    assert hidden_from_json(hidden_to_json(hidden)) == hidden
    assert hidden_from_json(None) == ()


# ---- the split: backfill at snapshot S + stream of what S does not see == stream of all ------
BASE = FeatureSet.of(
    [
        _pay("n_1h", "count"),
        _pay("amount_lifetime", "sum", None, "amount"),
        _pay("n_lifetime", "count", None),  # removed
    ]
)
NEW = (
    _pay("declined_amount_1h", "sum", value="amount", where=(Condition("status", "declined"),)),
    _pay("amount_max_1h", "max", value="amount"),
    _pay("merchants_lifetime", "distinct", None, "merchant_id"),
    # changed in place: the same name as a base feature, another window
    _pay("n_1h", "count", window=timedelta(hours=2)),
)
TARGET = FeatureSet.of(
    [*(f for f in BASE if f.name not in {"n_1h", "n_lifetime"}), *NEW],
)
T0_US = 1_796_000_000_000_000


def _history(seed: int) -> list[ChangeEvent]:
    """Random inserts, updates (status, amount, customer, time) and deletes of a few rows,
    one transaction each, txids in commit order."""
    rng = random.Random(seed)
    rows: dict[int, dict[str, Any]] = {}
    events: list[ChangeEvent] = []
    lsn = 1000
    for i in range(300):
        lsn += 10
        pk = rng.randrange(25)
        before = rows.get(pk)
        if before is None:
            op = "c"
        else:
            op = "d" if rng.random() < 0.15 else "u"
        after: dict[str, Any] | None = None
        if op != "d":
            after_row: dict[str, Any] = dict(before) if before else {"payment_id": pk}
            after_row.update(
                {
                    "customer_id": rng.randrange(4)
                    if before is None or rng.random() < 0.2
                    else before["customer_id"],
                    "merchant_id": rng.randrange(6),
                    "amount": f"{rng.randrange(1, 5000) / 100:.2f}",
                    "status": rng.choice(["approved", "declined", "refunded"]),
                    "created_at": T0_US + rng.randrange(0, 1800) * 1_000_000,
                }
            )
            rows[pk] = after = after_row
        else:
            del rows[pk]
        events.append(
            ChangeEvent(
                "payments",
                op,
                str(pk),
                before,
                after,
                (lsn - 1, lsn),
                1_796_000_000_000 + i,
                partition=pk % 2,
                txid=100 + i,
            )
        )
    return events


def _stream(
    planner: Planner,
    events: list[ChangeEvent],
    states: dict[str, dict[str, str]],
    fields: dict[str, dict[str, int]],
) -> None:
    for start in range(0, len(events), 7):
        batch = events[start : start + 7]
        plan = planner.plan(
            batch, {k: states[k] for k in planner.keys_needed(batch) if k in states}
        )
        for key, write in plan.rows.items():
            states[key] = row_after(states.get(key), write)
        for ekey, incr in plan.increments.items():
            for name, amount in incr.items():
                fields[ekey][name] = fields[ekey].get(name, 0) + amount


def _swapped(fields: dict[str, int], changed: set[str], removed: set[str]) -> dict[str, int]:
    """An entity's fields after the swap of an apply (``lua/swap_fields.lua``)."""
    out: dict[str, int] = {}
    for field, value in fields.items():
        name = re.match(r"[a-z0-9_]+", field)
        head = name.group(0) if name else ""
        if head in changed or head in removed:
            continue
        if head.endswith(SHADOW) and head.removesuffix(SHADOW) in changed:
            out[head.removesuffix(SHADOW) + field[len(head) :]] = value
        else:
            out.setdefault(field, value)
    return out


def _clean(fields: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {k: {f: v for f, v in by.items() if v} for k, by in fields.items() if any(by.values())}


@pytest.mark.parametrize("seed", range(12))
def test_backfill_plus_stream_equals_the_stream_from_the_start(seed: int) -> None:
    events = _history(seed)
    rng = random.Random(seed + 1000)
    n = len(events)
    # S sees the first `cut` transactions but some in flight among them (they commit later:
    # their events come after the cut, as the WAL orders them); the pipelines switch at
    # `switch`, before or after the cut (a lagging pipeline), never after an event S misses
    cut = rng.randrange(n // 4, 3 * n // 4)
    late = set(rng.sample(range(cut - 20, cut), 3))
    seen = [i for i in range(n) if i < cut and i not in late]
    order = seen + sorted(late) + list(range(cut, n))
    # a transaction S does not see cannot have changed a row before one S sees: keep only the
    # orders where each row's changes stay in their order
    by_row: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_row[events[i].key].append(i)
    if any(ids != sorted(ids) for ids in by_row.values()):
        order = list(range(n))
        late = set()
        seen = list(range(cut))
    stream_events = [events[i] for i in order]
    snapshot = Snapshot(100 + min([*late, cut]), 100 + cut, frozenset(100 + i for i in late))
    assert all(snapshot.visible(events[i].txid or 0) for i in seen)
    switch = rng.randrange(0, len(seen) + 1)

    # the stream of every event with the target set from the start
    expected: dict[str, dict[str, int]] = defaultdict(dict)
    _stream(Planner(TARGET, "ns"), stream_events, {}, expected)

    # the base set until the switch, then the interim set (the changed feature under its
    # shadow name) with the backfilled features hidden for what S sees, plus the backfill of
    # the rows S sees; at the swap the shadow fields replace the old ones and the removed
    # feature's fields go, then the target runs (still hiding what S sees)
    plan = plan_changes(BASE, TARGET)
    assert [c.name for c in plan.of("change")] == ["n_1h"]
    assert [c.name for c in plan.of("remove")] == ["n_lifetime"]
    interim = interim_set(BASE, plan)
    stored = frozenset(shadow_name(n) if n == "n_1h" else n for n in plan.backfilled)
    swap = rng.randrange(switch, n + 1)
    states: dict[str, dict[str, str]] = {}
    got: dict[str, dict[str, int]] = defaultdict(dict)
    base = Planner(BASE, "ns")
    _stream(base, stream_events[:switch], states, got)
    middle = Planner(interim, "ns")
    middle.marks = base.marks
    middle.hidden = ((snapshot, stored),)
    _stream(middle, stream_events[switch:swap], states, got)
    rows: dict[str, dict[str, Any]] = {}
    for i in seen:
        ev = events[i]
        if ev.after is None:
            rows.pop(ev.key, None)
        else:
            rows[ev.key] = ev.after
    feats = [interim.by_name(name) for name in sorted(stored)]
    columns = sorted({c for f in feats for c in f.columns()} | {"payment_id"})
    for ekey, incr in _increments(
        "ns", columns, [tuple(r[c] for c in columns) for r in rows.values()], _groups(feats), {}
    ).items():
        for name, amount in incr.items():
            got[ekey][name] = got[ekey].get(name, 0) + amount
    for ekey, fields in list(got.items()):
        got[ekey] = _swapped(fields, {"n_1h"}, {"n_lifetime"})
    final = Planner(TARGET, "ns")
    final.marks = middle.marks
    final.hidden = ((snapshot, frozenset(plan.backfilled)),)
    _stream(final, stream_events[swap:], states, got)
    assert _clean(got) == _clean(expected)
