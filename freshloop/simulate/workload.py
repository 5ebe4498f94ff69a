"""A seeded, reproducible workload of writes to the sample schema (pure: no database).

The workload is a small discrete-event scheduler. Asking it for the operations due at a time gives
payments at a steady rate, their later status changes (pending -> approved / declined, sometimes
refunded), occasional amount corrections and deletes, and the outcome (fraud or not) of each
payment (or of a share of them) after a label delay.

Its clock is event seconds since the start. Without ``time_scale`` that is the wall clock, as it
always was; with it, ``rate`` stays payments per WALL second while every delay (status, label) is
in event seconds, so a run at 2,160x writes a month of ``created_at`` in 20 minutes with delays
that look the same as in a real month. Each operation carries its event time ``at``.

Fraud is learnable from the data: it comes in bursts — one customer, several payments within
seconds, at one of a few risky merchants, through one channel, with high amounts. At
``drift_at`` seconds the world changes: other merchants become risky, fraud moves to another
channel, and ordinary amounts shift upwards, so a model trained before the change degrades.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

__all__ = ["Op", "Workload", "WorkloadConfig"]

OpKind = Literal[
    "insert_payment", "update_status", "correct_amount", "delete_payment", "insert_outcome"
]


@dataclass(frozen=True)
class Op:
    """One write. ``payment`` is the workload's handle; the writer maps it to the database id."""

    kind: OpKind
    payment: int
    customer: int = 0
    merchant: int = 0
    amount: Decimal = Decimal("0")
    channel: str = ""
    status: str = ""
    is_fraud: bool = False
    at: float = 0.0  # event seconds after the start when the operation is due


@dataclass(frozen=True)
class WorkloadConfig:
    """Shape of the workload; the defaults are what the demo uses."""

    rate: float = 20.0  # payments per second
    customers: int = 300
    merchants: int = 60
    risky_merchants: int = 4
    burst_share: float = 0.01  # share of payments that start a fraud burst
    burst_size: tuple[int, int] = (3, 6)
    base_fraud_rate: float = 0.01
    label_delay_s: float = 5.0
    status_delay_s: float = 1.0
    refund_share: float = 0.02
    correction_share: float = 0.02
    delete_share: float = 0.005
    drift_at: float | None = None  # seconds after start
    # After drift_at, fraud bursts draw amounts from this range instead of 400-1500 (e.g.
    # (5, 60): card testing with ordinary-looking amounts); None keeps the amounts unchanged.
    drift_fraud_amount: tuple[float, float] | None = None
    seed: int = 7
    # Event seconds per wall second; None: event time is the wall clock (the database's now()).
    time_scale: float | None = None
    # Share of payments whose outcome is reported (the rest never get one: at the label horizon
    # the learner takes them as legit); 1.0 keeps every outcome.
    outcome_share: float = 1.0
    # "around": delays of label_delay_s * (0.5 .. 1.5); "uniform": anywhere in [0, label_delay_s)
    # (e.g. anywhere up to the label horizon).
    label_delay_spread: Literal["around", "uniform"] = "around"


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    op: Op = field(compare=False)


