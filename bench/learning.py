"""Learning throughput: scored + learned payments per second in one process, feature reads
included, next to River alone (predict + learn on the same vectors) measured in the same run.

Features for 2,000 customers and 200 merchants are first built in Redis by the real pipeline
code (planner + atomic batch writes, then the sweep of expired bucket fields a running pipeline
does) under a namespace of the bench's own. Then, per batch of
500 payments: two ``get_many`` reads (customers, merchants), ``score`` for each, the label join
and ``learn`` for each, with a clock around each call for where a payment's time goes.
Usage: python -m bench.learning [--payments N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import redis

from bench.common import drop_keys, save, spread
from feature_pipelines import SAMPLE_FEATURES, FeatureSet, FeatureStore
from feature_pipelines.decode import decode
from feature_pipelines.planner import Planner
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings
from online_learning import OnlineLearner, OnlineModel, Payment
from online_learning.model import DEFAULT_SPEC, build_estimator

CUSTOMERS, MERCHANTS, BATCH = 2000, 200, 500
KEY = b"bench-signing-key-0123456789"


def _payments(n: int, seed: int) -> list[tuple[Payment, bool]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        risky = rng.random() < 0.05
        amount = Decimal(f"{rng.uniform(400, 1500) if risky else rng.lognormvariate(3.2, 0.8):.2f}")
        payment = Payment(
            i + 1,
            rng.randint(1, CUSTOMERS),
            rng.randint(1, 5 if risky else MERCHANTS),
            amount,
            "app" if risky else rng.choice(["web", "pos"]),
            "pending",
            now - timedelta(seconds=n - i),
        )
        out.append((payment, risky and rng.random() < 0.8))
    return out


def _build_features(
    settings: Settings,
    ns: str,
    payments: list[tuple[Payment, bool]],
    features: FeatureSet = SAMPLE_FEATURES,
) -> None:
    """Features of ``payments`` in Redis under ``ns``, by the real planner and batch writer."""
    planner = Planner(features, ns)
    writer = RedisBatchWriter(redis.Redis.from_url(settings.redis_conninfo()), features, ns, "b")
    events = []
    for lsn, (p, _label) in enumerate(payments, start=1000):
        row = {
            "payment_id": p.payment_id,
            "customer_id": p.customer_id,
            "merchant_id": p.merchant_id,
            "amount": str(p.amount),
            "channel": p.channel,
            "status": p.status,
            "created_at": p.created_at.isoformat().replace("+00:00", "Z"),
        }
        value = orjson.dumps(
            {
                "op": "c",
                "before": None,
                "after": row,
                "source": {
                    "table": "payments",
                    "lsn": lsn,
                    "ts_ms": int(p.created_at.timestamp() * 1000),  # event time = commit
                    "sequence": f'["{lsn - 1}","{lsn}"]',
                },
            }
        )
        event = decode(value, orjson.dumps({"payment_id": p.payment_id}), features)
        assert event is not None  # noqa: S101
        events.append(event)
    for start in range(0, len(events), 2000):
        chunk = events[start : start + 2000]
        writer.apply(planner.plan(chunk, writer.read_rows(planner.keys_needed(chunk))), {})
    # The batch writes drop bucket fields that left every window as the event-time watermark
    # moves, so reads see the hashes a running pipeline keeps.


PHASES = ("read", "score", "on_prediction", "on_outcome")


def freshloop_rate(
    store: FeatureStore, payments: list[tuple[Payment, bool]]
) -> tuple[float, dict[str, float]]:
    """Scored + learned payments per second, and where the time went: microseconds per payment
    in the two feature reads (``read``), ``score`` (vector and River's predict),
    ``on_prediction`` (the logged record into the join) and ``on_outcome`` (the join, River's
    learn, the metrics and the drift detector). The clock around each call costs ~0.2 µs of
    the ~180 per payment."""
    learner = OnlineLearner(OnlineModel(), KEY)
    clock = time.perf_counter
    spent = dict.fromkeys(PHASES, 0.0)
    started = clock()
    for start in range(0, len(payments), BATCH):
        batch = payments[start : start + BATCH]
        t0 = clock()
        customers = store.get_many("customer", [p.customer_id for p, _ in batch])
        merchants = store.get_many("merchant", [p.merchant_id for p, _ in batch])
        spent["read"] += clock() - t0
        for (payment, label), c, m in zip(batch, customers, merchants, strict=True):
            t1 = clock()
            prediction = learner.score(payment, {**c.values, **m.values})
            t2 = clock()
            learner.on_prediction(prediction)
            t3 = clock()
            learner.on_outcome(payment.payment_id, label, payment.created_at)
            t4 = clock()
            spent["score"] += t2 - t1
            spent["on_prediction"] += t3 - t2
            spent["on_outcome"] += t4 - t3
    rate = len(payments) / (clock() - started)
    return rate, {name: seconds / len(payments) * 1e6 for name, seconds in spent.items()}


def river_rate(store: FeatureStore, payments: list[tuple[Payment, bool]]) -> float:
    """The same vectors, already built: River's predict_proba_one + learn_one only."""
    from online_learning import build_vector

    vectors = []
    for start in range(0, len(payments), BATCH):
        batch = payments[start : start + BATCH]
        customers = store.get_many("customer", [p.customer_id for p, _ in batch])
        merchants = store.get_many("merchant", [p.merchant_id for p, _ in batch])
        for (payment, label), c, m in zip(batch, customers, merchants, strict=True):
            vectors.append((build_vector(payment, {**c.values, **m.values}), label))
    model = build_estimator(DEFAULT_SPEC)
    started = time.perf_counter()
    for x, y in vectors:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(vectors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    ns = f"benchlearn{uuid.uuid4().hex[:6]}"
    payments = _payments(args.payments, seed=3)
    _build_features(settings, ns, payments)
    store = FeatureStore.connect(settings.redis_conninfo(), SAMPLE_FEATURES, ns)
    ours, river = [], []
    phases: list[dict[str, float]] = []
    try:
        for i in range(args.repeat):
            rate, spent = freshloop_rate(store, payments)
            ours.append(rate)
            phases.append(spent)
            river.append(river_rate(store, payments))
            print(
                f"[bench] run {i + 1}: freshloop score+learn with reads {ours[-1]:,.0f}/s, "
                f"river predict+learn alone {river[-1]:,.0f}/s",
                flush=True,
            )
    finally:
        drop_keys(settings.redis_conninfo(), f"{ns}:*")
    result = {
        "payments": args.payments,
        "freshloop_scored_learned_per_s": spread(ours),
        "river_alone_per_s": spread(river),
        "ratio_freshloop_to_river": statistics.median(ours) / statistics.median(river),
        # the same runs, µs per payment in each call
        "phases_us": {name: spread(p[name] for p in phases) for name in PHASES},
        "river_alone_us": spread(1e6 / r for r in river),
    }
    print(f"[bench] saved {save('learning', result)}")
    print(
        f"[bench] learning: {result['freshloop_scored_learned_per_s']['median']:,.0f}/s scored+"
        f"learned with feature reads = {result['ratio_freshloop_to_river']:.2f} x River alone"
    )


if __name__ == "__main__":
    main()
