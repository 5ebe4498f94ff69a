"""The bucketed window rule at its edges, for every window of the sample catalog, and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import feature_pipelines.windows as windows
from feature_pipelines import SAMPLE_FEATURES, Feature
from feature_pipelines.reference import contribution, expired_fields, read_values
from feature_pipelines.windows import bucket_range
from tests.feature_pipelines.fixtures import iso
from tests.feature_pipelines.harness import Log, Pipeline, micros

S = 1_000_000
WINDOWED = [f for f in SAMPLE_FEATURES if f.window is not None]


def _row(feature: Feature, e_us: int) -> dict:
    """A row that passes the feature's filter, with event time ``e_us`` (epoch micros)."""
    row = {feature.event_time: e_us, "customer_id": 1, "merchant_id": 1, "amount": "1.00"}
    row.update({c.column: c.equals for c in feature.where})
    return row


def _with_sources(feature: Feature) -> list[Feature]:
    """``feature`` and the features whose fields it reads (the sample mean's sum and count)."""
    names = [n for n in (feature.total_from, feature.count_from) if n]
    return [feature, *(SAMPLE_FEATURES.by_name(n) for n in names)]


def _fields(feature: Feature, row: dict) -> dict[str, str]:
    """What ``row`` writes for ``feature`` and the features it reads from."""
    return {name: str(n) for f in _with_sources(feature) for name, n in contribution(f, row)}


def _counted(feature: Feature, e_us: int, t_us: int) -> bool:
    fields = _fields(feature, _row(feature, e_us))
    value = read_values(_with_sources(feature), fields, t_us)[feature.name]
    return bool(value)


def _interval(feature: Feature, t_us: int) -> tuple[int, int]:
    """[first counted event time, first event time past t's bucket), from the rule's text."""
    w = feature.bucket_seconds * S
    return (((t_us - feature.window_seconds * S) // w + 1) * w, (t_us // w + 1) * w)


def test_the_rule_is_written_in_the_module_docstring() -> None:
    doc = " ".join((windows.__doc__ or "").split())
    assert "w = W / 60" in doc
    assert "b = floor(e / w)" in doc
    assert "floor((t - W) / w) < b <= floor(t / w)" in doc
    assert "[(floor((t - W) / w) + 1) * w, (floor(t / w) + 1) * w)" in doc


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("payment_count_10m", 10),
        ("payment_count_1h", 60),
        ("payment_count_24h", 24 * 60),
        ("merchant_fraud_count_7d", 168 * 60),
    ],
)
def test_bucket_widths_divide_the_window(name: str, width: int) -> None:
    feature = SAMPLE_FEATURES.by_name(name)
    assert feature.bucket_seconds == width
    assert feature.window_seconds == 60 * width


@pytest.mark.parametrize("feature", WINDOWED, ids=lambda f: f.name)
@pytest.mark.parametrize("t_offset", [0, 1, 7 * S + 3, -1])
def test_edges_of_every_window(feature: Feature, t_offset: int) -> None:
    t = micros(datetime(2026, 11, 28, 12, 0, tzinfo=UTC)) + t_offset
    first, end = _interval(feature, t)
    assert _counted(feature, first, t)
    assert not _counted(feature, first - 1, t)
    assert _counted(feature, end - 1, t)  # later than t, but inside t's bucket
    assert not _counted(feature, end, t)
    assert first <= t - feature.window_seconds * S + feature.bucket_seconds * S
    assert first > t - feature.window_seconds * S


@settings(max_examples=300, deadline=None)
@given(
    feature=st.sampled_from(WINDOWED),
    t_us=st.integers(-(10**15), 10**17),
    delta=st.integers(-8 * 86400 * S, 86400 * S),
)
def test_counted_exactly_inside_the_interval(feature: Feature, t_us: int, delta: int) -> None:
    """Also before 1970: bucket numbers floor, they do not truncate toward zero."""
    e_us = t_us + delta
    first, end = _interval(feature, t_us)
    fields = _fields(feature, _row(feature, e_us))
    got = read_values(_with_sources(feature), fields, t_us)[feature.name]
    assert bool(got) == (first <= e_us < end)


@settings(max_examples=300, deadline=None)
@given(
    feature=st.sampled_from(WINDOWED),
    e_us=st.integers(0, 10**16),
    t_us=st.integers(0, 10**16),
    later=st.integers(0, 30 * 86400 * S),
)
def test_expired_fields_are_never_read_again(
    feature: Feature, e_us: int, t_us: int, later: int
) -> None:
    fields = _fields(feature, _row(feature, e_us))
    lo, _hi = bucket_range(feature, t_us)
    expired = expired_fields(_with_sources(feature), list(fields), t_us)
    assert bool(expired) == (e_us // (feature.bucket_seconds * S) <= lo)
    if expired:
        assert not read_values(_with_sources(feature), fields, t_us + later)[feature.name]


def test_cleanup_never_changes_a_read_and_windowed_entities_vanish() -> None:
    pipe, log = Pipeline(SAMPLE_FEATURES), Log()
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    for pk in range(1, 6):
        row = {
            "payment_id": pk,
            "customer_id": 1,
            "merchant_id": 2,
            "amount": "2.50",
            "status": "declined",
            "created_at": iso(t0 - timedelta(minutes=17 * pk)),
        }
        pipe.feed([log.emit("payments", "c", {"payment_id": pk}, None, row)])
        out = {"payment_id": pk, "is_fraud": True, "reported_at": iso(t0)}
        pipe.feed([log.emit("payment_outcomes", "c", {"payment_id": pk}, None, out)])
    for hours in (0, 1, 2, 25, 24 * 7 + 3, 24 * 9):
        t = t0 + timedelta(hours=hours)
        for entity, key in (("customer", 1), ("merchant", 2)):
            feats = SAMPLE_FEATURES.for_entity(entity)
            fields = pipe.hash(entity, key)
            before = pipe.values(entity, key, t)
            for name in expired_fields(feats, list(fields), micros(t)):
                del fields[name]
            assert pipe.values(entity, key, t) == before
    assert pipe.feature_fields("merchant", 2) == {}  # every merchant feature is windowed
    assert set(pipe.feature_fields("customer", 1)) == {
        "payment_count_lifetime",
        "amount_sum_lifetime",
    }
    assert pipe.values("customer", 1, t0 + timedelta(days=9))["amount_sum_lifetime"] == 12.5
