"""Overlapped batches: the pipeline plans batch B while Redis writes batch A.

B's row states are read before A's write runs, so rows A writes are taken from A's plan
(``row_after``) instead. Planning that way must give exactly what planning after A's write gives,
whatever the histories (inserts, updates, deletes, duplicates, outcomes before and after their
payments, merchant changes); and ``row_after`` must be the row the store really leaves.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.decode import ChangeEvent
from feature_pipelines.planner import Planner, RowState, RowWrite, row_after
from feature_pipelines.reference import MemoryStore
from tests.feature_pipelines.fixtures import iso
from tests.feature_pipelines.harness import NS, Log, Pipeline, decode_all

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _change(log: Log, rng: random.Random, table: str, rows: dict[int, dict], pk: int, row: dict):
    """Insert (when absent), update or delete ``rows[pk]``; ``row`` is the new image."""
    kind = rng.choice("cud") if pk in rows else "c"
    key = {"payment_id": pk}
    if kind == "d":
        log.emit(table, "d", key, rows.pop(pk), None)
        return
    log.emit(table, kind, key, rows.get(pk), row)
    rows[pk] = row


def _history(rng: random.Random, n: int) -> Log:
    """Payments and their outcomes on a few rows, with re-deliveries mixed in."""
    log = Log()
    payments: dict[int, dict] = {}
    outcomes: dict[int, dict] = {}
    for _ in range(n):
        if log.items and rng.random() < 0.1:  # at-least-once: an earlier change comes again
            log.items.append(rng.choice(log.items))
            continue
        pk = rng.randint(1, 5)
        if rng.random() < 0.65:
            row = {
                "payment_id": pk,
                "customer_id": rng.randint(1, 3),
                "merchant_id": rng.choice([1, 2, None]),
                "amount": f"{rng.randint(0, 999) / 100:.2f}",
                "status": rng.choice(["approved", "declined"]),
                "created_at": iso(T - timedelta(minutes=rng.randint(0, 90))),
            }
            _change(log, rng, "payments", payments, pk, row)
        else:
            out = {
                "payment_id": pk,
                "is_fraud": rng.random() < 0.5,
                "reported_at": iso(T - timedelta(hours=rng.randint(0, 30))),
            }
            _change(log, rng, "payment_outcomes", outcomes, pk, out)
    return log


def _overlapped(events: list[ChangeEvent], size: int) -> tuple[MemoryStore, list[tuple]]:
    """Drive the store the way the consumer does with a held batch; returns the store and, for
    each written row, (row_after's answer, the row the store holds right after the write)."""
    store, planner = MemoryStore(), Planner(SAMPLE_FEATURES, NS)
    batches = [events[i : i + size] for i in range(0, len(events), size)]
    checked: list[tuple] = []
    held = None  # (plan, states it was planned from)
    for chunk in batches:
        keys = planner.keys_needed(chunk)
        if held is None:
            states: dict[str, RowState] = store.read(keys)
        else:
            plan, held_states = held
            states = store.read([k for k in keys if k not in plan.rows])  # before A's write
            for k in keys:
                if k in plan.rows:
                    states[k] = row_after(held_states.get(k), plan.rows[k])
            assert store.apply(plan)
            checked += [
                (row_after(held_states.get(k), w), dict(store.hashes[k]))
                for k, w in plan.rows.items()
            ]
        held = (planner.plan(chunk, states), states)
    if held is not None:
        assert store.apply(held[0])
    return store, checked


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40), size=st.integers(1, 6))
def test_planning_over_a_held_batch_equals_planning_after_its_write(
    seed: int, n: int, size: int
) -> None:
    log = _history(random.Random(seed), n)
    events = decode_all(SAMPLE_FEATURES, log.items)
    got, checked = _overlapped(events, size)
    want = Pipeline(SAMPLE_FEATURES)
    want.feed(log.items, batch=size)
    assert got.hashes == want.store.hashes
    for predicted, stored in checked:
        assert predicted == stored


def test_row_after_applies_sets_and_deletes_and_bumps_the_version() -> None:
    before = {"pos": "1:9", "ver": "4", "j:payment_outcomes:1": "{}", "p:merchant_id": "2"}
    write = RowWrite("4", {"pos": "1:17", "p:merchant_id": "3"}, {"j:payment_outcomes:1"})
    assert row_after(before, write) == {"pos": "1:17", "ver": "5", "p:merchant_id": "3"}
    assert row_after(None, RowWrite(None, {"pos": "0:8"})) == {"pos": "0:8", "ver": "1"}
    assert before["ver"] == "4"  # the state read is left as it was
