"""Drift statistics over two samples of one feature: pure numpy/scipy, plain values out.

Every feature gets its PSI on the reference's bins (an effect size people know: < 0.1 stable,
0.1-0.25 moderate, > 0.25 major). Whether it DRIFTED is decided by one test, chosen by kind and
by the size of the smaller window (the rule Evidently documents, for the same reason: with
thousands of rows a p-value flags differences too small to matter, so large samples are judged
by an effect size instead):

=============  =====================================  =====================================
kind           smaller window < ``large_sample``      smaller window >= ``large_sample``
=============  =====================================  =====================================
numeric        two-sample KS, p < ``p_value``         PSI >= ``psi_threshold``
categorical    chi-square on counts, p < ``p_value``  Jensen-Shannon distance >= ``js_threshold``
=============  =====================================  =====================================

A feature is categorical when every value of both windows is 0 or 1 (indicators: one-hot
channels, ``*_missing`` flags, labels) or it is named in ``categorical``. With fewer than
``min_samples`` rows in either window the feature is not judged (``method="insufficient"``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

__all__ = [
    "EPSILON",
    "FeatureDrift",
    "Method",
    "Thresholds",
    "categorical_distribution",
    "chi_square",
    "dataset_drift_share",
    "feature_drift",
    "histogram",
    "is_categorical",
    "jensen_shannon",
    "ks_test",
    "log_loss",
    "psi",
    "quantile_edges",
    "roc_auc",
    "summarize",
]

EPSILON = 1e-4  # proportion floor of an empty bin in PSI: keeps log(0) out, caps its weight

Method = Literal["ks", "psi", "chi2", "jensen_shannon", "insufficient"]

_Float = NDArray[np.float64]


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (see the module docstring for the rule)."""

    p_value: float = 0.01
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    large_sample: int = 1000
    min_samples: int = 30
    bins: int = 10


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison: the deciding test, its statistic, and PSI for everyone."""

    name: str
    kind: Literal["numeric", "categorical"]
    method: Method
    statistic: float | None  # KS D, PSI, chi-square or JS distance: whichever ``method`` is
    p_value: float | None  # for KS and chi-square
    threshold: float  # the p-value or effect-size threshold ``method`` was judged by
    psi: float | None
    drifted: bool
    n_reference: int
    n_current: int
    reference_mean: float | None = None
    current_mean: float | None = None
    # for the report's charts: bin edges (numeric) or levels (categorical), and proportions
    bins: list[float] = field(default_factory=list)
    reference_hist: list[float] = field(default_factory=list)
    current_hist: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(values: ArrayLike) -> _Float:
    """Finite floats only (NaN/inf/None are data-quality findings, not drift evidence)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def quantile_edges(reference: ArrayLike, bins: int = 10) -> _Float:
    """Inner bin edges: the reference's distinct deciles (``bins`` quantiles).

    The outer bins are open (-inf, e0) and [ek, +inf), so every current value falls in one.
    A constant reference gives one edge and thus two bins (below it / at or above it).

    >>> quantile_edges([1, 2, 3, 4], bins=2).tolist()
    [2.5]
    """
    ref = _clean(reference)
    if ref.size == 0:
        msg = "quantile_edges needs at least one finite reference value"
        raise ValueError(msg)
    qs = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    edges = np.unique(qs)
    return edges if edges.size else np.unique(ref[:1])


def histogram(values: ArrayLike, edges: _Float) -> _Float:
    """Proportions of ``values`` in the bins (-inf, e0), [e0, e1), ..., [ek, +inf)."""
    arr = _clean(values)
    counts = np.bincount(np.searchsorted(edges, arr, side="right"), minlength=edges.size + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def _psi_of(ref_p: _Float, cur_p: _Float, epsilon: float = EPSILON) -> float:
    ref_p = np.clip(ref_p, epsilon, None)
    cur_p = np.clip(cur_p, epsilon, None)
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


def psi(
    reference: ArrayLike, current: ArrayLike, bins: int = 10, epsilon: float = EPSILON
) -> float:
    """Population stability index of ``current`` against ``reference``'s quantile bins.

    ``sum((c - r) * ln(c / r))`` over the bins, each proportion floored at ``epsilon``.

    >>> psi([1, 2, 3, 4], [1, 2, 3, 4], bins=2)
    0.0
    """
    edges = quantile_edges(reference, bins)
    return _psi_of(histogram(reference, edges), histogram(current, edges), epsilon)


def ks_test(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D statistic, two-sided p-value), as scipy computes."""
    res = sps.ks_2samp(_clean(reference), _clean(current))
    return float(res.statistic), float(res.pvalue)


def categorical_distribution(
    reference: Sequence[Any], current: Sequence[Any]
) -> tuple[list[Any], _Float, _Float]:
    """Levels seen in either window (sorted by their text) and the counts of each window."""
    levels = sorted({*reference, *current}, key=str)
    index = {level: i for i, level in enumerate(levels)}
    ref = np.zeros(len(levels))
    cur = np.zeros(len(levels))
    for v in reference:
        ref[index[v]] += 1
    for v in current:
        cur[index[v]] += 1
    return levels, ref, cur


def chi_square(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[float, float]:
    """Chi-square test of homogeneity on a 2 x k table of counts: (statistic, p-value).

    Levels absent from both windows are dropped; with one level left nothing can differ
    (statistic 0, p 1). No continuity correction, so a 2 x 2 table matches the textbook sum.
    """
    table = np.vstack([np.asarray(ref_counts, float), np.asarray(cur_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    res = sps.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def jensen_shannon(ref_counts: ArrayLike, cur_counts: ArrayLike) -> float:
    """Jensen-Shannon DISTANCE (square root of the divergence), base 2: 0 same, 1 disjoint."""
    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    value = float(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    return 0.0 if math.isnan(value) else value


def is_categorical(reference: ArrayLike, current: ArrayLike) -> bool:
    """Indicator features: every finite value of both windows is 0 or 1."""
    both = np.concatenate([_clean(reference), _clean(current)])
    return bool(both.size) and bool(np.isin(both, (0.0, 1.0)).all())


def _mean(arr: _Float) -> float | None:
    return float(arr.mean()) if arr.size else None


def feature_drift(
    name: str,
    reference: ArrayLike,
    current: ArrayLike,
    thresholds: Thresholds | None = None,
    *,
    categorical: bool | None = None,
) -> FeatureDrift:
    """Compare one feature's two windows; ``categorical=None`` infers the kind (indicators)."""
    t = thresholds or Thresholds()
    ref, cur = _clean(reference), _clean(current)
    kind: Literal["numeric", "categorical"] = (
        "categorical"
        if (is_categorical(ref, cur) if categorical is None else categorical)
        else "numeric"
    )
    n_ref, n_cur = int(ref.size), int(cur.size)
    method: Method
    p_value: float | None = None
    psi_value: float | None = None
    bins: list[float] = []
    ref_hist: list[float] = []
    cur_hist: list[float] = []
    if min(n_ref, n_cur) < t.min_samples or n_ref == 0 or n_cur == 0:
        method, statistic, threshold, drifted = "insufficient", None, float(t.min_samples), False
    else:
        large = min(n_ref, n_cur) >= t.large_sample
        if kind == "categorical":
            levels, rc, cc = categorical_distribution(ref.tolist(), cur.tolist())
            rp, cp = rc / rc.sum(), cc / cc.sum()
            bins = [float(x) for x in levels]
        else:
            edges = quantile_edges(ref, t.bins)
            rp, cp = histogram(ref, edges), histogram(cur, edges)
            bins = edges.tolist()
        ref_hist, cur_hist = rp.tolist(), cp.tolist()
        psi_value = _psi_of(rp, cp)
        if kind == "categorical" and large:
            method, threshold = "jensen_shannon", t.js_threshold
            statistic = jensen_shannon(rc, cc)
            drifted = statistic >= threshold
        elif kind == "categorical":
            method, threshold = "chi2", t.p_value
            statistic, p_value = chi_square(rc, cc)
            drifted = p_value < threshold
        elif large:
            method, threshold = "psi", t.psi_threshold
            statistic = psi_value
            drifted = statistic >= threshold
        else:
            method, threshold = "ks", t.p_value
            statistic, p_value = ks_test(ref, cur)
            drifted = p_value < threshold
    return FeatureDrift(
        name=name,
        kind=kind,
        method=method,
        statistic=statistic,
        p_value=p_value,
        threshold=threshold,
        psi=psi_value,
        drifted=bool(drifted),
        n_reference=n_ref,
        n_current=n_cur,
        reference_mean=_mean(ref),
        current_mean=_mean(cur),
        bins=bins,
        reference_hist=ref_hist,
        current_hist=cur_hist,
    )


def dataset_drift_share(results: Collection[FeatureDrift]) -> float | None:
    """Share of the JUDGED features that drifted; None when none could be judged."""
    judged = [r for r in results if r.method != "insufficient"]
    if not judged:
        return None
    return sum(r.drifted for r in judged) / len(judged)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Exact ROC AUC (Mann-Whitney U with tied ranks); None without both classes.

    >>> roc_auc([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.4])
    0.875
    """
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = sps.rankdata(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def log_loss(labels: ArrayLike, scores: ArrayLike, eps: float = 1e-15) -> float | None:
    """Mean binary cross-entropy with scores clipped to [eps, 1 - eps]; None when empty."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size == 0:
        return None
    p = np.clip(np.asarray(scores, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def summarize(results: Mapping[str, FeatureDrift]) -> dict[str, Any]:
    """Drifted feature names (sorted) and the share, for a report's headline."""
    values = list(results.values())
    return {
        "dataset_drift_share": dataset_drift_share(values),
        "drifted_features": sorted(r.name for r in values if r.drifted),
        "n_features": len(values),
        "n_judged": sum(r.method != "insufficient" for r in values),
    }
