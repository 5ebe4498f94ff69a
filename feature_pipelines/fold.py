"""The read fold: an entity's stored fields into feature states, in the client or in Redis.

A windowed feature keeps one field per bucket (and per distinct value), so an entity hash holds
tens of fields. A read takes each entity's hash with HGETALL (all of a read's in one round trip)
and ``FoldRead.fold_fields`` folds it in Python, looking every field up by name in a table made
once per read plan. Redis then does the least it can per read: it is one thread shared by every
reader and by the pipeline's writes, while readers scale out. On request (``server_fold``) a
read of many keys folds inside Redis instead, with ``FOLD_MANY``: one Lua call returning two
numbers per feature, for clients far from Redis where the hashes' bytes cost more than Redis's
time. ``readout.ReadPlan`` stays the reference; tests check both folds against it on random
hashes.

Numbers travel as decimal strings; Lua keeps them as doubles, exact below 2**53 (a sum of
amounts in cents up to about 90 trillion); the client fold is exact at any size.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np

from feature_pipelines.aggregations import KINDS, Reducer, kind_of
from feature_pipelines.lua import script
from feature_pipelines.readout import FeatureValue, Fields, ReadPlan
from feature_pipelines.spec import Feature
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD

__all__ = ["FOLD_MANY", "LOCAL", "MANY", "FoldRead"]

LOCAL, MANY = 0, 1  # where a read folds: see ``FoldRead.fold_site``


def _spec(feature: Feature) -> str:
    """How FOLD_MANY reads a feature: a keyed kind is ``#`` and the name of its reducer (if
    any); a counter kind is its fields' parts, ``|``-separated, each followed by where it adds:
    1 the count a, 2 the total b (e.g. ``1`` for a count, ``:z1|:s2`` for a mean)."""
    kind = kind_of(feature.agg)
    if kind.keyed:
        return "#" + (kind.name if kind.reducer else "")
    return "|".join(part + ("2" if slot == "total" else "1") for part, slot in kind.parts(feature))


# lua/fold_many.lua (its ARGV and answer are described there), with the bookkeeping fields' names
# and the reducers of the registered keyed kinds, by kind name
FOLD_MANY = (
    script("fold_many")
    .replace("@COMMIT@", COMMIT_FIELD)
    .replace("@WRITTEN@", WRITTEN_FIELD)
    .replace(
        "@REDUCERS@",
        "\n".join(f"reducers['{k.name}'] = {k.reducer.lua}" for k in KINDS.values() if k.reducer),
    )
)

# With ``server_fold``, reads of this many keys or more fold in Redis, unless the plan has more
# than _NAMES_PER_KEY names per key for FOLD_MANY to write down (a name costs about what
# taking one field apart does). Below it the client fold is faster whatever the protocol; on
# RESP2 it is faster at every size.
_NAMES_PER_KEY = 150
_MANY_FROM = 64


class FoldRead:
    """A read plan made ready for folding, once: a converter per feature, the table of field
    names of the client fold (made on first use, per key type), FOLD_MANY's ARGV and how many
    names it would write down. A plan only changes when the read time crosses a bucket edge, so
    reads in between share one (``FeatureStore`` keeps them).

    ``fold_fields`` folds one entity hash in Python; ``FOLD_MANY`` does the same in Redis;
    ``readout.ReadPlan.states`` stays the reference both are tested against."""

    __slots__ = ("_tables", "args", "convs", "n_names", "plan")

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self._tables: dict[type, _FieldCodes] = {}
        self.args = [str(len(plan.features))]
        self.n_names = 0
        for f in plan.features:
            _feature, lo, hi = plan.wanted[f.name]
            windowed = "1" if f.window is not None else "0"
            self.args += [f.name, _spec(f), windowed, str(lo), str(hi)]
            kind = kind_of(f.agg)
            if f.window is not None and not kind.keyed:
                self.n_names += (hi - lo) * len(kind.parts(f))
        # the value ``readout.finalize`` gives, from a fold row, without building a State
        at = {f.name: 2 + 2 * i for i, f in enumerate(plan.features)}
        self.convs = [(f.name, kind_of(f.agg).converter(f, at)) for f in plan.features]

    def fold_site(self, n_keys: int) -> int:
        """Where a read of ``n_keys`` keys folds when the store may fold in Redis: ``LOCAL``
        (HGETALL, fold in Python) or ``MANY`` (FOLD_MANY)."""
        if n_keys >= _MANY_FROM and self.n_names <= _NAMES_PER_KEY * n_keys:
            return MANY
        return LOCAL

    def fold_fields(self, fields: Fields | Sequence[Any]) -> list[int]:
        """One entity hash folded as FOLD_MANY folds it: ``[commit, written, a1, b1, ...]``.

        ``fields`` is the hash as a mapping, or as HGETALL's flat ``[name, value, ...]`` list
        (RESP2), which spares building a dict per entity."""
        if not fields:
            return self._empty()
        names, values = _names_values(fields)
        table = self._codes_for(names[0])
        codes = table.codes(names)
        row = self._empty()
        keyed: dict[tuple[int, Any], int] | None = None  # (a_i, value) -> rows with it
        for code, value in zip(codes, values, strict=True):
            if code >= 2:  # the usual field: a count or total of one feature
                row[code] += int(value)
            elif code >= 0:  # commit or written time
                row[code] = int(value)
            elif code != _NOT_COUNTED:
                pair = table.distinct[_DISTINCT - code]
                if keyed is None:
                    keyed = {}
                keyed[pair] = keyed.get(pair, 0) + int(value)
        if keyed:
            reducers = table.reducers
            for (at, value), n in keyed.items():
                if n > 0:
                    row[at] += 1
                    reducer = reducers.get(at)
                    if reducer is not None:  # the kind folds its values into b
                        x = int(value)
                        row[at + 1] = x if row[at] == 1 else reducer.python(row[at + 1], x)
        return row

    def fold_hashes(self, hashes: Sequence[Fields | Sequence[Any]]) -> list[list[int]]:
        """``fold_fields`` of each hash. From ``_VECTOR_FROM`` hashes on, all at once with
        numpy: the field names are looked up in one pass, the values parsed in one call and
        summed by (key, row index) in another, instead of a field at a time in Python. Same
        answer, exact as long as no sum can leave int64 (otherwise it folds hash by hash, in
        Python's integers)."""
        if len(hashes) < _VECTOR_FROM:
            return [self.fold_fields(fields) for fields in hashes]
        n_keys = len(hashes)
        names: Sequence[Any]
        values: Sequence[Any]
        if all(type(fields) is list for fields in hashes):  # RESP2: flat lists, joined once
            flat = list(chain.from_iterable(hashes))
            names, values = flat[0::2], flat[1::2]
            lengths = [len(fields) >> 1 for fields in hashes]
        else:
            names, values, lengths = [], [], []
            for fields in hashes:
                some_names, some_values = _names_values(fields)
                names += some_names
                values += some_values
                lengths.append(len(some_names))
        if not names:
            return [self._empty() for _ in hashes]
        table = self._codes_for(names[0])
        codes = table.code_array(names)
        vals = _integers(values)
        if vals is None:
            return [self.fold_fields(fields) for fields in hashes]
        counted = codes >= 2
        dist = codes <= _DISTINCT
        # only what is summed bounds the sums: the freshness times (assigned) and the fields
        # no feature counts (``_swept``, micros since the epoch) do not
        summed = vals[counted | dist]
        if summed.size and int(np.abs(summed).max()) > _INT64_SAFE // summed.size:
            return [self.fold_fields(fields) for fields in hashes]
        numbers = None
        if table.reducers and dist.any():
            numbers = table.numbers()
            if numbers is None:  # a keyed value past int64: fold in Python's integers
                return [self.fold_fields(fields) for fields in hashes]
        key = np.repeat(np.arange(n_keys), lengths)
        rows = np.zeros((n_keys, 2 + 2 * len(self.plan.features)), dtype=np.int64)
        rows[:, :2] = -1
        np.add.at(rows, (key[counted], codes[counted]), vals[counted])
        for at in (0, 1):  # commit and written times
            found = codes == at
            rows[key[found], at] = vals[found]
        if dist.any():
            # one sum per key and (a_i, value) pair over its buckets; a feature counts the
            # values whose sum is positive (and a kind with a reducer folds them into b)
            which = _DISTINCT - codes[dist]
            pair_of, slot_of = table.distinct_arrays()
            pair, slot = pair_of[which], slot_of[which]
            n_pairs = int(pair.max()) + 1
            pairs, first, inverse = np.unique(
                key[dist] * n_pairs + pair, return_index=True, return_inverse=True
            )
            sums = np.zeros(len(pairs), dtype=np.int64)
            np.add.at(sums, inverse, vals[dist])
            positive = sums > 0
            np.add.at(rows, (pairs[positive] // n_pairs, slot[first[positive]]), 1)
            if numbers is not None:
                number = numbers[which][first]
                _reduce(table, rows, pairs // n_pairs, slot[first], number, positive)
        out: list[list[int]] = rows.tolist()
        return out

    def _codes_for(self, name: Any) -> _FieldCodes:
        """The code table for names of ``name``'s type (bytes or str), made on first use."""
        table = self._tables.get(type(name))
        if table is None:
            table = self._tables[type(name)] = _FieldCodes(self.plan, type(name) is bytes)
        return table

    def _empty(self) -> list[int]:
        return [-1, -1, *([0] * (2 * len(self.plan.features)))]

    def unfold(
        self, rows: Sequence[Sequence[int]]
    ) -> list[tuple[dict[str, FeatureValue], int | None, int | None]]:
        """Every key's script answer -> (values, commit_ms, written_ms), in order."""
        convs = self.convs
        out = []
        for row in rows:
            values = {name: conv(row) for name, conv in convs}
            commit, written = row[0], row[1]
            out.append((values, commit if commit >= 0 else None, written if written >= 0 else None))
        return out


def _names_values(fields: Fields | Sequence[Any]) -> tuple[Sequence[Any], Collection[Any]]:
    """A hash's field names and values, in order: from a mapping, or from HGETALL's flat
    ``[name, value, ...]`` list (RESP2)."""
    if isinstance(fields, Mapping):
        return list(fields), fields.values()
    return fields[0::2], fields[1::2]


_NOT_COUNTED = -1  # the code of a field no feature of the read counts
_UNSEEN = -(2**63)  # in ``_FieldCodes.code_array``: a name without a code yet
_NO_INTS = np.zeros(0, dtype=np.int64)
_DISTINCT = -2  # codes from here down: distinct values, numbered by _FieldCodes.distinct
# Codes a table remembers beyond the counted fields before it starts again: a distinct value's
# name with its code and pair takes ~350 bytes (tracemalloc), so a plan holds at most ~7 MB of
# them, and a store at most 8 plans.
_KEPT = 20_000


class _FieldCodes:
    """Field name -> what it adds to a fold row (a code), for one key type (bytes or str).

    A code >= 2 is the row index the field adds to (count a_i or total b_i), 0 and 1 the
    commit and written times, ``_NOT_COUNTED`` a field the read does not count, and from
    ``_DISTINCT`` down a (row index, value) pair of a keyed feature (distinct, ...) in
    ``distinct``. The counted fields are written down from the plan; every other field gets
    its code the first time it is seen. Names repeat across the entities one plan reads
    (buckets are shared), so a keyed field is taken apart once per plan, not once per entity."""

    __slots__ = (
        "_arrays",
        "_counted",
        "_hash",
        "_heads",
        "_numbers",
        "_pairs",
        "distinct",
        "pair_of",
        "places",
        "reducers",
    )

    def __init__(self, plan: ReadPlan, as_bytes: bool) -> None:
        def key(text: str) -> Any:
            return text.encode() if as_bytes else text

        places: dict[Any, int] = {key(COMMIT_FIELD): 0, key(WRITTEN_FIELD): 1}
        heads: dict[Any, int] = {}  # name (or name@bucket) before '#' of a keyed feature
        # a_i of a keyed feature whose kind folds its values into b_i -> how
        self.reducers: dict[int, Reducer] = {}
        for i, f in enumerate(plan.features):
            _feature, lo, hi = plan.wanted[f.name]
            count_at, total_at = 2 + 2 * i, 3 + 2 * i
            kind = kind_of(f.agg)
            if kind.keyed:
                parts = [(f.name, count_at)]
                if kind.reducer is not None:
                    self.reducers[count_at] = kind.reducer
            else:  # a mean's ``z`` (rows of its count without a value) goes in the count
                parts = [
                    (f.name + part, total_at if slot == "total" else count_at)
                    for part, slot in kind.parts(f)
                ]
            into = heads if kind.keyed else places
            for head, at in parts:
                if f.window is None:
                    into[key(head)] = at
                else:
                    for b in range(lo + 1, hi + 1):
                        into[key(f"{head}@{b}")] = at
        self._counted = places
        self._heads = heads
        self._hash = key("#")
        self.places = dict(places)
        self.distinct: list[tuple[int, Any]] = []
        # the same value of a feature in different buckets is one (a_i, value) pair: its number
        self.pair_of: list[int] = []
        self._pairs: dict[tuple[int, Any], int] = {}
        self._arrays = (_NO_INTS, _NO_INTS)  # pair_of and each distinct's a_i, as numpy
        self._numbers: Any = _NO_INTS  # each distinct's value as an integer, see ``numbers``

    def codes(self, names: Sequence[Any]) -> list[int]:
        """The code of each name, in order."""
        codes = list(map(self.places.get, names))
        if None in codes:
            if self._full():  # the codes of remembered names were forgotten: take them again
                codes = list(map(self.places.get, names))
            self._fill(codes, names, [i for i, code in enumerate(codes) if code is None])
        return codes  # type: ignore[return-value]

    def code_array(self, names: Sequence[Any]) -> Any:
        """``codes`` as a numpy array, made without a list in between."""
        codes = self._array(names)
        unseen = np.flatnonzero(codes == _UNSEEN)
        if unseen.size:
            if self._full():
                codes = self._array(names)
                unseen = np.flatnonzero(codes == _UNSEEN)
            self._fill(codes, names, unseen.tolist())
        return codes

    def _array(self, names: Sequence[Any]) -> Any:
        places = self.places
        return np.fromiter(
            map(places.get, names, repeat(_UNSEEN)), dtype=np.int64, count=len(names)
        )

    def _fill(self, codes: Any, names: Sequence[Any], unseen: list[int]) -> None:
        """Codes for the names seen for the first time (few, once a plan has warmed up)."""
        for i in unseen:
            codes[i] = self.places.get(names[i]) or self._code(names[i])  # a repeat: not 0

    def distinct_arrays(self) -> tuple[Any, Any]:
        """``pair_of`` and the a_i of each entry of ``distinct``, as numpy arrays indexed like
        them (grown with the lists, never rebuilt whole)."""
        pair_of, slot_of = self._arrays
        have = len(pair_of)
        if have < len(self.pair_of):
            pair_of = np.concatenate((pair_of, np.array(self.pair_of[have:], dtype=np.int64)))
            new_slots = np.array([at for at, _value in self.distinct[have:]], dtype=np.int64)
            slot_of = np.concatenate((slot_of, new_slots))
            self._arrays = (pair_of, slot_of)
        return pair_of, slot_of

    def numbers(self) -> Any:
        """Each entry of ``distinct`` as an int64 (its value, for a feature with a reducer;
        0 for others), grown with the list; None if some value does not fit int64."""
        have = len(self._numbers)
        if have < len(self.distinct):
            reducers = self.reducers
            more = [int(v) if at in reducers else 0 for at, v in self.distinct[have:]]
            if any(not _I64.min < x < _I64.max for x in more):
                return None
            self._numbers = np.concatenate((self._numbers, np.array(more, dtype=np.int64)))
        return self._numbers

    def _full(self) -> bool:
        """Whether the remembered names are past the bound; if so, they are forgotten."""
        if len(self.places) <= len(self._counted) + _KEPT:
            return False
        self.places = dict(self._counted)
        self.distinct, self.pair_of, self._pairs = [], [], {}
        self._arrays = (_NO_INTS, _NO_INTS)
        self._numbers = _NO_INTS
        return True

    def _code(self, name: Any) -> int:
        head, sep, dval = name.partition(self._hash)
        at = self._heads.get(head) if sep else None
        if at is None:
            code = _NOT_COUNTED
        else:
            self.distinct.append((at, dval))
            self.pair_of.append(self._pairs.setdefault((at, dval), len(self._pairs)))
            code = _DISTINCT - len(self.distinct) + 1
        self.places[name] = code
        return code


# Reads of this many keys or more fold with numpy (``FoldRead.fold_hashes``): below it numpy's
# fixed cost per call outweighs what it saves per field.
_VECTOR_FROM = 16
_INT64_SAFE = 2**62  # |value| * values below this: no sum of them leaves int64
_I64 = np.iinfo(np.int64)


def _integers(values: list[Any]) -> Any:
    """Decimal text values (bytes or str, as Redis gives them) or ints as one int64 array,
    parsed in one call; None if some value does not fit int64."""
    first = values[0]
    if isinstance(first, bytes | str):
        text = (b" " if isinstance(first, bytes) else " ").join(values)
        parsed = np.fromstring(text, dtype=np.int64, sep=" ")
        if len(parsed) != len(values):
            msg = "a feature field does not hold one integer"
            raise ValueError(msg)
        # fromstring saturates at the int64 bounds instead of failing: treat those as too big
        if parsed.size and (parsed.max() == _I64.max or parsed.min() == _I64.min):
            return None
        return parsed
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None


def _reduce(table: _FieldCodes, rows: Any, key: Any, slot: Any, number: Any, positive: Any) -> None:
    """Fold, per key and keyed feature with a reducer, the values with a positive count into
    b_i (per (key, value) pair: its key, its feature's a_i, its value, whether positive)."""
    by_reducer: dict[Reducer, list[int]] = {}
    for at, reducer in table.reducers.items():
        by_reducer.setdefault(reducer, []).append(at)
    for reducer, ats in by_reducer.items():
        chosen = positive & np.isin(slot, ats)
        if chosen.any():
            where = (key[chosen], slot[chosen] + 1)
            rows[where] = number[chosen]  # one of the values: the reducer is idempotent
            reducer.numpy.at(rows, where, number[chosen])
