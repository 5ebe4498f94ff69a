"""Stage 2: change events -> incremental per-entity features in Redis, exact and fresh."""

from feature_pipelines.catalog import SAMPLE_FEATURES, FeatureSet
from feature_pipelines.consumer import FeaturePipeline, PipelineStats, run_pipeline
from feature_pipelines.exceptions import DecodeError, DefinitionError, FeaturePipelineError
from feature_pipelines.live_stats import pipeline_stats
from feature_pipelines.spec import Condition, Entity, Feature, Lookup, describe
from feature_pipelines.store_read import AsyncFeatureStore, EntityFeatures, FeatureStore
from feature_pipelines.verify import VerifyReport, verify, verify_until_clean

__all__ = [
    "SAMPLE_FEATURES",
    "AsyncFeatureStore",
    "Condition",
    "DecodeError",
    "DefinitionError",
    "Entity",
    "EntityFeatures",
    "Feature",
    "FeaturePipeline",
    "FeaturePipelineError",
    "FeatureSet",
    "FeatureStore",
    "Lookup",
    "PipelineStats",
    "VerifyReport",
    "describe",
    "pipeline_stats",
    "run_pipeline",
    "verify",
    "verify_until_clean",
]
