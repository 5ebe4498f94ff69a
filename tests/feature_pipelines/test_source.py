"""The pure decisions about the change source: same cluster, not gone back, plausible
positions, Kafka offsets in range; TRUNCATE refused at decoding; the connector lets it through."""

from __future__ import annotations

import doctest

import orjson
import pytest

from connectors import render_config
from feature_pipelines import SAMPLE_FEATURES, source
from feature_pipelines.decode import decode
from feature_pipelines.exceptions import SourceTruncatedError
from feature_pipelines.source import LiveSource, Recorded, SourceIdentity, judge, out_of_range
from freshloop.core.settings import Settings
from tests.feature_pipelines.fixtures import envelope

_SAME = SourceIdentity("7716012837163244843", 3, "freshloop_slot")


@pytest.mark.parametrize(
    ("live", "applied", "found"),
    [
        (LiveSource(_SAME, 5000), 4000, None),  # the same source, moved on
        (LiveSource(_SAME, 4000), 4000, None),  # idle since the last change applied
        (LiveSource(_SAME, 10), None, None),  # nothing applied yet
        (LiveSource(SourceIdentity(_SAME.system_id, 4, "freshloop_slot"), 9000), 4000, None),
        (LiveSource(SourceIdentity("42", 3, "freshloop_slot"), 9000), 4000, "another Postgres"),
        (LiveSource(SourceIdentity("42", 3, "freshloop_slot"), 9000), None, "system identifier"),
        (LiveSource(SourceIdentity(_SAME.system_id, 2, "s"), 9000), 4000, "timeline went back"),
        (LiveSource(_SAME, 3999), 4000, "below 0/FA0"),  # an older copy, same cluster
    ],
)
def test_judge(live: LiveSource, applied: int | None, found: str | None) -> None:
    problem = judge(_SAME, applied, live)
    if found is None:
        assert problem is None
    else:
        assert problem is not None and found in problem


def test_a_promotion_to_a_later_timeline_with_the_wal_behind_is_still_refused() -> None:
    # point-in-time recovery: a new timeline that starts below what was applied
    live = LiveSource(SourceIdentity(_SAME.system_id, 4, _SAME.slot), 100)
    problem = judge(_SAME, 4000, live)
    assert problem is not None and "below" in problem


def test_out_of_range_past_the_end_and_before_the_start() -> None:
    ends = {"a:0": (0, 10), "a:1": (100, 200), "a:2": (0, 0), "b:0": (5, 9)}
    stored = {"a:0": 11, "a:1": 99, "a:2": 0, "b:0": 9, "c:0": 1_000}
    assert out_of_range(stored, ends) == {"a:0": (11, 0, 10), "a:1": (99, 100, 200)}
    assert out_of_range({"a:0": -2}, ends) == {}  # no position yet: nothing to compare


def test_recorded_parses_bytes_and_ignores_a_record_without_identity() -> None:
    raw = {b"system_id": b"77", b"timeline": b"2", b"slot": b"s", b"lsn": b"18446744073709551615"}
    recorded = Recorded.parse(raw)
    assert recorded == Recorded(SourceIdentity("77", 2, "s"), 2**64 - 1, None)
    assert Recorded.parse({b"lsn": b"5"}) is None
    assert Recorded.parse({}) is None


def test_truncate_of_a_table_a_feature_reads_is_refused_not_skipped() -> None:
    raw = orjson.loads(envelope("payments", "t", None, None, 4242))
    with pytest.raises(SourceTruncatedError) as caught:
        decode(orjson.dumps(raw), None, SAMPLE_FEATURES)
    assert caught.value.table == "payments"
    assert caught.value.position == (4241, 4242)
    # a table no feature reads stays skipped
    raw["source"]["table"] = "merchants"
    assert decode(orjson.dumps(raw), None, SAMPLE_FEATURES) is None


def test_the_connector_emits_truncates() -> None:
    # Debezium's default skipped.operations is "t": a truncate would never reach the pipeline
    assert render_config(Settings(), tables=["payments"])["skipped.operations"] == "none"


def test_docstring_examples() -> None:
    assert doctest.testmod(source).failed == 0
