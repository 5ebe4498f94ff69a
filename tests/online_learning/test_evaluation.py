"""Progressive metrics and the ADWIN drift monitor (golden detection index)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

from online_learning.evaluation import BinnedROCAUC, DriftMonitor, ProgressiveMetrics

# Error rate 0.1 for 1000 examples, then 0.4 (seed 42): ADWIN(delta=0.002) fires once, at the
# 56th example after the change (0-based index 1055). Recorded from river 0.26.1.
GOLDEN_SEED = 42
GOLDEN_ALARMS = [1055]


def error_stream(seed: int, n: int = 2000, change: int = 1000) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (0.1 if i < change else 0.4)) for i in range(n)]


def test_drift_golden_detection_index() -> None:
    monitor = DriftMonitor()
    for e in error_stream(GOLDEN_SEED):
        monitor.update_error(e)
    assert monitor.n == 2000
    assert monitor.alarms, "no drift detected"
    assert all(a >= 1000 for a in monitor.alarms), (
        f"false alarm before the change: {monitor.alarms}"
    )
    assert monitor.alarms == GOLDEN_ALARMS


def test_drift_no_alarm_without_change() -> None:
    monitor = DriftMonitor()
    for e in error_stream(GOLDEN_SEED, change=10**9):
        monitor.update_error(e)
    assert monitor.alarms == []


def test_falling_error_is_an_improvement_not_an_alarm() -> None:
    monitor = DriftMonitor()
    for e in reversed(error_stream(GOLDEN_SEED)):
        monitor.update_error(e)
    assert monitor.alarms == []
    assert monitor.improvements == 1


def test_drift_through_labels_and_scores() -> None:
    zero_one = DriftMonitor(error="zero_one")
    absolute = DriftMonitor()
    assert zero_one.error_of(True, 0.7) == 0.0 and zero_one.error_of(False, 0.7) == 1.0
    assert absolute.error_of(True, 0.7) == pytest.approx(0.3)
    for e in error_stream(GOLDEN_SEED):
        # an error of 1 is a confident wrong score, 0 a confident right one
        zero_one.update(label=True, score=1.0 - e)
    assert zero_one.alarms == GOLDEN_ALARMS


def test_reset_forgets_history_but_keeps_index() -> None:
    monitor = DriftMonitor()
    for e in error_stream(GOLDEN_SEED)[:1500]:
        monitor.update_error(e)
    monitor.reset()
    assert monitor.n == 1500 and monitor.estimation == 0.0


def test_metrics_match_river_metrics() -> None:
    rng = random.Random(1)
    pm = ProgressiveMetrics(window=50)
    auc, loss = metrics.ROCAUC(), metrics.LogLoss()
    rolling = metrics.LogLoss()
    pairs = [(rng.random() < 0.3, rng.random()) for _ in range(300)]
    for y, p in pairs:
        pm.update(y, p)
        auc.update(y, p)
        loss.update(y, p)
    for y, p in pairs[-50:]:
        rolling.update(y, p)
    report = pm.report()
    assert report["n"] == 300 and report["n_fraud"] == sum(y for y, _ in pairs)
    assert report["roc_auc"] == auc.get()
    assert report["log_loss"] == loss.get()
    assert report["rolling_log_loss"] == pytest.approx(rolling.get(), abs=1e-9)
    assert all(math.isfinite(v) for v in report.values())


# Scores on and next to River's thresholds (i/9, the outer two moved by 1e-7), at 0 and 1, and
# anywhere in between; labels as bools and as 0/1.
_SCORES = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),
    st.sampled_from([i / 9 for i in range(10)] + [-1e-7, 1e-7, 1 + 1e-7, 1 - 1e-7, 0.5]),
)
_EXAMPLES = st.lists(st.tuples(st.booleans() | st.sampled_from([0, 1]), _SCORES), max_size=300)


@settings(max_examples=200, deadline=None)
@given(examples=_EXAMPLES, window=st.integers(min_value=1, max_value=40))
def test_binned_roc_auc_is_rivers_roc_auc(examples: list[tuple[bool, float]], window: int) -> None:
    """The same value as River's, exactly, after every example: cumulative and rolling (where
    examples leave the window through ``revert``)."""
    ours, theirs = BinnedROCAUC(), metrics.ROCAUC()
    ours_rolling = utils.Rolling(BinnedROCAUC, window_size=window)
    theirs_rolling = utils.Rolling(metrics.ROCAUC, window_size=window)
    for y, p in examples:
        ours.update(y, p)
        theirs.update(y, p)
        ours_rolling.update(y, p)
        theirs_rolling.update(y, p)
        assert ours.get() == theirs.get()
        assert ours_rolling.get() == theirs_rolling.get()


def test_binned_roc_auc_separates_good_from_bad_scores() -> None:
    good, inverted = BinnedROCAUC(), BinnedROCAUC()
    for y, p in [(True, 0.9), (True, 0.7), (False, 0.2), (False, 0.4)]:
        good.update(y, p)
        inverted.update(y, 1 - p)
    assert good.get() == 1.0 and inverted.get() == 0.0
