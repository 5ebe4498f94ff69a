"""Namespaces isolate learning: pure parts (topic names, the message's namespace)."""

from __future__ import annotations

from freshloop.core.settings import Settings
from online_learning.messages import encode_prediction, foreign_namespace
from tests.online_learning.fixtures import make_payment


def test_the_default_predictions_topic_carries_the_namespace() -> None:
    base = Settings(topic_prefix="shop")
    assert base.predictions_topic_name == "shop.predictions"
    a = base.model_copy(update={"redis_namespace": "demo"})
    b = base.model_copy(update={"redis_namespace": "team:b/1"})
    assert a.predictions_topic_name == "shop.demo.predictions"
    assert b.predictions_topic_name == "shop.team_b_1.predictions"
    assert a.model_copy(update={"predictions_topic": "x.p"}).predictions_topic_name == "x.p"


def test_a_prediction_message_names_its_namespace() -> None:
    from datetime import UTC, datetime

    from online_learning.records import Prediction

    p = make_payment(7)
    prediction = Prediction(7, 0.5, {"amount": 25.0}, "v1", p.created_at, datetime.now(UTC))
    value = encode_prediction(prediction, ns="demo")
    assert foreign_namespace(value, "demo") is None
    assert foreign_namespace(value, "freshloop") == "demo"
    assert foreign_namespace(encode_prediction(prediction), "freshloop") is None  # older messages
    assert foreign_namespace(b"not json", "freshloop") is None  # left to the decoder to reject
