"""Integration helpers: an isolated learning namespace, a scoring pipeline, waiting on counts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from confluent_kafka import TopicPartition

from feature_pipelines import FeaturePipeline
from freshloop.core.settings import Settings
from online_learning import SCORING_FEATURES, Scorer
from tests.fixtures import drop_namespace

__all__ = ["ScoringPipeline", "learn_ns", "wait_for"]


@pytest.fixture
def learn_ns(pipeline: Settings) -> Iterator[Settings]:
    """Own Redis namespace, predictions topic, consumer groups and registry rows; cleaned up."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = pipeline.model_copy(
        update={
            "redis_namespace": tag,
            "predictions_topic": f"{tag}.predictions",
            "metrics_port": 0,
            "learner_start": "latest",
            "label_horizon": timedelta(hours=1),
            "label_grace": timedelta(minutes=5),
            "checkpoint_every_examples": 50,
            "checkpoint_every_s": 1.0,
            "champion_poll_s": 1.0,
            "score_max_age": timedelta(minutes=1),
        }
    )
    yield settings
    drop_namespace(settings, tag)


class ScoringPipeline:
    """The feature pipeline with the scoring hook, in a thread, starting at the topics' ends."""

    def __init__(self, settings: Settings) -> None:
        self.scorer = Scorer(settings)
        self.pipeline = FeaturePipeline(
            settings, SCORING_FEATURES, on_applied=self.scorer, max_batch=500
        )
        # Only this test's writes: position the pipeline at the end of the shared change topics.
        ends = {}
        for topic in self.pipeline.topics:
            meta = self.pipeline.consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                _, high = self.pipeline.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10
                )
                ends[f"{topic}:{p}"] = high
        self.pipeline.writer.set_offsets(ends)  # one Redis or a Redis Cluster (redis_layout)
        self.thread = threading.Thread(target=self.pipeline.run, daemon=True)

    def __enter__(self) -> ScoringPipeline:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pipeline.stop.set()
        self.thread.join(timeout=30)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    msg = f"timed out after {timeout:.0f}s waiting for {what}"
    raise AssertionError(msg)
