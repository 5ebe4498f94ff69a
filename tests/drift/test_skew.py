"""The skew audit's comparison logic (pure): exact, tolerated by entity, beyond; the summary, its
status and where it shows (the drift report's status, its page, the terminal lines)."""

from __future__ import annotations

from drift.check import status_of
from drift.report import render_html
from drift.skew import judge_example, summarize
from drift.skew_cli import lines

GROUPS = {"c1": "customer", "c2": "customer", "m1": "merchant", "amount": ""}
OWN = {"amount": 10.0, "c1": 1.0, "c2": 5.0, "m1": 7.0}


def test_equal_inputs_are_exact_and_json_noise_is_equal() -> None:
    v = judge_example(1, {**OWN, "c2": 5.0 + 1e-13}, OWN, [], GROUPS)
    assert set(v.inputs.values()) == {"exact"} and v.verdict == "exact"


def test_an_entity_matching_a_neighbour_as_a_whole_is_tolerated() -> None:
    logged = {**OWN, "c1": 2.0, "c2": 6.0}
    neighbour = {**OWN, "c1": 2.0, "c2": 6.0, "m1": 8.0}
    v = judge_example(1, logged, OWN, [neighbour], GROUPS)
    assert v.inputs == {"amount": "exact", "c1": "tolerated", "c2": "tolerated", "m1": "exact"}
    assert v.verdict == "tolerated"


def test_inputs_of_one_entity_must_match_at_the_same_position() -> None:
    logged = {**OWN, "c1": 2.0, "c2": 6.0}
    # c1 at one neighbour, c2 at another: no single state of the customer had both
    v = judge_example(1, logged, OWN, [{**OWN, "c1": 2.0}, {**OWN, "c2": 6.0}], GROUPS)
    assert v.inputs["c1"] == v.inputs["c2"] == "beyond"


def test_the_customer_and_the_merchant_may_match_at_different_positions() -> None:
    logged = {**OWN, "c1": 2.0, "m1": 9.0}
    v = judge_example(1, logged, OWN, [{**OWN, "c1": 2.0}, {**OWN, "m1": 9.0}], GROUPS)
    assert v.verdict == "tolerated"


def test_the_payments_own_inputs_have_no_tolerance() -> None:
    logged = {**OWN, "amount": 11.0}
    v = judge_example(1, logged, OWN, [{**OWN, "amount": 11.0}], GROUPS)
    assert v.inputs["amount"] == "beyond"


def test_inputs_held_by_one_side_only_are_not_compared() -> None:
    v = judge_example(1, {**OWN, "old": 1.0, "flag": "x"}, {**OWN, "new": 2.0}, [], GROUPS)
    assert "old" not in v.inputs and "new" not in v.inputs
    assert v.unmatched == ("new", "old")


def test_the_summary_counts_and_keeps_the_largest_differences() -> None:
    verdicts = [judge_example(i, OWN, OWN, [], GROUPS) for i in range(7)]
    verdicts += [
        judge_example(100 + i, {**OWN, "m1": 7.0 + d}, OWN, [], GROUPS)
        for i, d in enumerate([1.0, -30.0, 2.0])
    ]
    verdicts.append(judge_example(200, {**OWN, "c1": 3.0}, OWN, [{**OWN, "c1": 3.0}], GROUPS))
    s = summarize(verdicts, tolerance_s=1.0, sampled=12, largest=2)
    assert s.examples == {"exact": 7, "beyond": 3, "tolerated": 1}
    assert (s.sampled, s.compared, s.no_history) == (12, 11, 1)
    m1 = s.inputs["m1"]
    assert (m1.compared, m1.exact, m1.beyond) == (11, 8, 3)
    assert [(d.payment_id, d.size) for d in m1.largest] == [(101, 30.0), (102, 2.0)]
    assert s.inputs["c1"].tolerated == 1 and s.inputs["c1"].largest == []
    assert s.skewed_inputs == ["m1"] and s.status == "warning"
    assert s.to_dict()["inputs"]["m1"]["beyond_share"] == round(3 / 11, 6)
    assert summarize(verdicts, tolerance_s=1.0, max_share=0.5).status == "ok"
    assert summarize([], tolerance_s=1.0, sampled=3).status == "no_data"


def test_a_skew_warning_makes_the_check_a_warning_and_shows_on_the_page() -> None:
    calm = {"n_reference": 500, "n_current": 500, "drifted_features": []}
    assert status_of({**calm, "skew_status": "ok"}, {}, 100) == "ok"
    assert status_of({**calm, "skew_status": "no_data"}, {}, 100) == "ok"
    assert status_of({**calm, "skew_status": "warning"}, {}, 100) == "warning"

    bad = judge_example(42, {**OWN, "m1": 0.0}, OWN, [], GROUPS)
    skew = summarize([bad], tolerance_s=1.0).to_dict()
    page = render_html({"status": "warning", "skew": skew}, {}, {})
    assert "Online/offline skew" in page and "payment 42" in page and "m1" in page
    assert "not run" in render_html({"status": "ok", "skew": None}, {}, {})
    text = lines(skew)
    assert text[0].startswith("skew warning: 1 of 1 examples compared")
    assert any(line.startswith("  m1: beyond 1/1 (100.0%)") for line in text)


def test_the_neighbours_are_the_changes_that_reach_the_payments_entities() -> None:
    """``positions_near`` for one payment: its customer's and merchant's payments, and the
    outcomes of its merchant's payments (through the fraud feature's lookup), not the rest."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from online_learning.point_in_time import _entity_filters
    from online_learning.records import Payment
    from online_learning.services import feature_service

    payment = Payment(1, 42, 7, Decimal("10"), "web", "approved", datetime(2026, 1, 1, tzinfo=UTC))
    params: dict[str, object] = {}
    found = [
        (table, cond.as_string(None))
        for table, cond in _entity_filters(feature_service(None, "fraud"), payment, params)
    ]
    assert found == [
        ("payments", 's."customer_id" = %(v0)s'),
        ("payments", 's."merchant_id" = %(v1)s'),
        (
            "payment_outcomes",
            'EXISTS (SELECT 1 FROM "payments_history" AS l WHERE l."payment_id" = s."payment_id" '
            'AND l."merchant_id" = %(v2)s)',
        ),
    ]
    assert params == {"v0": 42, "v1": 7, "v2": 7}
    every: dict[str, object] = {}
    assert [t for t, _ in _entity_filters(feature_service(None, "fraud"), None, every)] == [
        "payment_outcomes",
        "payments",
    ]
