"""Training sets, the pure parts: the learner's label rule in event time, the file's columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freshloop.core.settings import Settings
from online_learning.exceptions import TrainingSetError
from online_learning.services import SERVICES
from online_learning.training_set import Label, _schema, build_training_set, label_of
from online_learning.vector import input_names

T = datetime(2026, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=24)


@pytest.mark.parametrize(
    ("outcome", "negatives", "now", "expected"),
    [
        ((True, T + H / 12), True, T + H * 2, Label(True, "outcome", T + H / 12)),
        ((True, T + H), True, T + H * 2, Label(True, "outcome", T + H)),  # at the horizon: in
        ((True, T + H + timedelta(seconds=1)), True, T + H * 2, Label(False, "horizon", T + H)),
        ((True, T + H * 3), False, T + H * 4, Label(True, "outcome", T + H * 3)),
        (None, True, T + H, Label(False, "horizon", T + H)),
        (None, True, T + H - timedelta(seconds=1), Label(None, "pending", None)),
        (None, False, T + H * 2, Label(None, "none", None)),
        (
            (False, T + timedelta(minutes=1)),
            True,
            T + timedelta(minutes=2),
            Label(False, "outcome", T + timedelta(minutes=1)),
        ),
    ],
)
def test_labels_follow_the_learners_rule(outcome, negatives, now, expected) -> None:  # noqa: ANN001
    assert label_of(T, outcome, H, negatives, now) == expected


def test_the_file_holds_the_services_vector_after_the_payment_columns() -> None:
    names = input_names(SERVICES["fraud_channels"].features)
    schema = _schema(names)
    assert schema.names[:8] == [
        "payment_id",
        "customer_id",
        "merchant_id",
        "created_at",
        "committed_at",
        "label",
        "label_source",
        "labelled_at",
    ]
    assert tuple(schema.names[8:]) == names
    assert "distinct_channels_24h" in schema.names


def test_a_bad_range_is_refused_before_connecting(tmp_path) -> None:  # noqa: ANN001
    s = Settings(postgres_dsn="postgresql://x@127.0.0.1:1/x")
    with pytest.raises(TrainingSetError, match="is not before"):
        build_training_set(s, T, T, tmp_path / "x.parquet")
    with pytest.raises(TrainingSetError, match="no time zone"):
        build_training_set(s, T.replace(tzinfo=None), T + H, tmp_path / "x.parquet")
