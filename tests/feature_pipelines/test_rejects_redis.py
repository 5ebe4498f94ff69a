"""The batch script's checks before its first write, against the real Redis: the int64 check
in Lua is exact at both bounds, and a refused batch writes nothing at all."""

from __future__ import annotations

import doctest
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import rejects
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_write import ClusterBatchWriter, ShardRejectedError
from feature_pipelines.exceptions import BatchRejectedError
from feature_pipelines.planner import RowWrite, WritePlan, entity_key, row_key
from feature_pipelines.rejects import INT64_MAX, INT64_MIN, Rejection, fits
from feature_pipelines.store_write import _INT64
from freshloop.core.settings import Settings
from tests.feature_pipelines.cluster_fixtures import LayoutRedis
from tests.feature_pipelines.test_batch_whole import LEDGER
from tests.feature_pipelines.test_expiry_redis import LayoutWriter
from tests.redis_layout import client_for, drop_keys

pytestmark = pytest.mark.integration

_CHECK = _INT64 + "return int64_check(ARGV[3] == '1' and ARGV[1] or false, ARGV[2]) or 'ok'"
NEAR = st.one_of(
    st.integers(INT64_MAX - 40, INT64_MAX + 40),
    st.integers(INT64_MIN - 40, INT64_MIN + 40),
    st.integers(-(2**53) - 5, -(2**53) + 5),
    st.integers(2**53 - 5, 2**53 + 5),
    st.integers(-(10**20), 10**20),
    st.integers(-1000, 1000),
)


# On one Redis the batch script checks every key before its first write, the entities' too. On a
# Redis Cluster an entity is checked in its shard's step, after the control step committed the
# batch (docs/redis-cluster.md, What a refusal means): a refusal there leaves the batch's row
# states and offsets written, so "nothing written at all" holds on one Redis only.
ENTITY_AFTER_COMMIT = (
    "an entity is checked after the cluster's control step committed the batch"
    " (docs/redis-cluster.md, What a refusal means)"
)


@pytest.fixture(scope="module")
def client(stack_settings: Settings) -> Iterator[Any]:
    conn = client_for(stack_settings)
    yield conn
    conn.close()


@pytest.fixture
def writer(client: Any, stack_settings: Settings) -> Iterator[LayoutWriter]:
    tag = f"rj{uuid.uuid4().hex[:8]}"
    writer = LayoutWriter(stack_settings, client, LEDGER, tag, partitions=1)
    yield writer
    if writer.cluster:
        drop_keys(client, f"{tag}:*")
        return
    single = writer.single
    client.delete(  # every key the tests write (a SCAN of the shared Redis takes seconds)
        single.offsets_key,
        single.marks_key,
        single.index_key(0),
        single.entity_index_key(0),
        entity_key(tag, "account", 3),
        *(row_key(tag, "ledger", str(pk)) for pk in (1, 2, 3)),
    )


def _check(client: Any, old: str | None, inc: str) -> str:
    answer = client.eval(_CHECK, 0, old or "", inc, "1" if old is not None else "0")
    return answer.decode() if isinstance(answer, bytes) else str(answer)


def test_the_module_examples() -> None:
    assert doctest.testmod(rejects).failed == 0


@settings(max_examples=400)
@given(old=st.one_of(st.none(), NEAR), inc=NEAR)
def test_the_lua_int64_check_is_exact(client: Any, old: int | None, inc: int) -> None:
    found = _check(client, None if old is None else str(old), str(inc))
    if old is not None and not fits(old):
        assert found == "value"
    elif fits(inc) and fits((old or 0) + inc):
        assert found == "ok"
    else:
        assert found == "overflow"


