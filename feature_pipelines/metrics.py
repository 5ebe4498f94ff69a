"""Prometheus metrics of the feature pipeline (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "APPLY_LAG",
    "BATCH_SECONDS",
    "EVENTS",
    "LAST_APPLIED_COMMIT",
]

# Commit -> visible in Redis; buckets from 1 ms to 10 s.
APPLY_LAG = Histogram(
    "freshloop_feature_commit_to_visible_seconds",
    "Time from the database commit of a change to its features being readable in Redis.",
    buckets=(
        0.001,
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.2,
        0.5,
        1.0,
        2.0,
        5.0,
        10.0,
    ),
)
EVENTS = Counter(
    "freshloop_feature_events_total",
    "Change events seen by the feature pipeline, by outcome.",
    ["outcome"],  # applied | duplicate | dead_lettered | tombstone | skipped
)
BATCH_SECONDS = Histogram(
    "freshloop_feature_batch_seconds",
    "Wall time to decode, plan and write one batch.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
LAST_APPLIED_COMMIT = Gauge(
    "freshloop_feature_last_applied_commit_timestamp_seconds",
    "Commit time of the newest change applied to Redis.",
)
