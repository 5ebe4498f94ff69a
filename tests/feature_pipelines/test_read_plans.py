"""Read plans are shared by reads in one granule of read time: a shared plan must count exactly
the buckets a plan built for that very time counts, across bucket edges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import SAMPLE_FEATURES, Feature, FeatureSet
from feature_pipelines.catalog import CUSTOMER, MERCHANT
from feature_pipelines.readout import ReadPlan
from feature_pipelines.store_read import _Plans

FEATURES = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        Feature(
            "refunds_7m",
            MERCHANT,
            "payments",
            "created_at",
            "count",
            window=timedelta(minutes=7),  # buckets of 7 s: granule gcd(7, 60, ...) = 1 s
        ),
    ]
)
LIFETIME_ONLY = FeatureSet.of(
    [Feature("payments_ever", CUSTOMER, "payments", "created_at", "count")]
)
T0 = 1_780_000_000_000_000  # a read time in 2026, microseconds


def test_granules() -> None:
    assert _Plans(SAMPLE_FEATURES).granule == {"customer": 10_000_000, "merchant": 60_000_000}
    assert _Plans(FEATURES).granule["merchant"] == 1_000_000
    assert _Plans(LIFETIME_ONLY).granule == {"customer": 0}


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(
        st.integers(min_value=-(10**6), max_value=10**6)
        | st.sampled_from([0, 1, -1])
        | st.integers(min_value=0, max_value=3 * 86_400 * 10**6),
        min_size=1,
        max_size=30,
    ),
    edge=st.sampled_from([1, 7, 10, 60, 1440, 10_080]),
)
def test_shared_plan_counts_the_buckets_of_its_own_read_time(offsets: list[int], edge: int) -> None:
    plans = _Plans(FEATURES)
    for offset in offsets:
        # read times on and next to bucket edges of every width, in any order
        t = (T0 // (edge * 10**6)) * edge * 10**6 + offset
        for entity in ("customer", "merchant"):
            got = plans.at(entity, t)
            want = ReadPlan(FEATURES.for_entity(entity), t)
            assert got.plan.wanted == want.wanted, (entity, t)


def test_lifetime_only_entity_has_one_plan() -> None:
    plans = _Plans(LIFETIME_ONLY)
    assert plans.at("customer", T0) is plans.at("customer", T0 + 86_400 * 10**6)


def test_unknown_entity_is_named() -> None:
    with pytest.raises(KeyError, match="unknown entity 'shop': choose from customer, merchant"):
        _Plans(FEATURES).at("shop", T0)
