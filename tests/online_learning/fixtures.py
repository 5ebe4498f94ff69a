"""Payments, served features and a seeded, learnable fraud stream for the online-learning tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from online_learning.records import FeatureValue, Payment

__all__ = ["KEY", "OTHER_KEY", "SPECS", "T0", "Row", "make_payment", "synthetic_stream"]

KEY = b"test-signing-key-0123456789abcdef"
OTHER_KEY = b"another-key-0123456789abcdefghij"
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

# Every model spec the wrapper supports is run through the same contract tests.
SPECS: dict[str, object] = {
    "logistic": "river.preprocessing.StandardScaler | river.linear_model.LogisticRegression",
    "hoeffding_tree": [
        {"path": "river.tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}
    ],
    "gaussian_nb": "river.naive_bayes.GaussianNB",
}


def make_payment(
    payment_id: int = 1,
    amount: str = "25.00",
    channel: str = "web",
    created_at: datetime = T0,
) -> Payment:
    return Payment(payment_id, 10, 20, Decimal(amount), channel, "approved", created_at)


@dataclass(frozen=True)
class Row:
    payment: Payment
    served: dict[str, FeatureValue]
    is_fraud: bool


def synthetic_stream(n: int, seed: int, fraud_rate: float = 0.1) -> list[Row]:
    """Payments whose fraud follows the sample data's pattern, with noise so it is not trivial.

    Fraud: a burst (high 10-minute count) of high amounts at risky merchants through ``app``.
    Each signal is noisy and sometimes absent, so no single feature separates the classes.
    """
    rng = random.Random(seed)
    rows: list[Row] = []
    for i in range(n):
        fraud = rng.random() < fraud_rate
        at = T0 + timedelta(seconds=37 * i)
        if fraud:
            amount = rng.uniform(150, 900)
            channel = "app" if rng.random() < 0.7 else rng.choice(["web", "pos"])
            burst = rng.randint(1, 6)
            merchant_fraud = rng.randint(0, 5)
        else:
            amount = rng.lognormvariate(3.3, 0.9)
            channel = rng.choice(["web", "app", "pos"])
            burst = rng.choice([0, 0, 0, 1, 1, 2])
            merchant_fraud = rng.choice([0, 0, 0, 0, 1])
        mean = Decimal(f"{rng.uniform(20, 80):.2f}") if rng.random() < 0.9 else None
        served: dict[str, FeatureValue] = {
            "payment_count_10m": burst,
            "payment_count_1h": burst + rng.randint(0, 3),
            "payment_count_24h": burst + rng.randint(0, 12),
            "amount_sum_1h": Decimal(f"{amount * burst:.2f}"),
            "amount_mean_24h": mean,
            "declined_count_24h": rng.randint(0, 2),
            "merchant_fraud_count_7d": merchant_fraud,
            "merchant_payment_count_1h": rng.randint(0, 40),
            "payment_count_lifetime": None if rng.random() < 0.05 else rng.randint(0, 300),
        }
        payment = Payment(
            i,
            rng.randint(1, 500),
            rng.randint(1, 50),
            Decimal(f"{amount:.2f}"),
            channel,
            "approved",
            at,
        )
        rows.append(Row(payment, served, fraud))
    return rows
