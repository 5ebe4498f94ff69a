"""Property: a group's ``contribute(row, memo, lo)`` leaves out exactly the bucket fields no read
at or after the watermark counts (each windowed feature's buckets at or below its ``lo``), and
nothing else: the pairs the planner filtered out of the full ones before it asked the generated
function to skip them. So a batch writes the same fields either way."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from feature_pipelines.catalog import SAMPLE_FEATURES
from feature_pipelines.planner import Planner
from feature_pipelines.windows import compile_group

_WINDOWS = {
    f.name: (f.window_seconds * 1_000_000, f.bucket_seconds * 1_000_000)
    for f in SAMPLE_FEATURES
    if f.window is not None
}
_T0 = 1_800_000_000_000_000  # micros
_GROUPS = [
    *(fn for t in ("payments",) for _e, _k, fn in Planner(SAMPLE_FEATURES, "t")._direct[t]),
    *(compile_group((f,)) for f in SAMPLE_FEATURES),
]


def _filtered(pairs: list[tuple[str, int]], at: int) -> list[tuple[str, int]]:
    """The full pairs without those of a bucket at or below its feature's bound (field names
    ``name[:part]@bucket[#value]``)."""
    bounds = {name: (at - w) // b for name, (w, b) in _WINDOWS.items()}
    out = []
    for name, amount in pairs:
        head, at_sign, rest = name.partition("@")
        if at_sign and int(rest.partition("#")[0]) <= bounds[head.partition(":")[0]]:
            continue
        out.append((name, amount))
    return out


@given(
    group=st.sampled_from(_GROUPS),
    edge=st.sampled_from(sorted(set(_WINDOWS.values()))),
    buckets=st.integers(-2, 2),
    within=st.sampled_from([0, 1, -1]),
    watermark_s=st.integers(-86400, 9 * 86400),
    amount=st.sampled_from([None, "0.01", "12.34", "-5", "900.00"]),
    status=st.sampled_from(["pending", "approved", "declined"]),
    fraud=st.booleans(),
)
def test_skipping_dead_buckets_leaves_out_only_those(
    group: Any,
    edge: tuple[int, int],
    buckets: int,
    within: int,
    watermark_s: int,
    amount: str | None,
    status: str,
    fraud: bool,
) -> None:
    at = _T0 + watermark_s * 1_000_000
    window, width = edge  # an event time a few buckets either side of that window's edge
    t = ((at - window) // width + buckets) * width + within % width
    row = {
        "payment_id": 1,
        "customer_id": 7,
        "merchant_id": 3,
        "amount": amount,
        "status": status,
        "created_at": "parsed",
        "is_fraud": fraud,
        "reported_at": "parsed",
    }
    memo: dict[Any, int] = {"created_at": t, "reported_at": t}
    lo = {name: (at - w) // b for name, (w, b) in _WINDOWS.items()}
    assert group(row, dict(memo), lo) == _filtered(group(row, dict(memo)), at)
    assert group(row, dict(memo), None) == group(row, dict(memo))
