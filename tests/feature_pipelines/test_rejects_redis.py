"""The batch script's checks before its first write, against the real Redis: the int64 check
in Lua is exact at both bounds, and a refused batch writes nothing at all."""

from __future__ import annotations

import doctest
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import rejects
from feature_pipelines.exceptions import BatchRejectedError
from feature_pipelines.planner import RowWrite, WritePlan, entity_key, row_key
from feature_pipelines.rejects import INT64_MAX, INT64_MIN, Rejection, fits
from feature_pipelines.store_write import _INT64, RedisBatchWriter
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_batch_whole import LEDGER

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


@pytest.fixture(scope="module")
def client(stack_settings: Settings) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(stack_settings.redis_conninfo())
    yield conn
    conn.close()


@pytest.fixture
def writer(client: redis.Redis) -> Iterator[RedisBatchWriter]:
    tag = f"rj{uuid.uuid4().hex[:8]}"
    writer = RedisBatchWriter(client, LEDGER, tag, "g")
    yield writer
    client.delete(  # every key the tests write (a SCAN of the shared Redis takes seconds)
        writer.offsets_key,
        writer.marks_key,
        writer.index_key(0),
        writer.entity_index_key(0),
        entity_key(tag, "account", 3),
        *(row_key(tag, "ledger", str(pk)) for pk in (1, 2, 3)),
    )


def _check(client: redis.Redis, old: str | None, inc: str) -> str:
    answer = client.eval(_CHECK, 0, old or "", inc, "1" if old is not None else "0")
    return answer.decode() if isinstance(answer, bytes) else str(answer)


def test_the_module_examples() -> None:
    assert doctest.testmod(rejects).failed == 0


@settings(max_examples=400)
@given(old=st.one_of(st.none(), NEAR), inc=NEAR)
def test_the_lua_int64_check_is_exact(client: redis.Redis, old: int | None, inc: int) -> None:
    found = _check(client, None if old is None else str(old), str(inc))
    if old is not None and not fits(old):
        assert found == "value"
    elif fits(inc) and fits((old or 0) + inc):
        assert found == "ok"
    else:
        assert found == "overflow"


def test_the_lua_int64_check_at_the_bounds(client: redis.Redis) -> None:
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


def _plan(writer: RedisBatchWriter, increments: dict[str, int], pk: str = "1") -> WritePlan:
    ns = writer.ns
    ekey = entity_key(ns, "account", 3)
    return WritePlan(
        increments={ekey: increments},
        rows={row_key(ns, "ledger", pk): RowWrite(None, {"pos": "1:2"}, set(), 0, 10)},
        commit_ms={ekey: 1},
        entity_of={ekey: "account"},
        marks={0: (5, 5)},
    )


def _refused(writer: RedisBatchWriter, plan: WritePlan) -> Rejection:
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(plan, {"ledger:0": 9})
    rejection = caught.value.rejection
    assert isinstance(rejection, Rejection)
    assert writer.offsets() == {} and writer.watermarks() == {}  # nothing written at all
    for key in plan.rows:
        assert not writer.client.exists(key)
    assert not writer.client.exists(writer.index_key(0))
    return rejection


def test_a_field_carried_to_int64_max_lands_and_one_more_unit_is_refused(
    writer: RedisBatchWriter,
) -> None:
    ekey = entity_key(writer.ns, "account", 3)
    writer.client.hset(ekey, mapping={"total": str(INT64_MAX - 5), "entries": str(INT64_MIN)})
    assert writer.apply(_plan(writer, {"total": 5, "entries": 1}, "1"), {"ledger:0": 1})
    assert writer.client.hget(ekey, "total") == str(INT64_MAX).encode()
    assert writer.client.hget(ekey, "entries") == str(INT64_MIN + 1).encode()
    before = writer.client.hgetall(ekey)
    offsets = writer.offsets()
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(_plan(writer, {"entries": -1, "total": 1}, "2"), {"ledger:0": 2})
    assert caught.value.rejection == Rejection("overflow", ekey, "total", str(INT64_MAX), "1")
    assert "int64" in str(caught.value)
    assert writer.client.hgetall(ekey) == before  # the other field is not written either
    assert writer.offsets() == offsets
    assert not writer.client.exists(row_key(writer.ns, "ledger", "2"))
    # at the lower bound too
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(_plan(writer, {"entries": -2}, "3"), {"ledger:0": 3})
    assert caught.value.rejection.field == "entries"  # type: ignore[attr-defined]


def test_a_batch_past_int64_on_a_new_field_is_refused(writer: RedisBatchWriter) -> None:
    rejection = _refused(writer, _plan(writer, {"total": INT64_MAX + 1}))
    assert (rejection.kind, rejection.found, rejection.detail) == ("overflow", "", str(2**63))


def test_a_field_that_is_no_integer_is_refused(writer: RedisBatchWriter) -> None:
    ekey = entity_key(writer.ns, "account", 3)
    writer.client.hset(ekey, "total", "12abc")
    rejection = _refused(writer, _plan(writer, {"total": 1}))
    assert (rejection.kind, rejection.field, rejection.found) == ("value", "total", "12abc")
    assert writer.client.hgetall(ekey) == {b"total": b"12abc"}


@pytest.mark.parametrize("which", ["entity", "row", "offsets", "index"])
def test_a_key_of_another_type_is_refused(writer: RedisBatchWriter, which: str) -> None:
    plan = _plan(writer, {"total": 1})
    key = {
        "entity": next(iter(plan.increments)),
        "row": next(iter(plan.rows)),
        "offsets": writer.offsets_key,
        "index": writer.index_key(0),
    }[which]
    writer.client.set(key, "not a hash")
    with pytest.raises(BatchRejectedError) as caught:
        writer.apply(plan, {"ledger:0": 9})
    wanted = "zset" if which == "index" else "hash"
    assert caught.value.rejection == Rejection("type", key, "", "string", wanted)
    assert writer.client.get(key) == b"not a hash"
    for other in [*plan.rows, *plan.increments, writer.offsets_key, writer.index_key(0)]:
        if other != key:
            assert not writer.client.exists(other)
