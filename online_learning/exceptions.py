"""Errors of the online-learning stage."""

from freshloop.core.exceptions import FreshloopError

__all__ = [
    "BlobKindError",
    "LearnerBusyError",
    "MessageError",
    "ModelSpecError",
    "NaiveDatetimeError",
    "OnlineLearningError",
    "PredictionsNotAcknowledged",
    "RegistryError",
    "SignatureError",
    "SnapshotError",
    "TrainingSetError",
    "VectorError",
    "VersionMismatchError",
]


class OnlineLearningError(FreshloopError):
    """Root of the online-learning stage's errors."""


class VectorError(OnlineLearningError):
    """A payment or a served feature cannot be turned into model inputs; the message says which."""


class NaiveDatetimeError(OnlineLearningError):
    """A timestamp without a timezone reached the stage; decode timestamps as aware UTC."""


class ModelSpecError(OnlineLearningError):
    """A model spec names no importable River classifier or has bad parameters."""


class SignatureError(OnlineLearningError):
    """A blob is not signed, was tampered with, or was signed with another key; it is not loaded."""


class BlobKindError(OnlineLearningError):
    """A correctly signed blob holds another kind of object than the one asked for."""


class VersionMismatchError(OnlineLearningError):
    """A blob was written by another River version and the policy is to refuse it."""


class SnapshotError(OnlineLearningError):
    """A learner or join snapshot is malformed or of an unknown format version."""


class MessageError(OnlineLearningError):
    """A prediction message or outcome event cannot be decoded; it is dead-lettered, not learned."""


class RegistryError(OnlineLearningError):
    """The model registry has no such model, or no champion where one is needed."""


class LearnerBusyError(OnlineLearningError):
    """Another learner process already owns this namespace; run one learner per namespace."""


class PredictionsNotAcknowledged(OnlineLearningError):
    """Kafka did not acknowledge logged predictions in time (the scorer flushes again)."""


class TrainingSetError(OnlineLearningError):
    """A training set cannot be built as asked (range, time zone, missing row history)."""
