"""Errors of the feature pipeline stage."""

from freshloop.exceptions import FreshloopError

__all__ = [
    "DeadLetterError",
    "DecodeError",
    "DefinitionError",
    "FeaturePipelineError",
    "RedisStateLostError",
]


class FeaturePipelineError(FreshloopError):
    """Root of the feature pipeline's errors."""


class DefinitionError(FeaturePipelineError):
    """A feature definition is inconsistent; the message says which field to fix."""


class DecodeError(FeaturePipelineError):
    """A change event cannot be decoded or lacks a column a feature needs (dead-lettered)."""


class DeadLetterError(FeaturePipelineError):
    """Kafka did not acknowledge dead letters in time; the batch is not committed."""


class RedisStateLostError(FeaturePipelineError):
    """Redis lost the pipeline's state and the rebuild could not be started."""
