"""The pipeline's cache of row states it wrote: what it answers without a read, what it guesses,
and when it forgets."""

from __future__ import annotations

import random

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.planner import Planner, RowWrite, Watermarks, WritePlan, row_after
from feature_pipelines.reference import MemoryStore
from feature_pipelines.row_cache import RowCache
from tests.feature_pipelines.harness import decode_all
from tests.feature_pipelines.test_overlap import _history


def _plan(**rows: RowWrite) -> WritePlan:
    return WritePlan(rows=dict(rows))


def test_remembered_rows_are_answered_and_the_rest_are_read() -> None:
    cache = RowCache(10)
    cache.remember({"a": {"pos": "1:1", "ver": "1"}}, _plan(a=RowWrite("1", {"pos": "1:2"})))
    known, unknown = cache.split(["a", "b"])
    assert known == {"a": {"pos": "1:2", "ver": "2"}}
    assert unknown == ["b"]


def test_an_unknown_inserted_row_is_taken_as_new_but_a_remembered_one_is_not() -> None:
    cache = RowCache(10)
    cache.remember({}, _plan(a=RowWrite(None, {"pos": "1:1"})))
    known, unknown = cache.split(["a", "b", "c"], inserted={"a", "b"})
    assert known == {"a": {"pos": "1:1", "ver": "1"}}
    assert unknown == ["c"]  # b: an insert never seen, not read
    assert cache.guessed == 1


def test_a_refused_write_forgets_and_reads_inserts_for_a_while() -> None:
    cache = RowCache(10, read_after_refusal=3)
    cache.remember({}, _plan(a=RowWrite(None, {"pos": "1:1"})))
    cache.refused()
    assert len(cache) == 0
    assert cache.split(["a", "b", "c"], inserted={"b", "c"}) == ({}, ["a", "b", "c"])
    assert cache.split(["d"], inserted={"d"}) == ({}, ["d"])  # the third insert read
    assert cache.split(["e", "f"], inserted={"e"}) == ({}, ["f"])  # guessing again


def test_the_oldest_written_rows_go_first_past_the_capacity() -> None:
    cache = RowCache(3)
    for key in "abcd":
        cache.remember({}, _plan(**{key: RowWrite(None, {"pos": "1:1"})}))
    cache.remember(  # a written again: the newest now
        {"b": {"pos": "1:1", "ver": "1"}}, _plan(b=RowWrite("1", {"pos": "1:2"}))
    )
    cache.remember({}, _plan(e=RowWrite(None, {"pos": "1:1"})))
    known, unknown = cache.split(list("abcde"))
    assert sorted(known) == ["b", "d", "e"]
    assert unknown == ["a", "c"]


def test_rows_whose_state_expired_leave_the_cache_as_they_leave_redis() -> None:
    """A row's ``exp`` is the watermark at its last write plus its TTL: once the watermark
    reaches it, the write script may have deleted its state, so the cache does not answer
    for it (split reads it) and forgets it (remember)."""
    cache = RowCache(10)
    for key, exp in (("a", 100), ("b", 200), ("c", 300)):
        cache.remember({}, _plan(**{key: RowWrite(None, {"pos": "1:1", "exp": str(exp)})}))
    marks = Watermarks({0: (150, 0)})
    known, unknown = cache.split(list("abc"), marks=marks)
    assert sorted(known) == ["b", "c"] and unknown == ["a"]
    cache.remember(
        {}, _plan(d=RowWrite(None, {"pos": "1:1", "exp": "400"})), Watermarks({0: (250, 0)})
    )
    assert len(cache) == 2  # b (200) went; c and d stay
    assert sorted(cache.split(list("bcd"))[0]) == ["c", "d"]


def test_capacity_zero_reads_everything() -> None:
    cache = RowCache(0)
    cache.remember({}, _plan(a=RowWrite(None, {"pos": "1:1"})))
    assert cache.split(["a", "b"], inserted={"a", "b"}) == ({}, ["a", "b"])
    assert cache.reads == 2 and cache.hits == 0 and cache.guessed == 0


def test_clear_forgets_every_row() -> None:
    cache = RowCache(10)
    cache.remember({}, _plan(a=RowWrite(None, {"pos": "1:1"})))
    cache.clear()
    assert cache.split(["a"]) == ({}, ["a"])


def test_planning_from_the_cache_writes_what_planning_from_reads_writes() -> None:
    """A history with updates, deletes, duplicates and outcomes, planned batch by batch once
    from full reads and once from the cache (reading only what it does not know): every batch
    plans the same writes, and no write is refused."""
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(11), 80).items)
    events += events[:25]  # delivered again: duplicates the cache must recognise
    planner = Planner(SAMPLE_FEATURES, "c")
    by_reads, by_cache = MemoryStore(), MemoryStore()
    cache = RowCache(1000)
    for start in range(0, len(events), 6):
        batch = events[start : start + 6]
        keys, inserted = planner.rows_needed(batch)
        full = by_reads.read(keys)
        expected = planner.plan(batch, full)
        assert by_reads.apply(expected)
        known, unknown = cache.split(keys, inserted)
        states = {**known, **by_cache.read(unknown)}
        plan = planner.plan(batch, states)
        assert by_cache.apply(plan), "a cached row was not as Redis holds it"
        cache.remember(states, plan)
        assert plan.increments == expected.increments
        assert plan.rows == expected.rows
        assert plan.duplicates == expected.duplicates
    assert cache.hits > 0 and cache.guessed > 0
    assert by_cache.hashes == by_reads.hashes


def test_row_after_is_what_the_cache_keeps() -> None:
    cache = RowCache(10)
    before = {"pos": "1:1", "ver": "3", "merchant_id": "7"}
    write = RowWrite("3", {"pos": "2:2"}, {"merchant_id"})
    cache.remember({"a": before}, _plan(a=write))
    assert cache.split(["a"])[0]["a"] == row_after(before, write)


def test_a_wrong_guess_is_refused_by_the_store_and_then_read() -> None:
    """A restarted consumer (empty cache) given inserts already applied: the guess that they
    are new is refused by the version check, and after ``refused`` they are read and found to
    be duplicates."""
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(4), 40).items)
    planner = Planner(SAMPLE_FEATURES, "c")
    store = MemoryStore()
    assert store.apply(planner.plan(events, store.read(planner.keys_needed(events))))
    inserts = [e for e in events if e.op == "c"]
    assert inserts
    cache = RowCache(1000)
    keys, inserted = planner.rows_needed(inserts)
    known, unknown = cache.split(keys, inserted)
    guessed = planner.plan(inserts, {**known, **store.read(unknown)})
    assert guessed.applied > 0  # planned as new rows...
    assert not store.apply(guessed)  # ...which the store refuses
    cache.refused()
    known, unknown = cache.split(keys, inserted)
    again = planner.plan(inserts, {**known, **store.read(unknown)})
    assert again.applied == 0 and again.duplicates == len(inserts)
