"""Learner checkpoints in Postgres: state, offsets and the examples it learned, in ONE transaction.

A checkpoint row holds the signed learner snapshot (model, label join, metrics, drift monitor),
the signed model alone (what scorers load), the Kafka offsets the snapshot reflects and the
status counters. The labelled examples learned since the previous checkpoint are inserted in the
same transaction, so after any crash the database holds a consistent cut: the state, the
position to resume from, and exactly the examples that state has learned. Restoring the newest
checkpoint and seeking to its offsets replays the rest: nothing is learned twice or lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import river
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from freshloop.core.fencing import fenced_error
from online_learning.exceptions import SnapshotError
from online_learning.learner import OnlineLearner
from online_learning.model import OnlineModel
from online_learning.records import LabelledExample, LabelSource
from online_learning.signing import dumps_signed, loads_signed
from online_learning.tables import CHECKPOINTS, EXAMPLES

__all__ = ["Checkpoint", "CheckpointRef", "CheckpointStore", "json_safe"]

log = logging.getLogger(__name__)

_SNAPSHOT_KIND = "freshloop.learner"


@dataclass(frozen=True)
class CheckpointRef:
    """The newest checkpoint's identity, without blobs (what scorers poll)."""

    checkpoint_id: int
    model_version: str
    created_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read back: the snapshot is still a verified-on-load signed blob."""

    ref: CheckpointRef
    snapshot: bytes
    offsets: dict[str, int]
    status: dict[str, Any]
    n_learned: int


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSONB refuses NaN and infinities)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class CheckpointStore:
    """Checkpoints and training examples of one namespace."""

    def __init__(self, engine: Engine, namespace: str, signing_key: bytes, keep: int = 5) -> None:
        self.engine = engine
        self.ns = namespace
        self._key = signing_key
        self.keep = keep

    def write(
        self,
        learner: OnlineLearner,
        offsets: Mapping[str, int],
        examples: Sequence[LabelledExample],
        extra_status: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert the examples and the checkpoint atomically; returns the checkpoint id.

        On a fenced engine (``freshloop.core.fencing``) the transaction writes nothing and
        ``FencedError`` is raised once another copy took the learner's role over."""
        try:
            return self._write(learner, offsets, examples, extra_status)
        except DBAPIError as exc:
            fenced = fenced_error(exc)
            if fenced is None:
                raise
            raise fenced from exc

    def _write(
        self,
        learner: OnlineLearner,
        offsets: Mapping[str, int],
        examples: Sequence[LabelledExample],
        extra_status: Mapping[str, Any] | None,
    ) -> int:
        status = json_safe({**learner.status(), **(extra_status or {})})
        snapshot = dumps_signed(learner.snapshot(), self._key, _SNAPSHOT_KIND)
        with self.engine.begin() as conn:
            if examples:
                stmt = pg_insert(EXAMPLES).values([self._row(ex) for ex in examples])
                # The key holds labelled_at since training_examples is partitioned by it
                # (sql/006_retention.sql); a payment's labelled_at is fixed by its events.
                keys = ["namespace", "payment_id", "labelled_at"]
                conn.execute(stmt.on_conflict_do_nothing(index_elements=keys))
            checkpoint_id = int(
                conn.execute(
                    insert(CHECKPOINTS)
                    .values(
                        namespace=self.ns,
                        created_at=datetime.now(UTC),
                        model_version=learner.model.version,
                        model_blob=learner.model.to_bytes(self._key),
                        snapshot=snapshot,
                        offsets=dict(offsets),
                        status=status,
                        n_learned=learner.model.n_learned,
                        river_version=river.__version__,
                    )
                    .returning(CHECKPOINTS.c.checkpoint_id)
                ).scalar_one()
            )
            oldest_kept = (
                select(CHECKPOINTS.c.checkpoint_id)
                .where(CHECKPOINTS.c.namespace == self.ns)
                .order_by(CHECKPOINTS.c.checkpoint_id.desc())
                .offset(self.keep - 1)
                .limit(1)
                .scalar_subquery()
            )
            conn.execute(
                delete(CHECKPOINTS).where(
                    CHECKPOINTS.c.namespace == self.ns,
                    CHECKPOINTS.c.checkpoint_id < oldest_kept,
                )
            )
        log.info(
            "checkpoint written namespace=%s id=%d examples=%d learned=%d model=%s",
            self.ns,
            checkpoint_id,
            len(examples),
            learner.model.n_learned,
            learner.model.version,
        )
        return checkpoint_id

    def _row(self, ex: LabelledExample) -> dict[str, Any]:
        return {
            "namespace": self.ns,
            "payment_id": ex.payment_id,
            "features": dict(ex.features),
            "label": ex.label,
            "score": ex.score,
            "model_version": ex.model_version,
            "predicted_at": ex.predicted_at,
            "labelled_at": ex.labelled_at,
            "source": ex.source,
        }

    def latest_ref(self) -> CheckpointRef | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    CHECKPOINTS.c.checkpoint_id,
                    CHECKPOINTS.c.model_version,
                    CHECKPOINTS.c.created_at,
                )
                .where(CHECKPOINTS.c.namespace == self.ns)
                .order_by(CHECKPOINTS.c.checkpoint_id.desc())
                .limit(1)
            ).first()
        return None if row is None else CheckpointRef(*row)

    def latest(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(CHECKPOINTS)
                .where(CHECKPOINTS.c.namespace == self.ns)
                .order_by(CHECKPOINTS.c.checkpoint_id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return Checkpoint(
            CheckpointRef(row.checkpoint_id, row.model_version, row.created_at),
            bytes(row.snapshot),
            {str(k): int(v) for k, v in row.offsets.items()},
            dict(row.status),
            int(row.n_learned),
        )

    def load_model(self, checkpoint_id: int) -> OnlineModel:
        """The model of one checkpoint (what a scorer serves)."""
        with self.engine.connect() as conn:
            blob = conn.execute(
                select(CHECKPOINTS.c.model_blob).where(CHECKPOINTS.c.checkpoint_id == checkpoint_id)
            ).scalar_one()
        return OnlineModel.from_bytes(bytes(blob), self._key)

    def restore(self, checkpoint: Checkpoint, learner_kwargs: Mapping[str, Any]) -> OnlineLearner:
        """The learner a checkpoint holds; the blob's signature is checked before unpickling."""
        state, _ = loads_signed(checkpoint.snapshot, self._key, _SNAPSHOT_KIND)
        if not isinstance(state, dict):
            msg = "checkpoint snapshot does not hold a learner state"
            raise SnapshotError(msg)
        return OnlineLearner.restore(state, self._key, **learner_kwargs)

    def labelled(self, payment_ids: Collection[int]) -> dict[int, LabelSource]:
        """The stored label source of each payment among ``payment_ids`` that has an example.

        A stored example is the learner's durable "already labelled" mark: it is written in the
        checkpoint's transaction, so it exists exactly when a checkpoint reflects its learning.
        """
        if not payment_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(EXAMPLES.c.payment_id, EXAMPLES.c.source).where(
                    EXAMPLES.c.namespace == self.ns,
                    EXAMPLES.c.payment_id.in_(sorted(set(payment_ids))),
                )
            ).all()
        return {int(pid): "horizon" if source == "horizon" else "outcome" for pid, source in rows}

    def example_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(EXAMPLES)
                    .where(EXAMPLES.c.namespace == self.ns)
                ).scalar_one()
            )
