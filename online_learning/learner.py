"""``OnlineLearner``: score payments, join their delayed labels, learn each once, keep metrics.

It ties the model, the label join and the evaluation together and does no I/O: the shell reads
payments, served features, prediction logs, outcomes and the clock, calls these methods, and
writes what they return. Scoring and learning use one vector: the one built by
``build_vector`` at scoring time and carried, unchanged, through the logged prediction.

Hot swap: ``swap_model`` replaces the model; examples joined afterwards, whatever model scored
them, train the new model (their ``model_version`` is kept on the example and counted as
``learned_from_other_version``). Metrics continue across the swap, since they measure what was
served; the drift monitor's window is reset, because the old model's errors say nothing about
the new one.

Checkpoints: ``snapshot()`` returns plain values; the model and the evaluation state are signed
blobs (River objects persist as pickle, and pickle is only loaded once signed), the join state
and counters are JSON-able.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from online_learning.evaluation import DriftMonitor, ErrorKind, ProgressiveMetrics
from online_learning.exceptions import SnapshotError
from online_learning.join import JoinConfig, LabelJoin, require_aware
from online_learning.model import OnlineModel
from online_learning.records import FeatureValue, LabelledExample, Payment, Prediction
from online_learning.signing import VersionPolicy, dumps_signed, loads_signed
from online_learning.stream_join import StreamJoin
from online_learning.vector import SERVED_FEATURES, build_vector

__all__ = ["OnlineLearner"]

_SNAPSHOT_FORMAT = 1
_EVAL_KIND = "freshloop.evaluation"
_COUNTERS = ("scored", "learned", "learned_from_other_version", "swaps")


class OnlineLearner:
    """The online-learning stage's state: model, label join, metrics, drift monitor, counts."""

    def __init__(
        self,
        model: OnlineModel,
        signing_key: bytes,
        join_config: JoinConfig | None = None,
        *,
        served_names: Sequence[str] = SERVED_FEATURES,
        window: int = 1000,
        drift_delta: float = 0.002,
        drift_error: ErrorKind = "absolute",
    ) -> None:
        self.model = model
        self.join = LabelJoin(join_config)
        # The service's join (state in Redis, Postgres and the topic, not here); ``join`` is the
        # in-memory one for callers that feed predictions and ticks themselves (bench, tests).
        self.stream = StreamJoin(join_config)
        self.metrics = ProgressiveMetrics(window)
        self.drift = DriftMonitor(delta=drift_delta, error=drift_error)
        self.served_names: tuple[str, ...] = tuple(served_names)
        self._key = signing_key
        self._counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- scoring ---------------------------------------------------------------------------

    def score(
        self,
        payment: Payment,
        features: Mapping[str, FeatureValue],
        now: datetime | None = None,
    ) -> Prediction:
        """Fraud probability for ``payment`` with the features served now; logs nothing itself.

        ``now`` is when the score was computed (defaults to ``payment.created_at``); it starts
        the label horizon.
        """
        x = build_vector(payment, features, self.served_names)
        predicted_at = require_aware(now if now is not None else payment.created_at, "now")
        self._counts["scored"] += 1
        return Prediction(
            payment_id=payment.payment_id,
            score=self.model.predict_proba(x),
            features=x,
            model_version=self.model.version,
            created_at=payment.created_at,
            predicted_at=predicted_at,
        )

    # -- label join, feeding observe() -----------------------------------------------------

    def on_prediction(self, prediction: Prediction) -> list[LabelledExample]:
        """A logged prediction came back; learns from it if its outcome was already waiting."""
        return self._learn_all(self.join.on_prediction(prediction.payment_id, prediction.record()))

    def on_outcome(self, payment_id: int, is_fraud: bool, at: datetime) -> list[LabelledExample]:
        """An outcome arrived; learns from it if its prediction was waiting."""
        return self._learn_all(self.join.on_outcome(payment_id, is_fraud, at))

    def on_horizon(self, now: datetime) -> list[LabelledExample]:
        """Clock tick: learns the horizon negatives that are due and trims the join's memory."""
        return self._learn_all(self.join.on_horizon(now))

    def observe(self, example: LabelledExample) -> None:
        """Learn one joined example from its LOGGED vector; update metrics and drift monitor."""
        self.metrics.update(example.label, example.score)
        self.drift.update(example.label, example.score)
        self.model.learn(example.features, example.label)
        self._counts["learned"] += 1
        if example.model_version != self.model.version:
            self._counts["learned_from_other_version"] += 1

    def _learn_all(self, examples: list[LabelledExample]) -> list[LabelledExample]:
        for example in examples:
            self.observe(example)
        return examples

    # -- operations ------------------------------------------------------------------------

    def swap_model(self, new_model: OnlineModel) -> OnlineModel:
        """Serve and train ``new_model`` from now on; returns the model it replaces."""
        old, self.model = self.model, new_model
        self.drift.reset()
        self._counts["swaps"] += 1
        return old

    def status(self) -> dict[str, Any]:
        """What ``learn status`` shows: model, counts, join backlog, metrics, drift alarms."""
        wm = self.stream.watermark or self.join.watermark
        return {
            "model_version": self.model.version,
            "model_learned": self.model.n_learned,
            "counts": dict(self._counts),
            "backlog": {**self.join.backlog(), **self.stream.backlog()},
            "join": {k: v + self.stream.counts()[k] for k, v in self.join.counts().items()},
            "watermark": None if wm is None else wm.isoformat(),
            "metrics": self.metrics.report(),
            "drift_alarms": list(self.drift.alarms),
            "drift_improvements": self.drift.improvements,
        }

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain, picklable and JSON-able-but-for-bytes state for a checkpoint."""
        return {
            "format": _SNAPSHOT_FORMAT,
            "model": self.model.to_bytes(self._key),
            "evaluation": dumps_signed((self.metrics, self.drift), self._key, _EVAL_KIND),
            "join": self.join.snapshot(),
            "stream": self.stream.snapshot(),
            "counts": dict(self._counts),
            "served_names": list(self.served_names),
        }

    @classmethod
    def restore(
        cls,
        state: Mapping[str, Any],
        signing_key: bytes,
        join_config: JoinConfig | None = None,
        on_version_mismatch: VersionPolicy = "refuse",
    ) -> OnlineLearner:
        """A learner continuing from ``snapshot()``; blobs are verified before unpickling."""
        if state.get("format") != _SNAPSHOT_FORMAT:
            msg = f"learner snapshot format {state.get('format')!r} is not {_SNAPSHOT_FORMAT}"
            raise SnapshotError(msg)
        model = OnlineModel.from_bytes(state["model"], signing_key, on_version_mismatch)
        evaluation, _ = loads_signed(
            state["evaluation"], signing_key, _EVAL_KIND, on_version_mismatch
        )
        if not isinstance(evaluation, tuple) or len(evaluation) != 2:
            msg = "learner snapshot's evaluation blob does not hold (metrics, drift monitor)"
            raise SnapshotError(msg)
        metrics, drift = evaluation
        if not isinstance(metrics, ProgressiveMetrics) or not isinstance(drift, DriftMonitor):
            msg = "learner snapshot's evaluation blob holds unexpected types"
            raise SnapshotError(msg)
        learner = cls(model, signing_key, join_config, served_names=state["served_names"])
        learner.join = LabelJoin.restore(state["join"], join_config)
        learner.metrics, learner.drift = metrics, drift
        learner._counts.update({k: int(v) for k, v in state["counts"].items() if k in _COUNTERS})
        return learner
