"""The project's root exception and the errors the shared package raises."""

__all__ = [
    "ConfigurationError",
    "DeadLetterError",
    "DecodeError",
    "DependencyRetryStopped",
    "FencedError",
    "FreshloopError",
    "SetupError",
    "ServicePartDied",
    "SourceTruncatedError",
    "StackError",
    "TopicError",
]


class FreshloopError(Exception):
    """Root of every error Freshloop raises on purpose."""


class ConfigurationError(FreshloopError):
    """A setting is missing or wrong; the message says how to fix it."""


class SetupError(FreshloopError):
    """Something the machine needs is not installed; the message gives the command to run."""


class StackError(FreshloopError):
    """A local service could not be started, reached or stopped."""


class DeadLetterError(FreshloopError):
    """Kafka did not acknowledge dead letters in time: nothing past them may be committed."""


class TopicError(FreshloopError):
    """Kafka could not be reached to create a topic, or a topic has another partition count."""


class DependencyRetryStopped(FreshloopError):
    """A part was asked to stop while it waited for a dependency to come back."""


class FencedError(FreshloopError):
    """Another copy took over this namespace's learner or scheduler (a newer epoch): stop."""


class ServicePartDied(FreshloopError):
    """A thread of ``freshloop serve`` ended with an error: the process exits to be restarted."""


class DecodeError(FreshloopError):
    """A change event cannot be decoded or lacks a column a stage needs (dead-lettered)."""


class SourceTruncatedError(FreshloopError):
    """A TRUNCATE of a table a stage reads: refused (dead-lettered, health degraded)."""

    def __init__(self, message: str, table: str, position: tuple[int, int]) -> None:
        super().__init__(message)
        self.table = table
        self.position = position
