"""The feature set a scoring pipeline runs: the sample features plus what the model needs.

Change events keep only the columns some feature reads, so a pipeline that scores payments must
read ``payments.channel`` (a fraud signal: bursts come through one channel). The extra feature,
distinct channels per customer over 24 h, is a fraud signal of its own. Run ``learn serve``
INSTEAD of ``features run`` for a namespace: one namespace, one feature set.
"""

from __future__ import annotations

from datetime import timedelta

from feature_pipelines import SAMPLE_FEATURES, Feature, FeatureSet
from feature_pipelines.catalog import CUSTOMER

__all__ = ["SCORING_FEATURES"]

SCORING_FEATURES = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        Feature(
            "distinct_channels_24h",
            CUSTOMER,
            "payments",
            "created_at",
            "distinct",
            "channel",
            window=timedelta(hours=24),
        ),
    ]
)
