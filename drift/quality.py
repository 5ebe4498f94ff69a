"""Data quality of the current feature window, checked by Great Expectations 1.x.

The expectations are derived from the reference window by a pure function
(``expectations_from_reference``), then run by GE over the current window (``validate``):

- every reference feature is a column (one table-level expectation: GE costs ~30 ms per
  expectation, so per-column existence checks would add seconds) and not null in any row;
- values lie in a range: indicators (reference values all 0/1) in [0, 1]; otherwise from 0
  (when the reference had no negative value) or ``min - margin * width`` up to
  ``max + margin * width``, ``width`` being the reference's range; ``mostly`` of the rows must
  comply (a rare outlier is not a broken batch);
- the mean lies within ``mean_sd`` reference standard deviations of the reference mean (at least
  ``mean_floor`` either side, so a constant reference feature tolerates a little movement);
- the window holds at least ``min_rows`` rows.

GE costs seconds to import, so it is imported only inside ``validate``; its analytics are
switched off and its progress bars silenced. Results come back as plain JSON.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drift.exceptions import QualityCheckError

__all__ = ["QualityConfig", "expectations_from_reference", "validate"]

_PARTIAL = 5  # unexpected values kept per failed expectation


@dataclass(frozen=True)
class QualityConfig:
    """How loosely the suite follows the reference (see the module docstring)."""

    range_margin: float = 1.0
    mostly: float = 0.99
    mean_sd: float = 1.0
    mean_floor: float = 0.01
    min_rows: int = 30


def _finite(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def expectations_from_reference(
    reference: Mapping[str, Sequence[Any]], config: QualityConfig | None = None
) -> list[dict[str, Any]]:
    """The suite as plain specs ``{"type": <GE expectation class>, "kwargs": {...}}``.

    >>> specs = expectations_from_reference({"flag": [0, 1, 1, 0]}, QualityConfig(min_rows=2))
    >>> [(s["type"], s["kwargs"].get("min_value"), s["kwargs"].get("max_value")) for s in specs]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('ExpectTableRowCountToBeBetween', 2, None),
     ('ExpectTableColumnsToMatchSet', None, None),
     ('ExpectColumnValuesToNotBeNull', None, None),
     ('ExpectColumnValuesToBeBetween', 0.0, 1.0),
     ('ExpectColumnMeanToBeBetween', 0.0, 1.0)]
    """
    c = config or QualityConfig()
    specs: list[dict[str, Any]] = [
        {"type": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": c.min_rows}},
        {
            "type": "ExpectTableColumnsToMatchSet",
            "kwargs": {"column_set": sorted(reference), "exact_match": False},
        },
    ]
    for name in sorted(reference):
        ref = _finite(reference[name])
        specs.append({"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": name}})
        if ref.size == 0:
            continue
        lo, hi = float(ref.min()), float(ref.max())
        if np.isin(ref, (0.0, 1.0)).all():
            low, high = 0.0, 1.0
        else:
            width = hi - lo
            low = 0.0 if lo >= 0 else lo - c.range_margin * width
            high = hi + c.range_margin * width
        specs.append(
            {
                "type": "ExpectColumnValuesToBeBetween",
                "kwargs": {"column": name, "min_value": low, "max_value": high, "mostly": c.mostly},
            }
        )
        mean, sd = float(ref.mean()), float(ref.std())
        half = max(c.mean_sd * sd, c.mean_floor)
        specs.append(
            {
                "type": "ExpectColumnMeanToBeBetween",
                "kwargs": {
                    "column": name,
                    "min_value": max(mean - half, low),
                    "max_value": min(mean + half, high),
                },
            }
        )
    return specs


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _result_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    config = raw.get("expectation_config") or {}
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    result = raw.get("result") or {}
    exc = raw.get("exception_info") or {}
    return _plain(
        {
            "expectation": config.get("type"),
            "column": kwargs.pop("column", None),
            "kwargs": kwargs,
            "success": bool(raw.get("success")),
            "observed_value": result.get("observed_value"),
            "element_count": result.get("element_count"),
            "unexpected_count": result.get("unexpected_count"),
            "unexpected_percent": result.get("unexpected_percent"),
            "partial_unexpected": (result.get("partial_unexpected_list") or [])[:_PARTIAL],
            "details": result.get("details"),
            "error": exc.get("exception_message") if exc.get("raised_exception") else None,
        }
    )


def validate(
    rows: Sequence[Mapping[str, Any]],
    specs: Sequence[Mapping[str, Any]],
    *,
    suite_name: str = "current_window",
) -> dict[str, Any]:
    """Run ``specs`` over ``rows`` (one dict of feature values per row) with GE.

    Returns ``{"success", "statistics": {evaluated, successful, unsuccessful, success_percent},
    "results": [...], "great_expectations_version"}``, every value plain JSON.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    columns = sorted({str(s["kwargs"]["column"]) for s in specs if "column" in s["kwargs"]})
    frame = pd.DataFrame.from_records(list(rows))
    for name in columns:  # a column absent from every row must still be seen as absent
        if name in frame.columns:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        ctx.data_sources.add_pandas("freshloop")
        .add_dataframe_asset("features")
        .add_batch_definition_whole_dataframe("window")
    )
    expectations = []
    for spec in specs:
        kind = getattr(gxe, str(spec["type"]), None)
        if kind is None:
            msg = f"unknown Great Expectations expectation {spec['type']!r} in the quality suite"
            raise QualityCheckError(msg)
        kwargs = dict(spec["kwargs"])
        if "column" in kwargs and kwargs["column"] not in frame.columns:
            continue  # ExpectTableColumnsToMatchSet reports it; these would only error
        expectations.append(kind(**kwargs))
    # One suite built whole: adding expectations one by one to a stored suite re-serializes the
    # suite each time (quadratic: ~25 s for 130 expectations).
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = gx.ValidationDefinition(name=f"{suite_name}_validation", data=batch, suite=suite)
    raw = definition.run(
        batch_parameters={"dataframe": frame}, result_format="SUMMARY"
    ).to_json_dict()
    stats = raw.get("statistics") or {}
    return _plain(
        {
            "success": bool(raw.get("success")),
            "statistics": {
                "evaluated": stats.get("evaluated_expectations"),
                "successful": stats.get("successful_expectations"),
                "unsuccessful": stats.get("unsuccessful_expectations"),
                "success_percent": stats.get("success_percent"),
            },
            "results": [_result_row(r) for r in raw.get("results") or []],
            "n_rows": len(frame),
            "great_expectations_version": gx.__version__,
        }
    )
