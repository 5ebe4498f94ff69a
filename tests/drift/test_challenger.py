"""The pure part of a retrain: exact metrics, the time split, training progress, the verdict."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drift.challenger import Example, fit, holdout_metrics, judge, log_loss, roc_auc, split
from online_learning import OnlineModel
from tests.drift.retrain_fixtures import SPEC, Concept, make_rows

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _pairwise_auc(labels: list[bool], scores: list[float]) -> float:
    """The definition: P(score of a positive > score of a negative), ties count half."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
        min_size=2,
        max_size=60,
    )
)
def test_roc_auc_is_exact_with_ties(pairs: list[tuple[bool, float]]) -> None:
    labels = [y for y, _ in pairs]
    scores = [s for _, s in pairs]
    if all(labels) or not any(labels):
        assert roc_auc(labels, scores) is None
    else:
        assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))


def test_metrics_of_known_values() -> None:
    assert roc_auc([False, True], [0.2, 0.8]) == 1.0
    assert roc_auc([False, True], [0.8, 0.2]) == 0.0
    assert log_loss([True, False], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert log_loss([True], [0.0]) == pytest.approx(-math.log(1e-15))  # clipped, finite
    assert log_loss([], []) is None
    assert holdout_metrics([True, False, False], [0.9, 0.1, 0.3]) == {
        "n": 3,
        "n_fraud": 1,
        "roc_auc": 1.0,
        "log_loss": pytest.approx(-(math.log(0.9) + math.log(0.9) + math.log(0.7)) / 3),
    }


def _example(i: int, at: datetime) -> Example:
    return Example(i, {"a": float(i)}, i % 2 == 0, 0.5, at)


def test_split_holds_out_the_newest_by_label_time() -> None:
    # Stored out of order: the split orders by labelled_at, then payment id.
    examples = [_example(i, T0 + timedelta(seconds=(7 * i) % 10)) for i in range(10)]
    train, holdout = split(examples, 0.3)
    assert len(train) == 7 and len(holdout) == 3
    assert max(e.labelled_at for e in train) <= min(e.labelled_at for e in holdout)
    assert [e.labelled_at for e in holdout] == sorted(e.labelled_at for e in holdout)
    assert split([], 0.3) == ([], [])
    assert split(examples[:1], 0.3) == ([], examples[:1])


def test_fit_reports_progress_every_tenth_and_learns_every_pass() -> None:
    rows = make_rows(250, Concept("a"), seed=1)
    examples = [Example(i, x, y, 0.5, T0) for i, (x, y) in enumerate(rows)]
    steps: list[tuple[int, int]] = []
    model = fit(OnlineModel(SPEC, "m"), examples, 2, on_step=lambda d, t: steps.append((d, t)))
    assert model.n_learned == 500
    assert steps[-1] == (500, 500)
    assert [d for d, _ in steps] == list(range(50, 501, 50))


@pytest.mark.parametrize(
    ("champion", "challenger", "promote", "words"),
    [
        ({"roc_auc": 0.70, "log_loss": 0.3}, {"roc_auc": 0.80, "log_loss": 0.2}, True, "promoted"),
        ({"roc_auc": 0.70, "log_loss": 0.3}, {"roc_auc": 0.705, "log_loss": 0.2}, False, "margin"),
        ({"roc_auc": 0.70, "log_loss": 0.3}, {"roc_auc": 0.80, "log_loss": 0.9}, False, "log loss"),
        ({"roc_auc": None, "log_loss": 0.3}, {"roc_auc": 0.8, "log_loss": 0.2}, False, "one class"),
        ({"roc_auc": 0.70, "log_loss": 0.3}, {"roc_auc": 0.71, "log_loss": 0.2}, True, "promoted"),
    ],
)
def test_judge(champion: dict, challenger: dict, promote: bool, words: str) -> None:
    verdict = judge(champion, challenger, margin=0.01, log_loss_tolerance=0.05)
    assert verdict.promote is promote
    assert words in verdict.detail
