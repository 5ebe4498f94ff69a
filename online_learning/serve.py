"""``freshloop learn serve``: the feature pipeline with the scoring hook, as one process.

It replaces ``features run`` for its namespace (it computes ``SCORING_FEATURES``). Scale out by
starting more of them: they share the pipeline's consumer group, each scoring the payments of
its partitions with the newest checkpoint of the champion (see ``online_learning.service``).
"""

from __future__ import annotations

import signal

from feature_pipelines import FeaturePipeline, PipelineStats
from freshloop.settings import Settings
from online_learning.features import SCORING_FEATURES
from online_learning.scorer import Scorer

__all__ = ["serve"]


def serve(settings: Settings) -> tuple[PipelineStats, Scorer]:
    """Run the scoring feature pipeline until SIGINT or SIGTERM."""
    scorer = Scorer(settings)
    pipeline = FeaturePipeline(settings, SCORING_FEATURES, on_applied=scorer)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pipeline.stop.set())
    return pipeline.run(), scorer
