"""Errors of the connector management stage."""

from freshloop.core.exceptions import FreshloopError

__all__ = ["ConnectError", "ConnectorFailedError", "ConnectorValidationError"]


class ConnectError(FreshloopError):
    """Kafka Connect's REST API could not be reached or answered with an error."""


class ConnectorValidationError(ConnectError):
    """Connect's validate endpoint rejected the connector configuration, field by field."""

    def __init__(self, message: str, errors: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.errors = errors


class ConnectorFailedError(ConnectError):
    """The connector or one of its tasks is FAILED (the message carries the trace)."""
