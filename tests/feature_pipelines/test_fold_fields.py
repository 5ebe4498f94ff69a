"""``FoldRead.fold_fields`` (the client fold every read uses unless it folds in Redis) agrees
with the reference fold ``ReadPlan.values`` on random hashes, whatever shape the client gives
them in: a mapping or a flat RESP2 list, of bytes, text, or ints as tests write them."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from feature_pipelines import fold as fold_module
from feature_pipelines.fold import LOCAL, MANY, FoldRead
from feature_pipelines.readout import ReadPlan
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD
from tests.feature_pipelines.fold_hashes import FEATURES, T_US, random_hash


def _reference(plan: ReadPlan, fields: dict[str, int]) -> tuple[dict, int | None, int | None]:
    return plan.values(fields), fields.get(COMMIT_FIELD), fields.get(WRITTEN_FIELD)


@pytest.mark.parametrize("entity", ["customer", "merchant"])
@pytest.mark.parametrize("seed", range(20))
def test_fold_fields_equals_the_reference(entity: str, seed: int) -> None:
    rng = random.Random(seed)
    plan = ReadPlan(FEATURES.for_entity(entity), T_US)
    fold = FoldRead(plan)
    hashes = [random_hash(rng, entity) for _ in range(6)] + [{}]
    want = [_reference(plan, h) for h in hashes]
    as_text = [{k: str(v) for k, v in h.items()} for h in hashes]
    as_bytes = [{k.encode(): str(v).encode() for k, v in h.items()} for h in hashes]
    flat = [[x for pair in h.items() for x in pair] for h in as_bytes]
    for shape in (hashes, as_text, as_bytes, flat):
        got = fold.unfold([fold.fold_fields(h) for h in shape])
        assert got == want
    # not degenerate: windowed, lifetime and keyed values are counted
    names = [f.name for f in plan.features if f.agg in ("count", "distinct", "min", "max")]
    for name in names:
        assert any(values[name] for values, _c, _w in want[:-1]), name


def test_a_fold_row_is_per_key_type() -> None:
    """A client with ``decode_responses`` (text) and one without (bytes) share one plan."""
    rng = random.Random(3)
    plan = ReadPlan(FEATURES.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    h = random_hash(rng, "customer")
    as_bytes = {k.encode(): str(v).encode() for k, v in h.items()}
    assert fold.fold_fields(as_bytes) == fold.fold_fields(h) == fold.fold_fields(as_bytes)


def test_reads_of_many_keys_may_fold_in_redis() -> None:
    fold = FoldRead(ReadPlan(FEATURES.for_entity("customer"), T_US))
    assert [fold.fold_site(n) for n in (1, 63, 64, 100)] == [LOCAL, LOCAL, MANY, MANY]


def test_the_fields_seen_are_forgotten_past_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The codes a plan remembers for distinct values and uncounted fields are bounded: past
    the bound they start again, and folds before, across and after agree with the reference."""
    monkeypatch.setattr(fold_module, "_KEPT", 10)
    rng = random.Random(5)
    plan = ReadPlan(FEATURES.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    hashes = [random_hash(rng, "customer") for _ in range(30)]
    got = fold.unfold([fold.fold_fields(h) for h in hashes])
    assert got == [_reference(plan, h) for h in hashes]
    table = fold._tables[str]
    assert len(table.places) <= len(table._counted) + 10 + 2 * max(len(h) for h in hashes)


@pytest.mark.parametrize("kept", [10, fold_module._KEPT])
def test_hash_by_hash_and_numpy_folds_share_what_they_remember(
    monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """Both folds of one plan add to and read the same remembered codes (the numpy one through
    arrays grown with them), before and after the bound forgets them."""
    monkeypatch.setattr(fold_module, "_KEPT", kept)
    rng = random.Random(6)
    plan = ReadPlan(FEATURES.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    for i in range(8):
        hashes = [random_hash(rng, "customer") for _ in range(fold_module._VECTOR_FROM + 4)]
        want = [_reference(plan, h) for h in hashes]
        as_bytes = [{k.encode(): str(v).encode() for k, v in h.items()} for h in hashes]
        rows = fold.fold_hashes(as_bytes) if i % 3 else [fold.fold_fields(h) for h in as_bytes]
        assert fold.unfold(rows) == want, i
    table = fold._tables[bytes]
    assert len(table.places) <= len(table._counted) + kept + sum(len(h) for h in hashes)


@pytest.mark.parametrize("entity", ["customer", "merchant"])
@pytest.mark.parametrize("seed", range(6))
def test_fold_hashes_equals_the_reference(entity: str, seed: int) -> None:
    """Reads of many keys fold with numpy, all hashes at once; a few keys hash by hash. Both
    give the reference's answer, in every shape a client gives hashes in."""
    rng = random.Random(100 + seed)
    plan = ReadPlan(FEATURES.for_entity(entity), T_US)
    fold = FoldRead(plan)
    n = rng.choice([fold_module._VECTOR_FROM - 1, fold_module._VECTOR_FROM, 40])
    hashes = [random_hash(rng, entity) if rng.random() < 0.9 else {} for _ in range(n)]
    want = [_reference(plan, h) for h in hashes]
    as_text = [{k: str(v) for k, v in h.items()} for h in hashes]
    as_bytes = [{k.encode(): str(v).encode() for k, v in h.items()} for h in hashes]
    flat = [[x for pair in h.items() for x in pair] for h in as_bytes]
    for shape in (hashes, as_text, as_bytes, flat):
        assert fold.unfold(fold.fold_hashes(shape)) == want


def test_fold_hashes_of_empty_hashes() -> None:
    fold = FoldRead(ReadPlan(FEATURES.for_entity("customer"), T_US))
    many = fold_module._VECTOR_FROM + 3
    assert fold.fold_hashes([{}] * many) == [fold.fold_fields({})] * many


def test_sums_past_int64_stay_exact() -> None:
    """numpy sums in int64: when values could carry a sum past it, the fold goes back to
    Python's integers and the answer stays exact."""
    rng = random.Random(9)
    plan = ReadPlan(FEATURES.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    hashes = [random_hash(rng, "customer") for _ in range(fold_module._VECTOR_FROM)]
    for h in hashes[:3]:  # a lifetime sum holding 2**62 and 2**63 - 1 (HINCRBY's ceiling)
        h["amount_sum_lifetime"] = 2**63 - 1 if h is hashes[0] else 2**62
    as_bytes = [{k.encode(): str(v).encode() for k, v in h.items()} for h in hashes]
    got = fold.unfold(fold.fold_hashes(as_bytes))
    assert got == [_reference(plan, h) for h in hashes]
    assert got[0][0]["amount_sum_lifetime"] == Decimal(2**63 - 1).scaleb(-2)


def test_large_fields_no_feature_sums_keep_the_fold_vectorized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipeline's sweep mark ``_swept`` (micros since the epoch) and the freshness times are
    far larger than any count, but no fold sums them: a read of hundreds of such hashes still
    folds with numpy (it went hash by hash in Python once a read held ~2,500 fields) and gives
    the reference's answer."""
    rng = random.Random(12)
    plan = ReadPlan(FEATURES.for_entity("customer"), T_US)
    fold = FoldRead(plan)
    hashes = [random_hash(rng, "customer") for _ in range(300)]
    for h in hashes:
        h["_swept"] = T_US - rng.randint(0, 10**9)
        h[COMMIT_FIELD] = T_US // 1000
    as_bytes = [[x for k, v in h.items() for x in (k.encode(), str(v).encode())] for h in hashes]
    assert sum(len(h) for h in hashes) * T_US > 2**62  # the bound the whole read would break
    want = [_reference(plan, h) for h in hashes]

    def by_hash(_self: FoldRead, _fields: object) -> list[int]:
        msg = "folded hash by hash"
        raise AssertionError(msg)

    monkeypatch.setattr(FoldRead, "fold_fields", by_hash)
    assert fold.unfold(fold.fold_hashes(as_bytes)) == want


def test_a_field_that_is_not_an_integer_is_an_error() -> None:
    rng = random.Random(4)
    fold = FoldRead(ReadPlan(FEATURES.for_entity("customer"), T_US))
    hashes = [
        {k.encode(): str(v).encode() for k, v in random_hash(rng, "customer").items()}
        for _ in range(fold_module._VECTOR_FROM)
    ]
    hashes[5][b"amount_sum_lifetime"] = b"12.5"
    with pytest.raises(ValueError):
        fold.fold_hashes(hashes)
    with pytest.raises(ValueError):
        fold.fold_fields(hashes[5])
