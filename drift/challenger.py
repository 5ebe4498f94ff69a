"""The pure part of a retrain: split by time, train a challenger, compare it with the champion.

Fair comparison on the newest slice of labelled examples (the holdout):

- the champion is judged by the scores it SERVED for those payments (``training_examples.score``,
  computed before it learned each example: prequential, what users actually got);
- the challenger is trained only on examples labelled before the holdout, then scores it.

Metrics are exact: ROC AUC by ranks (Mann-Whitney, ties counted half; River's ``ROCAUC`` is an
approximation) and log loss with probabilities clipped to [1e-15, 1 - 1e-15].

>>> roc_auc([False, True, False, True], [0.1, 0.9, 0.4, 0.4])
0.875
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from online_learning.model import OnlineModel

__all__ = [
    "Example",
    "Verdict",
    "fit",
    "holdout_metrics",
    "judge",
    "log_loss",
    "roc_auc",
    "split",
]

_EPS = 1e-15


@dataclass(frozen=True)
class Example:
    """One labelled example as stored: the served vector, its label and the served score."""

    payment_id: int
    features: Mapping[str, float]
    label: bool
    score: float
    labelled_at: datetime


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Exact ROC AUC; None when only one class is present (it is undefined then)."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):  # average ranks (1-based) over runs of equal scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2.0 + 1.0
        rank_sum += mean_rank * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def log_loss(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Mean binary cross-entropy; None for no examples."""
    if not labels:
        return None
    total = 0.0
    for y, p in zip(labels, scores, strict=True):
        p = min(1.0 - _EPS, max(_EPS, float(p)))
        total -= math.log(p) if y else math.log(1.0 - p)
    return total / len(labels)


def holdout_metrics(labels: Sequence[bool], scores: Sequence[float]) -> dict[str, Any]:
    """``n``, ``n_fraud``, ``roc_auc`` and ``log_loss`` of one model on one slice."""
    return {
        "n": len(labels),
        "n_fraud": sum(1 for y in labels if y),
        "roc_auc": roc_auc(labels, scores),
        "log_loss": log_loss(labels, scores),
    }


def split(examples: Sequence[Example], holdout_share: float) -> tuple[list[Example], list[Example]]:
    """Time-ordered split: the newest ``holdout_share`` (by label time) is the holdout."""
    ordered = sorted(examples, key=lambda e: (e.labelled_at, e.payment_id))
    n_holdout = max(1, round(len(ordered) * holdout_share)) if ordered else 0
    cut = len(ordered) - n_holdout
    return ordered[:cut], ordered[cut:]


def fit(
    model: OnlineModel,
    examples: Sequence[Example],
    epochs: int = 1,
    on_step: Callable[[int, int], None] | None = None,
) -> OnlineModel:
    """Train ``model`` on ``examples`` in time order, ``epochs`` times over.

    ``on_step(done, total)`` is called at every tenth of the work and at the end.
    """
    total = len(examples) * epochs
    step = max(1, total // 10)
    done = 0
    for _ in range(epochs):
        for example in examples:
            model.learn(example.features, example.label)
            done += 1
            if on_step is not None and (done % step == 0 or done == total):
                on_step(done, total)
    return model


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger replaces the champion, and why, in one sentence."""

    promote: bool
    detail: str


def judge(
    champion: Mapping[str, Any],
    challenger: Mapping[str, Any],
    *,
    margin: float,
    log_loss_tolerance: float,
) -> Verdict:
    """Promote only when the challenger's AUC >= champion's + ``margin`` and its log loss is
    at most ``log_loss_tolerance`` worse; when AUC is undefined nothing is promoted."""
    a_champ, a_chall = champion.get("roc_auc"), challenger.get("roc_auc")
    if a_champ is None or a_chall is None:
        return Verdict(False, "ROC AUC is undefined on the holdout (one class only): kept")
    if a_chall < a_champ + margin:
        return Verdict(
            False,
            f"challenger ROC AUC {a_chall:.4f} < champion {a_champ:.4f} + margin {margin}: kept",
        )
    l_champ, l_chall = champion.get("log_loss"), challenger.get("log_loss")
    if l_champ is not None and l_chall is not None and l_chall > l_champ + log_loss_tolerance:
        return Verdict(
            False,
            f"challenger ROC AUC {a_chall:.4f} wins but its log loss {l_chall:.4f} > champion "
            f"{l_champ:.4f} + tolerance {log_loss_tolerance}: kept",
        )
    return Verdict(
        True,
        f"challenger ROC AUC {a_chall:.4f} >= champion {a_champ:.4f} + margin {margin}: promoted",
    )