def test_the_lua_int64_check_at_the_bounds(client: Any) -> None:
    cases = {
        (str(INT64_MAX - 1), "1"): "ok",
        (str(INT64_MAX), "1"): "overflow",
        (str(INT64_MAX), "0"): "ok",
        (str(INT64_MIN + 1), "-1"): "ok",
        (str(INT64_MIN), "-1"): "overflow",
        (str(INT64_MIN), str(INT64_MAX)): "ok",  # -1
        (str(INT64_MAX), str(INT64_MIN)): "ok",
        (None, str(INT64_MIN)): "ok",
        (None, str(INT64_MAX + 1)): "overflow",
        (None, str(INT64_MIN - 1)): "overflow",
        (None, "1" + "0" * 30): "overflow",
        ("9999999999999999999", "-1"): "value",  # 19 digits, past int64
        ("1.5", "1"): "value",
        ("abc", "1"): "value",
        ("007", "1"): "value",  # HINCRBY reads no leading zeros
        ("-0", "1"): "value",
        ("", "1"): "value",
        ("0", "-1"): "ok",
    }
    assert {case: _check(client, *case) for case in cases} == cases


def _plan(writer: LayoutWriter | str, increments: dict[str, int], pk: str = "1") -> WritePlan:
    ns = writer if isinstance(writer, str) else writer.keys.ns
    ekey = entity_key(ns, "account", 3)
    return WritePlan(
        increments={ekey: increments},
        rows={row_key(ns, "ledger", pk): RowWrite(None, {"pos": "1:2"}, set(), 0, 10)},
        commit_ms={ekey: 1},
        entity_of={ekey: "account"},
        marks={0: (5, 5)},
    )


def _written(writer: LayoutWriter, plan: WritePlan) -> list[str]:
    """Every key ``plan``'s write may create, by its name in the layout (and on a cluster the
    partition's journal, which the control step writes with the rows)."""
    names = [writer.row_name(key, 0) for key in plan.rows]
    names += [writer.entity_name(key) for key in plan.increments]
    names += [writer.offsets_key(0), writer.index_key(0)]
    if writer.cluster:
        names.append(writer.keys.journal(0))
    return names


def _refused(writer: LayoutWriter, plan: WritePlan) -> Rejection:
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(plan, 0, {"ledger:0": 9})
    rejection = caught.value.rejection
    assert isinstance(rejection, Rejection)
    assert writer.offsets() == {} and writer.watermarks() == {}  # nothing written at all
    for key in plan.rows:
        assert not writer.client.exists(writer.row_name(key, 0))
    assert not writer.client.exists(writer.index_key(0))
    return rejection


@pytest.mark.single_redis(ENTITY_AFTER_COMMIT)
def test_a_field_carried_to_int64_max_lands_and_one_more_unit_is_refused(
    writer: LayoutWriter,
) -> None:
    ekey = entity_key(writer.keys.ns, "account", 3)
    writer.client.hset(ekey, mapping={"total": str(INT64_MAX - 5), "entries": str(INT64_MIN)})
    assert writer.apply(_plan(writer, {"total": 5, "entries": 1}, "1"), 0, {"ledger:0": 1})
    assert writer.client.hget(ekey, "total") == str(INT64_MAX).encode()
    assert writer.client.hget(ekey, "entries") == str(INT64_MIN + 1).encode()
    before = writer.client.hgetall(ekey)
    offsets = writer.offsets()
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(_plan(writer, {"entries": -1, "total": 1}, "2"), 0, {"ledger:0": 2})
    assert caught.value.rejection == Rejection("overflow", ekey, "total", str(INT64_MAX), "1")
    assert "int64" in str(caught.value)
    assert writer.client.hgetall(ekey) == before  # the other field is not written either
    assert writer.offsets() == offsets
    assert not writer.client.exists(row_key(writer.keys.ns, "ledger", "2"))
    # at the lower bound too
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(_plan(writer, {"entries": -2}, "3"), 0, {"ledger:0": 3})
    assert caught.value.rejection.field == "entries"  # type: ignore[attr-defined]


@pytest.mark.single_redis(ENTITY_AFTER_COMMIT)
def test_a_batch_past_int64_on_a_new_field_is_refused(writer: LayoutWriter) -> None:
    rejection = _refused(writer, _plan(writer, {"total": INT64_MAX + 1}))
    assert (rejection.kind, rejection.found, rejection.detail) == ("overflow", "", str(2**63))


