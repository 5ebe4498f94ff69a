"""The Great Expectations suite: derived from a reference, it passes a good batch and catches a
bad one (nulls, out-of-range values, a missing column, too few rows)."""

from __future__ import annotations

import numpy as np
import pytest

from drift.quality import QualityConfig, expectations_from_reference, validate


def _rows(seed: int, n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [
        {"amount": float(a), "channel_web": float(w), "hour_sin": float(h)}
        for a, w, h in zip(
            rng.gamma(2.0, 40.0, n),
            rng.random(n) < 0.3,
            np.sin(rng.uniform(0, 6.28, n)),
            strict=True,
        )
    ]


def _reference() -> dict[str, list[float]]:
    rows = _rows(1, 400)
    return {k: [r[k] for r in rows] for k in rows[0]}


@pytest.fixture(scope="module")
def specs() -> list[dict]:
    return expectations_from_reference(_reference(), QualityConfig(min_rows=50))


def _failed(result: dict) -> set[tuple[str, str | None]]:
    return {(r["expectation"], r["column"]) for r in result["results"] if not r["success"]}


def test_suite_shape_follows_the_reference(specs: list[dict]) -> None:
    by = {(s["type"], s["kwargs"].get("column")): s["kwargs"] for s in specs}
    assert by[("ExpectColumnValuesToBeBetween", "channel_web")]["min_value"] == 0.0
    assert by[("ExpectColumnValuesToBeBetween", "channel_web")]["max_value"] == 1.0
    amount = by[("ExpectColumnValuesToBeBetween", "amount")]
    assert amount["min_value"] == 0.0  # no negative amount in the reference
    assert amount["max_value"] > max(_reference()["amount"])
    assert by[("ExpectTableRowCountToBeBetween", None)] == {"min_value": 50}


def test_a_good_batch_passes(specs: list[dict], capfd: pytest.CaptureFixture[str]) -> None:
    result = validate(_rows(2, 300), specs)
    assert "Calculating Metrics" not in capfd.readouterr().err  # progress bars silenced
    assert result["success"] is True, _failed(result)
    assert result["statistics"]["unsuccessful"] == 0
    assert result["n_rows"] == 300


def test_a_bad_batch_is_caught(specs: list[dict]) -> None:
    rows = _rows(3, 300)
    for i in range(0, 30):  # 10% nulls in amount
        rows[i]["amount"] = None  # type: ignore[assignment]
    for i in range(30, 60):  # 10% impossible values: negative amounts, channel flag 7
        rows[i]["amount"] = -5000.0
        rows[i]["channel_web"] = 7.0
    for row in rows:
        del row["hour_sin"]  # a feature that vanished
    result = validate(rows, specs)
    failed = _failed(result)
    assert result["success"] is False
    assert ("expect_column_values_to_not_be_null", "amount") in failed
    assert ("expect_column_values_to_be_between", "amount") in failed
    assert ("expect_column_values_to_be_between", "channel_web") in failed
    assert ("expect_column_mean_to_be_between", "channel_web") in failed
    columns = next(
        r for r in result["results"] if r["expectation"] == "expect_table_columns_to_match_set"
    )
    assert not columns["success"]
    assert columns["details"] == {"mismatched": {"missing": ["hour_sin"]}}
    key = ("expect_column_values_to_not_be_null", "amount")
    nulls = next(r for r in result["results"] if (r["expectation"], r["column"]) == key)
    assert nulls["unexpected_count"] == 30


def test_too_few_rows_fail_the_row_count(specs: list[dict]) -> None:
    result = validate(_rows(4, 10), specs)
    assert ("expect_table_row_count_to_be_between", None) in _failed(result)
