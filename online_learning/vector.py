"""Turn a payment and its served features into the model's feature vector.

This is the only place where money becomes ``float``: at the model boundary. The same function
builds the vector for scoring and, through the logged prediction, for training, so the model
learns from exactly what it saw.

The rule, deterministic and stable in its keys (every call returns the same keys in the same
order for the same ``served_names``):

- ``amount`` = float(amount); ``log_amount`` = log1p(max(amount, 0)).
- ``channel_web``, ``channel_app``, ``channel_pos``: one-hot; any other channel sets
  ``channel_other`` = 1.0 instead.
- ``hour_sin``, ``hour_cos``: the UTC time of day of ``created_at`` on the unit circle (hours
  with minute fraction); ``dow_sin``, ``dow_cos``: the UTC day of week likewise.
- For every name in ``served_names``: ``<name>`` = float(value) and ``<name>_missing`` = 0.0;
  a value that is ``None``, absent from the served mapping, or not finite gives ``<name>`` = 0.0
  and ``<name>_missing`` = 1.0. Served names not in ``served_names`` are ignored, so an extra
  feature in Redis cannot change the model's inputs unannounced.
- ``amount_to_mean_24h`` = amount / amount_mean_24h when that mean is served and positive,
  else 0.0 (its absence is already visible in ``amount_mean_24h_missing``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC
from decimal import Decimal

from online_learning.exceptions import VectorError
from online_learning.records import FeatureValue, Payment
from online_learning.services import DEFAULT_SERVICE, SERVICES

__all__ = ["CHANNELS", "SERVED_FEATURES", "build_vector", "input_names", "input_sources"]

CHANNELS: tuple[str, ...] = ("web", "app", "pos")

# The default feature service's inputs (``online_learning.services``): the contract models
# were trained on before services existed. Code that serves a model asks the settings' service.
SERVED_FEATURES: tuple[str, ...] = SERVICES[DEFAULT_SERVICE].features

_TAU = 2.0 * math.pi


def _served_float(name: str, value: object) -> float | None:
    """The served value as a finite float, or None when it counts as missing."""
    kind = type(value)
    if kind is int:  # a count: the common case first
        return float(value)  # type: ignore[arg-type]
    if kind is not Decimal and kind is not float:
        if value is None:
            return None
        # bool is an int subclass; a served True/False is a bug upstream, not a count.
        if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
            msg = (
                f"served feature {name!r} must be int, Decimal, float or None, got "
                f"{type(value).__name__}; fix the feature readout"
            )
            raise VectorError(msg)
    out = float(value)  # type: ignore[arg-type]
    return out if math.isfinite(out) else None


@functools.lru_cache(maxsize=64)
def _with_missing(served_names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name, f"{name}_missing") for name in served_names)


def build_vector(
    payment: Payment,
    served: Mapping[str, FeatureValue],
    served_names: Sequence[str] = SERVED_FEATURES,
) -> dict[str, float]:
    """The model's input for ``payment`` given the features served when it was scored.

    >>> from datetime import datetime, UTC
    >>> p = Payment(1, 7, 3, Decimal("12.50"), "app", "approved",
    ...             datetime(2024, 1, 1, 6, 0, tzinfo=UTC))
    >>> v = build_vector(p, {"payment_count_1h": 2}, served_names=("payment_count_1h",))
    >>> v["channel_app"], v["payment_count_1h"], v["payment_count_1h_missing"]
    (1.0, 2.0, 0.0)
    >>> round(v["hour_sin"], 6), round(v["hour_cos"], 6)
    (1.0, 0.0)
    """
    created = payment.created_at
    if created.tzinfo is None or created.utcoffset() is None:
        msg = (
            f"payment {payment.payment_id} has a naive created_at {created.isoformat()}; "
            "decode timestamps as timezone-aware (UTC)"
        )
        raise VectorError(msg)
    amount = float(payment.amount)
    if not math.isfinite(amount):
        msg = f"payment {payment.payment_id} has a non-finite amount {payment.amount!r}"
        raise VectorError(msg)

    x: dict[str, float] = {"amount": amount, "log_amount": math.log1p(max(amount, 0.0))}
    known = payment.channel in CHANNELS
    for channel in CHANNELS:
        x[f"channel_{channel}"] = 1.0 if payment.channel == channel else 0.0
    x["channel_other"] = 0.0 if known else 1.0

    utc = created.astimezone(UTC)
    hour = utc.hour + utc.minute / 60.0 + utc.second / 3600.0
    x["hour_sin"] = math.sin(_TAU * hour / 24.0)
    x["hour_cos"] = math.cos(_TAU * hour / 24.0)
    x["dow_sin"] = math.sin(_TAU * utc.weekday() / 7.0)
    x["dow_cos"] = math.cos(_TAU * utc.weekday() / 7.0)

    for name, missing in _with_missing(tuple(served_names)):
        value = _served_float(name, served.get(name))
        x[name] = 0.0 if value is None else value
        x[missing] = 1.0 if value is None else 0.0

    mean = _served_float("amount_mean_24h", served.get("amount_mean_24h"))
    x["amount_to_mean_24h"] = amount / mean if mean is not None and mean > 0.0 else 0.0
    return x


@functools.lru_cache(maxsize=64)
def input_names(served_names: tuple[str, ...] = SERVED_FEATURES) -> tuple[str, ...]:
    """The keys ``build_vector`` returns for ``served_names``, in its order.

    >>> input_names(("payment_count_1h",))[-3:]
    ('payment_count_1h', 'payment_count_1h_missing', 'amount_to_mean_24h')
    """
    head = (
        "amount",
        "log_amount",
        *(f"channel_{c}" for c in CHANNELS),
        "channel_other",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
    )
    served = tuple(n for pair in _with_missing(served_names) for n in pair)
    return (*head, *served, "amount_to_mean_24h")


_DERIVED: dict[str, tuple[str, ...]] = {"amount_to_mean_24h": ("amount_mean_24h",)}


def input_sources(name: str, served_names: Sequence[str] = SERVED_FEATURES) -> tuple[str, ...]:
    """The served features the vector input ``name`` is built from (none: the payment alone).

    >>> input_sources("payment_count_1h_missing", ("payment_count_1h",))
    ('payment_count_1h',)
    >>> input_sources("amount_to_mean_24h", ())
    ('amount_mean_24h',)
    >>> input_sources("log_amount", ("payment_count_1h",))
    ()
    """
    if name in served_names:
        return (name,)
    if name.endswith("_missing") and name[: -len("_missing")] in served_names:
        return (name[: -len("_missing")],)
    return _DERIVED.get(name, ())
