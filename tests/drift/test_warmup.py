"""The warm-up rule: inputs whose features are still filling up are not judged for drift.

Pure cases over the sample features, then ``run_check`` on the real Postgres: a world whose
only change is a count growing from an empty database reads ok while the count fills up, and
the same growth is drift once the count's window was full before the reference began."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drift import run_check
from drift.warmup import NAMESPACE, assess, origin_key
from online_learning.features import SCORING_FEATURES
from online_learning.vector import SERVED_FEATURES
from tests.drift.check_fixtures import CheckWorld, check_world, vectors

__all__ = ["check_world"]

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PAYMENTS = origin_key("payments", "created_at")
OUTCOMES = origin_key("payment_outcomes", "reported_at")


def _judge(
    names: list[str], start: datetime, origins: dict[str, datetime | None] | None = None
) -> dict[str, str]:
    origins = {PAYMENTS: T0, OUTCOMES: T0} if origins is None else origins
    return assess(names, SCORING_FEATURES, SERVED_FEATURES, origins, start).unjudged


def test_a_window_is_judged_once_full_before_the_reference() -> None:
    names = [
        "payment_count_10m",
        "payment_count_1h",
        "payment_count_24h",
        "merchant_fraud_count_7d",
    ]
    at_1h = _judge(names, T0 + timedelta(hours=1))
    assert set(at_1h) == {"payment_count_24h", "merchant_fraud_count_7d"}
    assert "fills up until" in at_1h["payment_count_24h"]
    assert set(_judge(names, T0 + timedelta(hours=1) - timedelta(seconds=1))) == {
        "payment_count_1h",
        "payment_count_24h",
        "merchant_fraud_count_7d",
    }
    assert _judge(names, T0 + timedelta(days=7)) == {}


def test_lifetime_features_are_never_judged() -> None:
    got = _judge(
        ["payment_count_lifetime", "amount_sum_lifetime_missing"], T0 + timedelta(days=365)
    )
    assert set(got) == {"payment_count_lifetime", "amount_sum_lifetime_missing"}
    assert "grows for ever" in got["payment_count_lifetime"]


def test_derived_and_missing_inputs_follow_their_features() -> None:
    start = T0 + timedelta(hours=2)
    assert set(
        _judge(
            ["amount_to_mean_24h", "amount_mean_24h_missing", "amount", "channel_web", "hour_sin"],
            start,
        )
    ) == {"amount_to_mean_24h", "amount_mean_24h_missing"}


def test_a_namespace_younger_than_its_tables_fills_up_from_its_own_start() -> None:
    names = ["payment_count_1h"]
    started = T0 + timedelta(days=3)
    origins: dict[str, datetime | None] = {PAYMENTS: T0, OUTCOMES: T0, NAMESPACE: started}
    got = _judge(names, started + timedelta(minutes=59), origins)
    assert "the namespace's first payment" in got["payment_count_1h"]
    assert _judge(names, started + timedelta(hours=1), origins) == {}


def test_unknown_origin_or_reference_is_not_judged() -> None:
    got = _judge(["payment_count_1h"], T0 + timedelta(days=2), origins={})
    assert "holds no created_at yet" in got["payment_count_1h"]
    got = _judge(["payment_count_1h", "amount"], None)  # type: ignore[arg-type]
    assert set(got) == {"payment_count_1h"}


def _growing(world: CheckWorld, now: datetime) -> None:
    """A stable world but for payment_count_1h, which grows as a new database fills up."""
    before = vectors(1, 400, shifted=False)
    after = vectors(2, 400, shifted=False)
    for features, _label, _score in after:
        features["payment_count_1h"] += 6.0
    world.add(before, start=now - timedelta(minutes=50))
    world.add(after, start=now - timedelta(minutes=12))


@pytest.mark.integration
def test_a_filling_count_is_no_warning_until_its_window_was_full(check_world: CheckWorld) -> None:
    now = datetime.now(UTC)
    world = check_world
    settings = world.settings.model_copy(update={"drift_warmup": True})
    _growing(world, now)

    # the payments began 70 min ago: the 1 h count was still filling when the reference began
    world.origins({PAYMENTS: now - timedelta(minutes=70), OUTCOMES: now - timedelta(days=30)})
    report = run_check(settings, now=now)
    assert report.status == "ok", report.summary
    unjudged = report.report["warmup"]["unjudged"]
    assert "payment_count_1h" in unjudged and "amount" not in unjudged
    assert "payment_count_1h" not in report.report["features"]
    assert "Not judged" in report.html

    # the same data, but the payments and the namespace began three hours ago: drift
    world.origins(
        {
            PAYMENTS: now - timedelta(hours=3),
            OUTCOMES: now - timedelta(days=30),
            NAMESPACE: now - timedelta(hours=3),
        }
    )
    report = run_check(settings, now=now + timedelta(seconds=1))
    assert "payment_count_1h" in report.summary["drifted_features"], report.summary
    assert report.status in ("warning", "drift")

    # without the rule, the filling count is a warning too
    off = run_check(world.settings, now=now + timedelta(seconds=2))
    assert "payment_count_1h" in off.summary["drifted_features"]
