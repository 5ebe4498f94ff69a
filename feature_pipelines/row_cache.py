"""Row states this consumer wrote, kept in process so a live batch needs no read round trip.

The planner needs the stored state of every row a batch touches (positions for de-duplication,
lookup values for joins). Read from Redis, that is one round trip per batch before the write.
But while a consumer owns its partitions, the rows of its keys are written by nobody else: the
state it wrote last is the state Redis holds. So the pipeline remembers the states its own
successful writes left (``remember``) and reads only what it does not know (``split``).

A row that a batch inserts (op ``c``) and that is not remembered is taken as new, not read:
live, an insert is a row never seen before. Where that is wrong (a replay after a restart
brings an insert already applied) the batch script refuses the write, since it checks every
written row's version, and the pipeline plans again from what it reads, without guessing for
a while (``RowCache.refused``).

Rows a batch only reads (a lookup: an outcome reading its payment's merchant) are not checked
by the script. They come from the cache only because this consumer wrote them (the tables of a
join share their partition key), and the cache is cleared whenever that could stop being true:
a partition assignment changes, positions are re-read from Redis, or a write is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice

from feature_pipelines.planner import RowState, Watermarks, WritePlan, row_after

__all__ = ["RowCache"]


class RowCache:
    """Row-state hashes as this consumer's writes left them, the newest ``capacity`` rows.

    ``read_after_refusal``: after a refused write, this many unknown inserted rows are read
    (not taken as new) before guessing again, so a replay of inserts already applied is not
    refused batch after batch.
    """

    def __init__(self, capacity: int, read_after_refusal: int = 10_000) -> None:
        self.capacity = capacity
        self.read_after_refusal = read_after_refusal
        self._rows: dict[str, RowState] = {}
        self._to_read = 0  # unknown inserted rows still to read rather than take as new
        self.hits = 0
        self.guessed = 0
        self.reads = 0

    def __len__(self) -> int:
        return len(self._rows)

    def split(
        self, keys: Sequence[str], inserted: Iterable[str] = (), marks: Watermarks | None = None
    ) -> tuple[dict[str, RowState], list[str]]:
        """(states known without reading, keys to read). ``inserted``: row keys of the batch's
        inserts, taken as new rows (no state) when not remembered. A remembered row whose
        ``exp`` its partition's watermark (``marks``) has reached may have been deleted by the
        write script since: it is read again."""
        if self.capacity <= 0:
            self.reads += len(keys)
            return {}, list(keys)
        rows = self._rows
        known: dict[str, RowState] = {}
        unknown: list[str] = []
        newest = max(marks.newest.values(), default=0) if marks is not None else 0
        for key in keys:
            state = rows.get(key)
            if state is None:
                unknown.append(key)
            elif newest and int(state.get("exp") or 0) <= newest:
                del rows[key]
                unknown.append(key)
            else:
                known[key] = state
        self.hits += len(known)
        if unknown:
            new = set(inserted).intersection(unknown)
            if new and self._to_read > 0:
                self._to_read = max(0, self._to_read - len(new))
            elif new:
                self.guessed += len(new)
                unknown = [key for key in unknown if key not in new]
        self.reads += len(unknown)
        return known, unknown

    def remember(
        self, states: Mapping[str, RowState], plan: WritePlan, marks: Watermarks | None = None
    ) -> None:
        """After ``plan`` was written: its rows as the write left them (``states``: what the
        plan was made from). Rows whose ``exp`` the newest watermark (``marks``) has reached
        leave, as their states leave Redis: the oldest written first, and a row's ``exp``
        follows the watermark at its last write, so they are at the front."""
        if self.capacity <= 0:
            return
        rows = self._rows
        for key, write in plan.rows.items():
            rows.pop(key, None)  # re-inserted last: the newest rows stay
            rows[key] = row_after(states.get(key), write)
        excess = len(rows) - self.capacity
        if excess > 0:
            for key in list(islice(rows, excess)):
                del rows[key]
        newest = max(marks.newest.values(), default=0) if marks is not None else 0
        if newest:
            gone = []
            for key, state in rows.items():
                if int(state.get("exp") or 0) > newest:
                    break
                gone.append(key)
            for key in gone:
                del rows[key]

    def refused(self) -> None:
        """A write was refused (a row state was not as planned): forget everything, and read
        the next ``read_after_refusal`` unknown inserted rows."""
        self._rows.clear()
        self._to_read = self.read_after_refusal

    def clear(self) -> None:
        """Forget every row (a new assignment, or positions re-read from Redis)."""
        self._rows.clear()
