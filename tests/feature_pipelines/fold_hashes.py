"""Random entity hashes holding every kind of field the writer produces, for the fold tests.

Buckets inside, at the edges of and outside each window, mean parts, keyed values (distinct,
min, max) with positive, zero and negative counts (values holding '@' and '#'), lifetime
fields, bookkeeping fields and fields of unknown features; a windowed and a lifetime feature
of every registered aggregation kind.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from feature_pipelines import SAMPLE_FEATURES, Feature, FeatureSet
from feature_pipelines.aggregations import KINDS, kind_of
from feature_pipelines.catalog import CUSTOMER, MERCHANT
from feature_pipelines.spec import Condition
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD, bucket_range

AT = datetime(2026, 5, 4, 12, 30, 15, 123456, tzinfo=UTC)
T_US = int(AT.timestamp() * 1_000_000)
_H24 = timedelta(hours=24)
# Besides the sample's amount_mean_24h, which keeps only ':z' (a sum and a count over its rows
# keep the rest), a mean of each other layout (``Mean.own_parts``): ':n' (a merchant's 24h
# sum keeps its total), ':z' and ':s' (declined_count_24h keeps its row count, no sum of
# declined amounts), ':n' and ':s' (no feature over web payments alone, and a lifetime one).
LAYOUT_MEANS = (
    Feature(
        "merchant_amount_mean_24h",
        MERCHANT,
        "payments",
        "created_at",
        "mean",
        "amount",
        window=_H24,
    ),
    Feature(
        "declined_amount_mean_24h",
        CUSTOMER,
        "payments",
        "created_at",
        "mean",
        "amount",
        where=(Condition("status", "declined"),),
        window=_H24,
    ),
    Feature(
        "web_amount_mean",
        CUSTOMER,
        "payments",
        "created_at",
        "mean",
        "amount",
        where=(Condition("channel", "web"),),
    ),
)


def every_kind(entity=CUSTOMER, windows=(_H24, None)) -> list[Feature]:
    """A feature of every registered kind per window, over ``amount`` for a decimal kind,
    ``merchant_id`` for another kind with a value."""
    out = []
    for kind in KINDS.values():
        value = ("amount" if kind.decimal else "merchant_id") if kind.takes_value else None
        for window in windows:
            span = "lifetime" if window is None else f"{int(window.total_seconds()) // 60}m"
            name = f"kind_{kind.name}_{span}"
            out.append(
                Feature(name, entity, "payments", "created_at", kind.name, value, window=window)
            )
    return out


EVERY_KIND = every_kind()
# The sample features, a lifetime distinct count (fields 'name#value', no bucket), the means,
# and every registered kind.
FEATURES = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        Feature("channels_lifetime", CUSTOMER, "payments", "created_at", "distinct", "channel"),
        *LAYOUT_MEANS,
        *EVERY_KIND,
    ]
)


_TEXTS = ["m1", "n1", "m2", "m3", "ü-7", "x", "a@1", "b#c@2"]
_UNITS = ["-250", "0", "7", "1234", "99999", "-3", "5", "100000000000"]  # scaled decimals


def random_hash(rng: random.Random, entity: str) -> dict[str, int]:
    fields: dict[str, int] = {}
    for f in FEATURES.for_entity(entity):
        kind = kind_of(f.agg)
        # a mean: its own parts, and those a mean of the other layouts keeps (left by an older
        # layout, or the wrong ones to read): only its own may count
        parts = sorted(
            {p for p, _slot in kind.parts(f)} | ({":s", ":n", ":z"} if kind.shares else set())
        )
        if f.window is None:
            buckets: list[str] = [""]
        else:
            lo, hi = bucket_range(f, T_US)
            picks = {lo - 1, lo, lo + 1, hi - 1, hi, hi + 1}
            picks |= {rng.randint(lo - 5, hi + 5) for _ in range(4)}
            buckets = [f"@{b}" for b in picks]
        for bucket in buckets:
            if rng.random() < 0.3:
                continue
            if kind.keyed:
                values = _UNITS if kind.decimal else _TEXTS
                for value in rng.sample(values, k=4):
                    fields[f"{f.name}{bucket}#{value}"] = rng.choice([-1, 0, 1, 1, 2, 5])
            else:
                for part in parts:
                    fields[f"{f.name}{part}{bucket}"] = rng.randint(-3, 10**9)
    fields["not_a_feature@1"] = 7
    fields[COMMIT_FIELD] = rng.randint(1, 10**13)
    if rng.random() < 0.8:
        fields[WRITTEN_FIELD] = rng.randint(1, 10**13)
    return fields
