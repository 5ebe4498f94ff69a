"""Decoding Debezium envelopes exactly as Kafka Connect's JsonConverter (no schemas) writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from feature_pipelines import SAMPLE_FEATURES, DecodeError
from feature_pipelines.decode import decode, format_position, parse_position
from tests.feature_pipelines.fixtures import iso
from tests.feature_pipelines.harness import Log, Pipeline

KEY = b'{"payment_id":1001}'
PAYMENT = {
    "payment_id": 1001,
    "customer_id": 7,
    "merchant_id": 3,
    "amount": "12.34",
    "currency": "EUR",
    "channel": "app",
    "status": "approved",
    "created_at": "2026-11-28T16:38:02.123456Z",
    "updated_at": "2026-11-28T16:38:02.123456Z",
}


def _real(
    op: str = "c",
    before: dict | None = None,
    after: dict | None = PAYMENT,
    snapshot: str = "false",
    sequence: Any = '["24023128","24023184"]',
    **source: Any,
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": {
            "version": "3.6.1.Final",
            "connector": "postgresql",
            "name": "freshloop",
            "ts_ms": 1764000000123,
            "snapshot": snapshot,
            "db": "freshloop",
            "sequence": sequence,
            "schema": "public",
            "table": "payments",
            "txId": 771,
            "lsn": 24023184,
            "xmin": None,
            **source,
        },
        "transaction": None,
        "op": op,
        "ts_ms": 1764000000456,
        "ts_us": 1764000000456789,
        "ts_ns": 1764000000456789000,
    }


def _decode(envelope: dict[str, Any], key: bytes | None = KEY):
    return decode(orjson.dumps(envelope), key, SAMPLE_FEATURES)


def test_real_insert_decodes_with_position_and_commit_time() -> None:
    event = _decode(_real())
    assert event is not None
    assert (event.table, event.op, event.key, event.before) == ("payments", "c", "1001", None)
    assert event.after is not None and event.after["amount"] == "12.34"
    assert event.position == (24023128, 24023184)
    assert event.commit_ms == 1764000000123  # 2025-11-24 16:00:00.123 UTC


@pytest.mark.parametrize(
    "snapshot", ["true", "first", "last", "incremental", "first_in_data_collection"]
)
def test_snapshot_reads_are_inserts(snapshot: str) -> None:
    event = _decode(_real(op="r", snapshot=snapshot, sequence='[null,"24023184"]'))
    assert event is not None and event.op == "r" and event.before is None
    assert event.position == (-1, 24023184)


def test_update_and_delete_carry_full_images() -> None:
    changed = {**PAYMENT, "status": "declined"}
    update = _decode(_real(op="u", before=PAYMENT, after=changed))
    assert update is not None and update.before is not None and update.after is not None
    assert (update.before["status"], update.after["status"]) == ("approved", "declined")
    delete = _decode(_real(op="d", before=PAYMENT, after=None))
    assert delete is not None and delete.after is None and delete.before is not None


def test_tombstone_is_skipped() -> None:
    assert decode(None, KEY, SAMPLE_FEATURES) is None


@pytest.mark.parametrize(
    ("sequence", "lsn", "position"),
    [
        ('[null,"500"]', 500, (-1, 500)),
        ("[null,null]", 500, (-1, 500)),
        (None, 500, (-1, 500)),
        ('["400","500"]', 500, (400, 500)),
    ],
)
def test_position_from_sequence_or_lsn(sequence: Any, lsn: int, position: tuple) -> None:
    event = _decode(_real(sequence=sequence, lsn=lsn))
    assert event is not None and event.position == position
    assert parse_position(format_position(event.position)) == event.position
    assert parse_position(format_position(event.position).encode()) == event.position


def test_positions_order_changes_of_one_row() -> None:
    """A later transaction on the same row has a larger last-commit LSN, even if its own LSN is
    smaller than a change of a long transaction that committed earlier; a snapshot read (null
    last commit) orders before any streamed change."""
    snap = _decode(_real(op="r", sequence='[null,"900"]', lsn=900))
    first = _decode(_real(sequence='["1000","1200"]', lsn=1200))
    second = _decode(_real(sequence='["1300","1100"]', lsn=1100))
    same_tx = _decode(_real(sequence='["1300","1150"]', lsn=1150))
    assert snap and first and second and same_tx
    assert snap.position < first.position < second.position < same_tx.position


def test_unknown_columns_and_envelope_fields_are_ignored() -> None:
    extra = {**PAYMENT, "risk_score": 0.93, "tags": ["a"], "meta": {"x": 1}}
    event = _decode({**_real(after=extra), "new_envelope_field": 1})
    assert event is not None and event.after is not None
    assert "risk_score" not in event.after and "tags" not in event.after


def test_composite_keys_are_ordered_by_column() -> None:
    event = _decode(_real(), key=b'{"region":"eu","payment_id":1001}')
    assert event is not None and event.key == "1001,eu"


def test_money_stays_exact_through_the_pipeline() -> None:
    pipe, log = Pipeline(SAMPLE_FEATURES), Log()
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    for pk, amount in ((1, "0.10"), (2, "0.20")):
        row = {**PAYMENT, "payment_id": pk, "amount": amount, "created_at": iso(at)}
        pipe.feed([log.emit("payments", "c", {"payment_id": pk}, None, row)])
    values = pipe.values("customer", 7, at)
    assert values["amount_sum_1h"] == Decimal("0.30")
    assert str(values["amount_sum_lifetime"]) == "0.30"
    assert values["amount_mean_24h"] == Decimal("0.15")
    assert pipe.hash("customer", 7)["amount_sum_lifetime"] == "30"  # cents, an integer


@pytest.mark.parametrize(
    ("envelope", "key", "reason"),
    [
        (_real(), None, "no key"),
        (_real(), b"not json", "key is not JSON"),
        (_real(), b"[1001]", "key must be an object"),
        (_real(sequence="[1,2"), KEY, "sequence is not JSON"),
        (_real(sequence='["1"]'), KEY, r"sequence must be \[last_commit_lsn, lsn\]"),
        (_real(sequence='["a","b"]'), KEY, "position is not numeric"),
        (_real(ts_ms=None), KEY, "ts_ms must be an integer"),
        (_real(after=[1, 2]), KEY, "after must be an object"),
        (_real(op="d", before=None, after=None), KEY, "REPLICA IDENTITY FULL"),
        (_real(op="c", after=None), KEY, "op 'c'"),
        (_real(op="m", after=None), KEY, "not handled"),
        (_real(op="x"), KEY, "not handled"),
        (_real(after={**PAYMENT, "customer_id": None} | {"x": 1}), KEY, None),
    ],
)
def test_bad_envelopes_raise_with_a_reason(envelope: dict, key: bytes | None, reason: str | None):
    if reason is None:  # a NULL value is not an error: the row simply has no entity
        assert _decode(envelope, key) is not None
        return
    with pytest.raises(DecodeError, match=reason):
        _decode(envelope, key)


def test_a_logical_decoding_message_has_no_table() -> None:
    message = {"op": "m", "source": {"table": "", "ts_ms": 1}, "message": {"prefix": "p"}}
    assert _decode(message) is None  # no feature reads it: skipped, not dead-lettered


def test_missing_needed_column_names_it() -> None:
    after = {k: v for k, v in PAYMENT.items() if k != "merchant_id"}
    with pytest.raises(DecodeError, match="lacks needed column.*merchant_id"):
        _decode(_real(after=after))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"amount": 12.34}, "amount must be an exact decimal"),  # decimal.handling.mode=double
        ({"amount": "12.345"}, "more than 2 decimal places"),
        ({"amount": "twelve"}, "not a decimal"),
        ({"created_at": "yesterday"}, "created_at is not an ISO timestamp"),
        ({"created_at": True}, "created_at must be a timestamp"),
        ({"customer_id": {"nested": 1}}, "customer_id must be an integer or text key"),
        ({"merchant_id": [3]}, "merchant_id must be"),
        ({"status": 3}, "status must be text to compare with the filter value 'declined'"),
    ],
)
def test_wrong_typed_needed_column_is_a_decode_error(bad: dict, reason: str) -> None:
    """Caught at decode, so the shell dead-letters this one event, not the whole batch."""
    with pytest.raises(DecodeError, match=reason):
        _decode(_real(after={**PAYMENT, **bad}))
    with pytest.raises(DecodeError, match=f"before.{next(iter(bad))}"):
        _decode(_real(op="u", before={**PAYMENT, **bad}, after=PAYMENT))


def test_filter_columns_must_match_the_filter_type() -> None:
    outcome = {"payment_id": 1001, "is_fraud": 1, "reported_at": "2026-11-28T16:38:02Z"}
    envelope = _real(after=outcome, table="payment_outcomes")
    with pytest.raises(DecodeError, match="is_fraud must be a boolean"):
        _decode(envelope)
    assert _decode(_real(after={**outcome, "is_fraud": False}, table="payment_outcomes"))


def test_nulls_are_accepted_and_contribute_nothing() -> None:
    row = {**PAYMENT, "customer_id": None, "amount": None, "created_at": None, "status": None}
    event = _decode(_real(after=row))
    assert event is not None
    pipe, log = Pipeline(SAMPLE_FEATURES), Log()
    pipe.feed([log.emit("payments", "c", {"payment_id": 1001}, None, row)])
    merchant = pipe.values("merchant", 3, datetime(2026, 11, 28, 16, 40, tzinfo=UTC))
    assert merchant["merchant_payment_count_1h"] == 0  # no event time: in no window
    assert pipe.feature_fields("customer", "None") == {}
