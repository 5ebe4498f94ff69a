"""Errors of the HTTP API."""

from freshloop.core.exceptions import FreshloopError

__all__ = ["ApiError", "ApiStartError", "DependencyUnavailable", "TokenError", "TokenRefused"]


class ApiError(FreshloopError):
    """Root of the HTTP API's errors."""


class ApiStartError(ApiError):
    """The server could not listen where the settings say; the message names the setting."""


class DependencyUnavailable(ApiError):
    """A backing service (Postgres, Redis, Kafka, Connect) did not answer; answered with 503."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class TokenError(ApiError):
    """A token could not be created or revoked as asked (bad scope, name taken, no such name)."""


class TokenRefused(ApiError):
    """A request's token is malformed, unknown, revoked, expired or of another namespace."""
