"""The plain values that flow through the online-learning stage: payments, predictions, examples.

They are frozen dataclasses of built-in types so the join and the learner stay pure and their
state can be snapshotted. ``features`` maps are copied on the way in and never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

__all__ = [
    "FeatureValue",
    "LabelSource",
    "LabelledExample",
    "Payment",
    "Prediction",
    "PredictionRecord",
]

FeatureValue = int | Decimal | None
"""What the feature store serves for one feature name."""

LabelSource = Literal["outcome", "horizon"]
"""Where a label came from: a real ``payment_outcomes`` event, or the horizon-negative rule."""


@dataclass(frozen=True)
class Payment:
    """The payment row's own attributes, as decoded from the change event."""

    payment_id: int
    customer_id: int
    merchant_id: int
    amount: Decimal
    channel: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class PredictionRecord:
    """What is logged at prediction time and later joined with the label (no leakage)."""

    features: Mapping[str, float]
    score: float
    model_version: str
    predicted_at: datetime


@dataclass(frozen=True)
class Prediction:
    """A scored payment: the fraud probability, the exact vector it was computed from, and when."""

    payment_id: int
    score: float
    features: Mapping[str, float]
    model_version: str
    created_at: datetime
    predicted_at: datetime

    def record(self) -> PredictionRecord:
        """The part of the prediction the label join needs."""
        return PredictionRecord(
            features=dict(self.features),
            score=self.score,
            model_version=self.model_version,
            predicted_at=self.predicted_at,
        )


@dataclass(frozen=True)
class LabelledExample:
    """A label joined to the features logged when the payment was scored; learned once."""

    payment_id: int
    features: Mapping[str, float]
    label: bool
    score: float
    model_version: str
    predicted_at: datetime
    labelled_at: datetime
    source: LabelSource