@pytest.mark.single_redis(ENTITY_AFTER_COMMIT)
def test_a_field_that_is_no_integer_is_refused(writer: LayoutWriter) -> None:
    ekey = entity_key(writer.keys.ns, "account", 3)
    writer.client.hset(ekey, "total", "12abc")
    rejection = _refused(writer, _plan(writer, {"total": 1}))
    assert (rejection.kind, rejection.field, rejection.found) == ("value", "total", "12abc")
    assert writer.client.hgetall(ekey) == {b"total": b"12abc"}


@pytest.mark.parametrize(
    "which",
    [pytest.param("entity", marks=pytest.mark.single_redis(ENTITY_AFTER_COMMIT)), "row"]
    + ["offsets", "index"],
)
def test_a_key_of_another_type_is_refused(writer: LayoutWriter, which: str) -> None:
    """A key of a row state, the positions or the expiry index of another type refuses the
    batch before its first write, in either layout (on a cluster: in the control step, so no
    entity step runs either)."""
    plan = _plan(writer, {"total": 1})
    key = {
        "entity": writer.entity_name(next(iter(plan.increments))),
        "row": writer.row_name(next(iter(plan.rows)), 0),
        "offsets": writer.offsets_key(0),
        "index": writer.index_key(0),
    }[which]
    writer.client.set(key, "not a hash")
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(plan, 0, {"ledger:0": 9})
    wanted = "zset" if which == "index" else "hash"
    # a row state kept under another name than the planner's (a cluster's) is named back
    planned = next(iter(plan.rows)) if which == "row" and writer.cluster else ""
    assert caught.value.rejection == Rejection("type", key, "", "string", wanted, planned)
    assert writer.client.get(key) == b"not a hash"
    for other in _written(writer, plan):
        if other != key:
            assert not writer.client.exists(other)


@pytest.mark.parametrize("redis_layout", ["cluster"], indirect=True)
def test_an_entity_refused_on_a_cluster_is_refused_in_its_shard_and_stays_in_the_journal(
    redis_layout: LayoutRedis,
) -> None:
    """The cluster's side of the refusals above (docs/redis-cluster.md, What a refusal means):
    an increment leaving int64 is found by the entity's shard step, after the control step
    committed the batch. The entity is left as it was, the writer stops naming the key and
    field, and the entry stays in the journal: a replay refuses it again, writing nothing."""
    client, ns = redis_layout.client, redis_layout.ns
    keys = KeyLayout(ns, "g", "cluster", redis_layout.settings.redis_cluster_shards)
    writer = ClusterBatchWriter(client, LEDGER, keys)
    name, _shard = writer.entity_name(entity_key(ns, "account", 3))
    client.hset(name, mapping={"total": str(INT64_MAX - 5)})
    assert writer.apply(_plan(ns, {"total": 5}, "1"), 0, {"ledger:0": 1})
    assert client.hget(name, "total") == str(INT64_MAX).encode()
    before = client.hgetall(name)
    with pytest.raises(ShardRejectedError) as caught:
        writer.apply(_plan(ns, {"total": 1}, "2"), 0, {"ledger:0": 2})
    assert caught.value.rejection == Rejection("overflow", name, "total", str(INT64_MAX), "1")
    assert "int64" in str(caught.value) and "stays in the journal" in str(caught.value)
    assert client.hgetall(name) == before
    # the control step committed: the row state and the positions are written, the entity
    # side waits in the journal
    assert writer.offsets(0) == {"ledger:0": 2}
    assert client.exists(writer.row_name(row_key(ns, "ledger", "2"), 0))
    assert list(writer.pending(0)) == [2]
    with pytest.raises(ShardRejectedError):  # a new owner's replay: refused again
        ClusterBatchWriter(client, LEDGER, keys).replay(0)
    assert client.hgetall(name) == before
