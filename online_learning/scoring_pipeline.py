"""``freshloop learn serve``: the feature pipeline with the scoring hook, as one process.

It replaces ``features run`` for its namespace and computes the same set, the one in use
(``FRESHLOOP_FEATURE_DEFINITIONS``, checked to hold the feature service's inputs). Scale out by
starting more of them: they share the pipeline's consumer group, each scoring the payments of
its partitions with the newest checkpoint of the champion (see ``online_learning.learner_process``).
"""

from __future__ import annotations

import logging
import signal
import threading

from feature_pipelines import FeaturePipeline, PipelineStats
from freshloop.core.exceptions import DependencyRetryStopped
from freshloop.core.settings import Settings
from online_learning.scoring_hook import Scorer
from online_learning.services import scoring_feature_set

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings) -> tuple[PipelineStats, Scorer]:
    """Run the scoring feature pipeline until SIGINT or SIGTERM."""
    stop = threading.Event()  # also ends the scorer's wait for Postgres or Kafka
    features = scoring_feature_set(settings)
    scorer = Scorer(settings, features=features, stop=stop)
    pipeline = FeaturePipeline(settings, features, on_applied=scorer, stop=stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return pipeline.run(), scorer
    except DependencyRetryStopped as exc:
        log.warning("stopped while waiting for a dependency: %s", exc)
        return pipeline.stats, scorer
