"""Drift statistics: golden values with fixed seeds, hand computations, scipy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from drift import stats

GOLD = pytest.approx


def _normal(seed: int, n: int, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, n)


# ---- golden values: the test each case gets and what it says ------------------------------------
def test_small_numeric_no_drift_golden() -> None:
    rng = np.random.default_rng(42)
    ref, cur = rng.normal(0, 1, 500), rng.normal(0, 1, 500)
    r = stats.feature_drift("x", ref, cur)
    assert (r.kind, r.method, r.drifted) == ("numeric", "ks", False)
    assert r.statistic == GOLD(0.03, abs=1e-12)
    assert r.p_value == GOLD(0.978250151785604, rel=1e-9)
    assert r.psi == GOLD(0.017244581099682948, rel=1e-9)


def test_small_numeric_mean_shift_golden() -> None:
    rng = np.random.default_rng(42)
    ref, _, cur = rng.normal(0, 1, 500), rng.normal(0, 1, 500), rng.normal(0.5, 1, 500)
    r = stats.feature_drift("x", ref, cur)
    assert (r.method, r.drifted) == ("ks", True)
    assert r.statistic == GOLD(0.244, abs=1e-12)
    assert r.p_value == GOLD(1.798185383845134e-13, rel=1e-6)
    assert r.psi == GOLD(0.2867006879804845, rel=1e-9)


def test_large_numeric_judged_by_psi_golden() -> None:
    rng = np.random.default_rng(7)
    ref, same, wider = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), rng.normal(0, 2, 5000)
    stable = stats.feature_drift("x", ref, same)
    assert (stable.method, stable.drifted) == ("psi", False)
    assert stable.statistic == GOLD(0.002098500473717143, rel=1e-9)
    drifted = stats.feature_drift("x", ref, wider)
    assert (drifted.method, drifted.drifted) == ("psi", True)
    assert drifted.statistic == GOLD(0.4748968871007377, rel=1e-9)
    # the KS p-value on the stable pair would be far from 1 at this size; PSI stays tiny
    assert drifted.p_value is None


def test_small_categorical_chi_square_golden() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.3).astype(float)
    b = (rng.random(400) < 0.3).astype(float)
    c = (rng.random(400) < 0.45).astype(float)
    same, moved = stats.feature_drift("f", a, b), stats.feature_drift("f", a, c)
    assert (same.kind, same.method, same.drifted) == ("categorical", "chi2", False)
    assert same.statistic == GOLD(2.327272727272727, rel=1e-9)
    assert same.p_value == GOLD(0.12712442894245313, rel=1e-9)
    assert (moved.method, moved.drifted) == ("chi2", True)
    assert moved.p_value == GOLD(6.611979503254278e-05, rel=1e-6)


def test_large_categorical_jensen_shannon_golden() -> None:
    rng = np.random.default_rng(5)
    a = (rng.random(3000) < 0.3).astype(float)
    b = (rng.random(3000) < 0.3).astype(float)
    c = (rng.random(3000) < 0.7).astype(float)
    same, moved = stats.feature_drift("f", a, b), stats.feature_drift("f", a, c)
    assert (same.method, same.drifted) == ("jensen_shannon", False)
    assert same.statistic == GOLD(0.008287442832708098, rel=1e-9)
    assert (moved.method, moved.drifted) == ("jensen_shannon", True)
    assert moved.statistic == GOLD(0.3407003111484137, rel=1e-9)


def test_too_few_rows_are_not_judged() -> None:
    r = stats.feature_drift("x", _normal(1, 20), _normal(2, 500, loc=9))
    assert (r.method, r.drifted, r.statistic) == ("insufficient", False, None)
    assert stats.dataset_drift_share([r]) is None


# ---- hand computations and scipy cross-checks ----------------------------------------------------
def test_psi_matches_a_hand_computation() -> None:
    ref = [1, 2, 3, 4, 5, 6, 7, 8]  # quartile edges 2.75, 4.5, 6.25 -> 2 rows per bin
    cur = [1, 1, 1, 1, 5, 6, 7, 8]  # 4, 0, 2, 2 of 8
    edges = stats.quantile_edges(ref, bins=4)
    assert edges.tolist() == [2.75, 4.5, 6.25]
    r = [0.25, 0.25, 0.25, 0.25]
    c = [0.5, stats.EPSILON, 0.25, 0.25]  # the empty bin is floored at epsilon
    hand = sum((ci - ri) * math.log(ci / ri) for ci, ri in zip(c, r, strict=True))
    assert stats.psi(ref, cur, bins=4) == GOLD(hand, rel=1e-12)
    assert stats.psi(ref, ref, bins=4) == 0.0


def test_values_beyond_the_reference_fall_in_the_open_outer_bins() -> None:
    edges = stats.quantile_edges([0, 1, 2, 3], bins=2)
    assert stats.histogram([-100, 100, 100, 1.5], edges).tolist() == [0.25, 0.75]


def test_ks_statistic_equals_the_largest_ecdf_gap() -> None:
    a, b = _normal(11, 300), _normal(12, 250, loc=0.2)
    grid = np.sort(np.concatenate([a, b]))
    ecdf_a = np.searchsorted(np.sort(a), grid, side="right") / a.size
    ecdf_b = np.searchsorted(np.sort(b), grid, side="right") / b.size
    d, p = stats.ks_test(a, b)
    assert d == GOLD(float(np.max(np.abs(ecdf_a - ecdf_b))), rel=1e-12)
    assert p == GOLD(float(sps.ks_2samp(a, b).pvalue), rel=1e-12)


def test_chi_square_matches_the_textbook_sum() -> None:
    ref, cur = np.array([30.0, 50.0, 20.0]), np.array([20.0, 40.0, 40.0])
    table = np.vstack([ref, cur])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    hand = float(((table - expected) ** 2 / expected).sum())
    stat, p = stats.chi_square(ref, cur)
    assert stat == GOLD(hand, rel=1e-12)
    assert p == GOLD(float(sps.chi2.sf(hand, df=2)), rel=1e-9)
    assert stats.chi_square([5, 0], [7, 0]) == (0.0, 1.0)  # one level: nothing can differ


def test_jensen_shannon_bounds_and_a_hand_value() -> None:
    assert stats.jensen_shannon([1, 0], [0, 1]) == GOLD(1.0)
    assert stats.jensen_shannon([3, 1], [6, 2]) == GOLD(0.0, abs=1e-12)
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    kl = lambda x, y: float(np.sum(x * np.log2(x / y)))  # noqa: E731
    assert stats.jensen_shannon([5, 5], [9, 1]) == GOLD(math.sqrt((kl(p, m) + kl(q, m)) / 2))


def test_roc_auc_and_log_loss_by_hand() -> None:
    # pairs (pos, neg): (0.9>0.1) (0.9>0.4) (0.4=0.4 -> 0.5) (0.4>0.1) -> 3.5 / 4
    assert stats.roc_auc([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.4]) == 0.875
    assert stats.roc_auc([1, 1], [0.2, 0.3]) is None
    assert stats.log_loss([1, 0], [0.8, 0.4]) == GOLD(-(math.log(0.8) + math.log(0.6)) / 2)


def test_dataset_drift_share_counts_only_judged_features() -> None:
    rng = np.random.default_rng(9)
    ref = rng.normal(0, 1, 400)
    results = [
        stats.feature_drift("stable", ref, rng.normal(0, 1, 400)),
        stats.feature_drift("moved", ref, rng.normal(3, 1, 400)),
        stats.feature_drift("tiny", ref[:5], ref[:5]),
    ]
    assert stats.dataset_drift_share(results) == 0.5
    assert stats.summarize({r.name: r for r in results})["drifted_features"] == ["moved"]


def test_thresholds_move_the_verdict() -> None:
    rng = np.random.default_rng(42)
    ref, cur = rng.normal(0, 1, 500), rng.normal(0.15, 1, 500)
    strict = stats.feature_drift("x", ref, cur, stats.Thresholds(p_value=0.5))
    lax = stats.feature_drift("x", ref, cur, stats.Thresholds(p_value=1e-9))
    assert strict.p_value == lax.p_value
    assert strict.drifted and not lax.drifted


def test_nan_and_inf_are_left_out_not_counted() -> None:
    r = stats.feature_drift("x", [*_normal(1, 100), math.nan, math.inf], _normal(2, 100))
    assert (r.n_reference, r.n_current) == (100, 100)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=5, max_size=80),
    st.lists(st.floats(-1e6, 1e6), min_size=5, max_size=80),
    st.integers(2, 20),
)
def test_psi_is_non_negative_and_zero_on_itself(
    ref: list[float], cur: list[float], bins: int
) -> None:
    assert stats.psi(ref, cur, bins=bins) >= -1e-12
    assert stats.psi(ref, ref, bins=bins) == GOLD(0.0, abs=1e-12)
    hist = stats.histogram(cur, stats.quantile_edges(ref, bins))
    assert hist.sum() == GOLD(1.0)
