"""What every stage's command module shares: a named error ends the command with one line and
exit code 2 (never a traceback), and the settings are loaded (and checked) when a command runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from freshloop.core.exceptions import FreshloopError
from freshloop.core.settings import Settings, load_settings

__all__ = ["friendly", "settings"]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """The command, with a ``FreshloopError`` shown as ``error: ...`` on stderr, exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FreshloopError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    """The settings from the environment; a bad one stops here with how to fix it."""
    return load_settings()
