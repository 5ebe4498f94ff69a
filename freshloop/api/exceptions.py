"""Errors of the HTTP API."""

from freshloop.exceptions import FreshloopError

__all__ = ["ApiError", "ApiStartError", "DependencyUnavailable"]


class ApiError(FreshloopError):
    """Root of the HTTP API's errors."""


class ApiStartError(ApiError):
    """The server could not listen where the settings say; the message names the setting."""


class DependencyUnavailable(ApiError):
    """A backing service (Postgres, Redis, Kafka, Connect) did not answer; answered with 503."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency
