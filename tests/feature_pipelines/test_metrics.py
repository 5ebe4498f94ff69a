"""The batch-fed lag histogram exposes what prometheus_client's own Histogram would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from feature_pipelines.metrics import BatchHistogram

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0, 10.0)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in (f"{name}_bucket", f"{name}_count", f"{name}_sum"):
                out[(sample.name, sample.labels.get("le", ""))] = sample.value
    return out


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.one_of(
                st.floats(min_value=-1.0, max_value=100.0, allow_nan=False),
                st.sampled_from(BUCKETS),  # values on a bound count in that bucket (le)
            ),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_same_exposition_as_prometheus_histogram(batches: list[list[float]]) -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lag_seconds", "doc", BUCKETS, registry=ours_registry)
    theirs = Histogram("lag_seconds", "doc", buckets=BUCKETS, registry=theirs_registry)
    for batch in batches:
        ours.observe_many(batch)
        for value in batch:
            theirs.observe(value)
    got, want = _samples(ours_registry, "lag_seconds"), _samples(theirs_registry, "lag_seconds")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        BatchHistogram("x_seconds", "doc", (0.1, 0.1), registry=None)
    with pytest.raises(ValueError, match="distinct"):
        BatchHistogram("x_seconds", "doc", (), registry=None)
