"""The feature set a scoring pipeline runs: the sample features plus what the model needs
(defined beside the sample set, ``feature_pipelines.catalog.SCORING_FEATURES``, the default of
``FRESHLOOP_FEATURE_DEFINITIONS``; named here too for the learning stage's callers)."""

from __future__ import annotations

from feature_pipelines.catalog import SCORING_FEATURES

__all__ = ["SCORING_FEATURES"]
