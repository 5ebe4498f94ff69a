"""Inputs still filling up are not judged for drift: the warm-up rule.

A windowed feature holds less than one window of data until ``origin + window``, where the
origin is the later of the oldest event time of its table and the creation time of the first
payment the namespace scored: until then its values grow with the age of the data or of the
namespace, not with any change in the world, so comparing two windows of it reports drift by
construction (a new database, a new namespace, the demo's first minutes). A lifetime feature
grows for ever and is never judged on its distribution.

Rule (``assess``, pure): a vector input is judged only when every served feature it is built
from (``online_learning.vector.input_sources``) is windowed and was full for the whole
reference window, that is the reference's first payment was created at or after that
feature's ``origin + window``. The comparison is in event time (payment creation and source
event times), so a replay judges as live processing did. Inputs built from the payment alone
are always judged. Unjudged inputs are listed in the report with their reason.

Reads (``read_origins``, ``reference_start``): the oldest event time per source table and column
and the namespace's first scored payment (kept in the report once known, so a later check reads
nothing), and the creation time of the reference's oldest payment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from feature_pipelines import FeatureSet
from online_learning.vector import input_sources

__all__ = ["NAMESPACE", "Warmup", "assess", "origin_key", "read_origins", "reference_start"]

NAMESPACE = "namespace.first_payment"
"""The origin key of the namespace's first scored payment (its creation time)."""


def origin_key(table: str, column: str) -> str:
    """How an origin is named in reports: ``table.column``."""
    return f"{table}.{column}"


@dataclass(frozen=True)
class Warmup:
    """Which inputs a check leaves unjudged, and why."""

    origins: dict[str, datetime | None]
    reference_start: datetime | None
    unjudged: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "origins": {k: None if v is None else v.isoformat() for k, v in self.origins.items()},
            "reference_start": None
            if self.reference_start is None
            else self.reference_start.isoformat(),
            "unjudged": dict(sorted(self.unjudged.items())),
        }


def assess(
    names: Iterable[str],
    features: FeatureSet,
    served_names: tuple[str, ...],
    origins: Mapping[str, datetime | None],
    reference_start: datetime | None,
) -> Warmup:
    """The warm-up rule above over the inputs ``names`` (pure).

    >>> from datetime import UTC, timedelta
    >>> from feature_pipelines import SAMPLE_FEATURES
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> o = {"payments.created_at": t0}
    >>> w = assess(["amount", "payment_count_1h", "payment_count_lifetime_missing"],
    ...            SAMPLE_FEATURES, ("payment_count_1h", "payment_count_lifetime"), o,
    ...            t0 + timedelta(minutes=30))
    >>> sorted(w.unjudged)
    ['payment_count_1h', 'payment_count_lifetime_missing']
    >>> assess(["payment_count_1h"], SAMPLE_FEATURES, ("payment_count_1h",), o,
    ...        t0 + timedelta(hours=1)).unjudged
    {}
    """
    unjudged: dict[str, str] = {}
    for name in names:
        for source in input_sources(name, served_names):
            reason = _not_full(source, features, origins, reference_start)
            if reason is not None:
                unjudged[name] = reason
                break
    return Warmup(dict(origins), reference_start, unjudged)


def _not_full(
    source: str,
    features: FeatureSet,
    origins: Mapping[str, datetime | None],
    reference_start: datetime | None,
) -> str | None:
    feature = next((f for f in features if f.name == source), None)
    if feature is None:
        return None  # not a feature of this set: nothing known to fill up
    if feature.window is None:
        return f"{source} is a lifetime {feature.agg}: it grows for ever"
    origin = origins.get(origin_key(feature.table, feature.event_time))
    if origin is None:
        return f"{source}: {feature.table} holds no {feature.event_time} yet"
    began = origins.get(NAMESPACE)
    if began is not None and began > origin:
        origin, since = began, "the namespace's first payment was created"
    else:
        since = f"{feature.table} starts"
    if reference_start is None:
        return f"{source}: the reference holds no payment yet"
    full_from = origin + feature.window
    if reference_start < full_from:
        return (
            f"{source} fills up until {full_from.isoformat()} ({since} "
            f"{origin.isoformat()}, window {feature.window}); the reference starts "
            f"{reference_start.isoformat()}"
        )
    return None


def read_origins(
    conn: Connection,
    namespace: str,
    features: FeatureSet,
    served_names: Iterable[str],
    known: Mapping[str, Any] | None = None,
) -> dict[str, datetime | None]:
    """The oldest event time of each table and column the served windowed features read, and
    when the namespace's first scored payment was created (``NAMESPACE``).

    ``known``: origins a previous report stored (ISO text); those are not read again (they only
    move later when the oldest rows are pruned, and the first one seen is the true start)."""
    wanted = set(served_names)
    out: dict[str, datetime | None] = {}
    stored = (known or {}).get(NAMESPACE)
    if isinstance(stored, str):
        out[NAMESPACE] = datetime.fromisoformat(stored)
    else:
        # the oldest labelled example, found through the (namespace, labelled_at) index; its
        # payment's creation time (event time), or when it was scored if the payment is gone
        out[NAMESPACE] = conn.execute(
            text(
                "SELECT coalesce(p.created_at, t.predicted_at) FROM (SELECT payment_id, "
                "predicted_at FROM training_examples WHERE namespace = :ns ORDER BY labelled_at "
                "LIMIT 1) AS t LEFT JOIN payments AS p ON p.payment_id = t.payment_id"
            ),
            {"ns": namespace},
        ).scalar_one_or_none()
    for f in features:
        if f.name not in wanted or f.window is None:
            continue
        key = origin_key(f.table, f.event_time)
        if key in out:
            continue
        stored = (known or {}).get(key)
        if isinstance(stored, str):
            out[key] = datetime.fromisoformat(stored)
            continue
        quote = conn.dialect.identifier_preparer.quote
        # identifiers of the feature definitions, quoted; no value is interpolated
        query = f"SELECT min({quote(f.event_time)}) FROM {quote(f.table)}"  # noqa: S608
        out[key] = conn.execute(text(query)).scalar_one_or_none()
    return out


def reference_start(
    conn: Connection, payment_ids: list[int], predicted: Iterable[datetime] = ()
) -> datetime | None:
    """When the oldest payment of the reference window was created; when none of them is in
    ``payments`` any more (deleted), the earliest time one was scored (``predicted``: live, a
    payment is scored within moments of its commit). None: an empty reference."""
    found = None
    if payment_ids:
        found = conn.execute(
            text("SELECT min(created_at) FROM payments WHERE payment_id = ANY(:ids)"),
            {"ids": payment_ids},
        ).scalar_one_or_none()
    return found if found is not None else min(predicted, default=None)
