"""The pure side of ``make month``: key classes, expired buckets, the ``flat`` verdict, and the
state page keeping its "State budget" section when regenerated."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import bench.month_curves as month_curves
from bench.month_curves import curves_of, expired_fields, key_class, verdict
from bench.month_report import write_state_doc


def test_doctests() -> None:
    assert doctest.testmod(month_curves).failed == 0


def test_key_classes() -> None:
    assert key_class("ns", "ns:e:{merchant:7}") == "e:{merchant"
    assert key_class("ns", "ns:r:{payments:12}") == "r:{payments"
    assert key_class("ns", "ns:offsets:{ns-features}") == "offsets"
    assert key_class("ns", "ns:pred:{99}") == "pred"


def test_expired_fields_counts_only_buckets_past_window_and_slack() -> None:
    windows = {"n_24h": (86_400, 1_440), "d_24h": (86_400, 1_440)}
    t = 10 * 86_400  # day 10
    old = (t - 3 * 86_400) // 1_440  # a bucket of day 7
    fresh = (t - 3_600) // 1_440
    fields = [f"n_24h@{old}", f"d_24h@{old}#42", f"n_24h@{fresh}", "n_lifetime", "_commit_ms"]
    assert expired_fields(fields, windows, t, slack_s=86_400) == 2
    assert expired_fields(fields, windows, t, slack_s=3 * 86_400) == 0


@given(
    base=st.floats(min_value=1, max_value=1e9),
    slope=st.floats(min_value=0, max_value=0.2),
)
def test_linear_growth_is_flat_only_within_tolerance(base: float, slope: float) -> None:
    points = [(float(d), base * (1 + slope * d / 30)) for d in range(31)]
    v = verdict(points, settles_after_days=8)
    assert v.from_day == 20 and v.to_day == 30
    # each end is the median of three daily samples: days 20-22 and 28-30
    growth = (points[29][1] - points[21][1]) / points[21][1]
    assert math.isclose(v.growth or 0.0, growth, rel_tol=1e-9, abs_tol=1e-12)
    assert v.flat == (growth <= 0.05)


def test_a_cycle_sampled_at_any_phase_is_flat_but_a_step_is_not() -> None:
    """A value that saw-tooths with a cycle (a checkpoint interval) is flat whatever phase the
    daily samples hit; a step that stays is growth."""
    cycle = [(float(d), 4000.0 + (900.0 if d % 3 == 1 else 0.0)) for d in range(31)]
    assert verdict(cycle, settles_after_days=8).flat is True
    step = [(float(d), 4000.0 + (900.0 if d >= 25 else 0.0)) for d in range(31)]
    assert verdict(step, settles_after_days=8).flat is False


def test_verdict_waits_for_the_curve_to_settle_and_handles_zero() -> None:
    short = [(0.0, 1.0), (1.0, 5.0), (2.0, 9.0), (3.0, 9.0)]
    assert verdict(short, settles_after_days=8.1).flat is None
    assert verdict(short, settles_after_days=1.0).flat is False  # day 1 -> 3: +80%
    assert verdict(short, settles_after_days=1.9).flat is True  # day 2 -> 3: 0%
    assert verdict([(0.0, 0.0), (2.0, 0.0), (5.0, 0.0)], 1).flat is True
    grows = verdict([(0.0, 0.0), (2.0, 0.0), (5.0, 3.0)], 1)
    assert grows.flat is False and grows.growth == math.inf
    assert verdict([(0.0, None), (1.0, None)], 0).flat is None


def test_missing_key_classes_count_as_zero() -> None:
    samples = [
        {"day": 0, "values": {"redis.used_memory": 5}},
        {"day": 1, "values": {"redis.used_memory": 6, "redis.keys.pred": 3, "rss.learner": 9}},
    ]
    curves = curves_of(samples)
    assert curves["redis.keys.pred"] == [(0.0, 0.0), (1.0, 3.0)]
    assert curves["rss.learner"] == [(0.0, None), (1.0, 9.0)]


def test_state_page_keeps_its_budget_section(tmp_path: Path) -> None:
    samples = [
        {"day": d, "values": {"redis.used_memory": 1000 + d, "rss.pipeline": 5e7}}
        for d in range(12)
    ]
    verdicts = {name: verdict(points, 1).as_dict() for name, points in curves_of(samples).items()}
    result = {
        "config": {
            "days": 11,
            "scale": 2160,
            "customers": 10,
            "merchants": 2,
            "rate": 5,
            "outcome_share": 0.02,
            "tolerance": 0.05,
            "last_days": 10,
        },
        "event_time": {"start": "2025-01-01T00:00:00+00:00", "end": "2025-01-12T00:00:00+00:00"},
        "wall_seconds": 500,
        "settings": {"label_horizon_s": 86_400},
        "verify": {
            "entities_checked": 12,
            "values_checked": 99,
            "mismatches": 0,
            "event_time_read": True,
        },
        "learned": {
            "outcomes": 3,
            "outcomes_of_scored": 3,
            "learned_from_outcome": 3,
            "outcomes_not_learned": 0,
            "outcomes_learned_as_horizon": 0,
            "learned_from_horizon": 40,
            "scored_twice": 0,
            "exactly_once": True,
        },
        "flat": {n: v["flat"] for n, v in verdicts.items()},
        "verdicts": verdicts,
        "samples": samples,
    }
    page = write_state_doc(result, tmp_path)
    text = page.read_text()
    assert "## State budget" in text and "Placeholder" in text
    assert "| `redis.used_memory` |" in text and (tmp_path / "state" / "redis.png").exists()
    budget = "| class | bound |\n| --- | --- |\n| pred | 25 h |"
    page.write_text(text.replace(text.split("## State budget\n", 1)[1], f"\n{budget}\n"))
    again = write_state_doc(result, tmp_path).read_text()
    assert budget in again and "Placeholder" not in again


def test_logged_predictions_may_move_by_one_checkpoint_in_keys_and_bytes() -> None:
    """A learned prediction waits for the next checkpoint, so both of its curves get one
    checkpoint's examples of slack (bytes at the largest bytes per key sampled), and a rise of
    that size reads flat where one twice as large does not."""
    from bench.month import _checkpoint_slack
    from freshloop.core.settings import Settings

    s = Settings(checkpoint_every_examples=100)
    samples = [
        {"day": 2.0, "values": {"redis.keys.pred": 2000, "redis.bytes.pred": 3_800_000}},
        {"day": 3.0, "values": {"redis.keys.pred": 2100, "redis.bytes.pred": 4_200_000}},
    ]
    assert _checkpoint_slack("redis.keys.pred", samples, s) == 100
    assert _checkpoint_slack("redis.bytes.pred", samples, s) == 100 * 2000
    assert _checkpoint_slack("redis.keys.e:{customer", samples, s) == 0
    slack = _checkpoint_slack("redis.bytes.pred", samples, s)
    assert verdict([(2.0, 3.8e6), (3.0, 3.8e6 + slack)], 1.0, slack=slack).flat
    assert not verdict([(2.0, 3.8e6), (3.0, 3.8e6 + 2 * slack)], 1.0, slack=slack).flat
