"""Errors of the feature pipeline stage."""

from freshloop.core.exceptions import (
    DeadLetterError,
    DecodeError,
    FreshloopError,
    SourceTruncatedError,
)

__all__ = [
    "BatchRejectedError",
    "DeadLetterError",
    "DecodeError",
    "DefinitionError",
    "FeatureApplyError",
    "FeaturePipelineError",
    "RedisEvictionPolicyError",
    "RedisStateLostError",
    "SourceChangedError",
    "SourceTruncatedError",
    "UnknownServiceError",
]


class FeaturePipelineError(FreshloopError):
    """Root of the feature pipeline's errors."""


class DefinitionError(FeaturePipelineError):
    """A feature definition is inconsistent; the message says which field to fix."""


class FeatureApplyError(FeaturePipelineError):
    """``freshloop features apply`` cannot be done or did not finish; the message says why."""


class UnknownServiceError(DefinitionError):
    """No feature service has the name asked for; the message lists the known ones."""


class BatchRejectedError(FeaturePipelineError):
    """The batch script wrote nothing: a field would leave int64, holds no integer, or a key
    has another type (``rejection``: a ``rejects.Rejection``); its events are dead-lettered."""

    def __init__(self, message: str, rejection: object) -> None:
        super().__init__(message)
        self.rejection = rejection


class RedisStateLostError(FeaturePipelineError):
    """Redis lost the pipeline's state and the rebuild could not be started."""


class RedisEvictionPolicyError(FeaturePipelineError):
    """Redis may evict the pipeline's keys (its maxmemory-policy) and that was not allowed."""


class SourceChangedError(FeaturePipelineError):
    """The source database is another one, or went back, than the positions were taken from."""