class Workload:
    """Produces the operations due up to a time; same seed and times, same operations."""

    def __init__(self, config: WorkloadConfig) -> None:
        if config.rate <= 0:
            msg = f"rate must be positive payments per second, got {config.rate}"
            raise ValueError(msg)
        if config.time_scale is not None and config.time_scale <= 0:
            msg = (
                "time_scale must be positive event seconds per wall second, "
                f"got {config.time_scale}"
            )
            raise ValueError(msg)
        if not 0.0 <= config.outcome_share <= 1.0:
            msg = f"outcome_share must be a share between 0 and 1, got {config.outcome_share}"
            raise ValueError(msg)
        self.config = config
        self._rng = random.Random(config.seed)
        self._queue: list[_Due] = []
        self._seq = itertools.count()
        self._handles = itertools.count(1)
        self._next_payment_at = 0.0
        self._burst: list[Op] = []
        self._live: set[int] = set()
        self._stopped = False
        merchants = list(range(1, config.merchants + 1))
        self._rng.shuffle(merchants)
        k = config.risky_merchants
        self._risky_before = merchants[:k]
        self._risky_after = merchants[k : 2 * k]

    @property
    def interval(self) -> float:
        """Event seconds between two new payments (``rate`` is per wall second)."""
        return (self.config.time_scale or 1.0) / self.config.rate

    def max_follow_up_s(self) -> float:
        """The longest a follow-up (status change, refund, outcome) can come after its payment."""
        cfg = self.config
        label = cfg.label_delay_s * (1.0 if cfg.label_delay_spread == "uniform" else 1.5)
        return max(label, 2.5 * cfg.status_delay_s + 0.1)

    def label_delay(self) -> float:
        """Event seconds from a payment to its outcome, drawn by ``label_delay_spread``."""
        cfg = self.config
        if cfg.label_delay_spread == "uniform":
            return cfg.label_delay_s * self._rng.random()
        return cfg.label_delay_s * (0.5 + self._rng.random())

    # ---- the regime in force ----------------------------------------------------------
    def drifted(self, t: float) -> bool:
        return self.config.drift_at is not None and t >= self.config.drift_at

    def _risky(self, t: float) -> list[int]:
        return self._risky_after if self.drifted(t) else self._risky_before

    def _fraud_channel(self, t: float) -> str:
        return "web" if self.drifted(t) else "app"

    def _fraud_amount(self, t: float) -> tuple[float, float]:
        after = self.config.drift_fraud_amount
        return after if after is not None and self.drifted(t) else (400.0, 1500.0)

    def _normal_amount(self, t: float) -> Decimal:
        mu = 3.6 if self.drifted(t) else 3.2  # lognormal medians: ~25 before, ~37 after
        value = min(self._rng.lognormvariate(mu, 0.8), 5_000.0)
        return Decimal(f"{value:.2f}")

    # ---- scheduling --------------------------------------------------------------------
    def _schedule(self, at: float, op: Op) -> None:
        heapq.heappush(self._queue, _Due(at, next(self._seq), replace(op, at=at)))

    def _new_payment(self, t: float) -> Op:
        rng, cfg = self._rng, self.config
        if not self._burst and rng.random() < cfg.burst_share:
            customer = rng.randint(1, cfg.customers)
            merchant = rng.choice(self._risky(t))
            for _ in range(rng.randint(*cfg.burst_size)):
                low, high = self._fraud_amount(t)
                amount = Decimal(f"{rng.uniform(low, high):.2f}")
                self._burst.append(
                    Op(
                        "insert_payment",
                        0,
                        customer,
                        merchant,
                        amount,
                        self._fraud_channel(t),
                        "pending",
                        True,
                    )
                )
        if self._burst:
            template = self._burst.pop()
            return Op(**{**template.__dict__, "payment": next(self._handles)})
        is_fraud = rng.random() < cfg.base_fraud_rate
        return Op(
            "insert_payment",
            next(self._handles),
            rng.randint(1, cfg.customers),
            rng.randint(1, cfg.merchants),
            self._normal_amount(t),
            rng.choices(("web", "app", "pos"), weights=(5, 3, 2))[0],
            "pending",
            is_fraud,
        )

    def _follow_ups(self, t: float, op: Op) -> None:
        rng, cfg = self._rng, self.config
        handle = op.payment
        self._live.add(handle)
        if rng.random() < cfg.delete_share:
            self._schedule(t + cfg.status_delay_s * rng.random(), Op("delete_payment", handle))
            return
        declined = rng.random() < (0.5 if op.is_fraud else 0.08)
        status_at = t + cfg.status_delay_s * (0.5 + rng.random())
        self._schedule(
            status_at, Op("update_status", handle, status="declined" if declined else "approved")
        )
        if rng.random() < cfg.correction_share:
            amount = (op.amount * Decimal(rng.choice(("0.9", "1.1")))).quantize(Decimal("0.01"))
            self._schedule(status_at + 0.1, Op("correct_amount", handle, amount=amount))
        if not declined and rng.random() < cfg.refund_share:
            self._schedule(
                status_at + cfg.status_delay_s, Op("update_status", handle, status="refunded")
            )
        if cfg.outcome_share >= 1.0 or rng.random() < cfg.outcome_share:
            self._schedule(
                t + self.label_delay(), Op("insert_outcome", handle, is_fraud=op.is_fraud)
            )

    def due(self, t: float) -> list[Op]:
        """Every operation due at or before ``t`` seconds after the start, in order."""
        out: list[Op] = []
        interval = self.interval
        while True:
            next_queued = self._queue[0].at if self._queue else float("inf")
            new_due = not self._stopped and self._next_payment_at <= t
            if new_due and self._next_payment_at <= next_queued:
                at = self._next_payment_at
                op = replace(self._new_payment(at), at=at)
                out.append(op)
                self._follow_ups(at, op)
                self._next_payment_at += interval
            elif self._queue and next_queued <= t:
                item = heapq.heappop(self._queue)
                if item.op.payment not in self._live:
                    continue
                if item.op.kind == "delete_payment":
                    self._live.discard(item.op.payment)
                out.append(item.op)
            else:
                return out

    def pending(self) -> int:
        """Follow-up operations still scheduled (status changes, outcomes)."""
        return len(self._queue)

    def stop_payments(self) -> None:
        """No new payments from now on; the follow-ups already scheduled stay due."""
        self._stopped = True

    def drain(self) -> list[Op]:
        """Every follow-up still scheduled, without new payments (to end a run cleanly)."""
        self._stopped = True
        return self.due(float("inf"))
