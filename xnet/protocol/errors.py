"""User errors — a bad config value, a missing or unreadable file, weights that do not fit — and
the entry points' handling of them: one line ``error: <message>`` on stderr and exit status 2.
Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

__all__ = ["UserError", "ConfigError", "WeightsError", "OutputError", "find_user_error", "exit_on_user_error", "USER_ERROR_EXIT"]

USER_ERROR_EXIT = 2  # as argparse does for a bad command line


class UserError(ValueError):
    """Something the user can fix; the message names the file, key or value."""


class ConfigError(UserError):
    """A config value that cannot work (``data.patch_size=0``, a model made for another task)."""


class WeightsError(UserError):
    """A weights file that cannot be used: unreadable, truncated, non-finite, another architecture."""


class OutputError(UserError, OSError):
    """A file that could not be written (full disk, no permission); the message names it."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import MissingMandatoryValue

    return (UserError, FileNotFoundError, MissingMandatoryValue)


def find_user_error(error: BaseException) -> BaseException | None:
    """The user error behind ``error``, looking through Hydra's ``InstantiationException`` (which
    wraps whatever a config's ``_target_`` raised); ``None`` for anything else (a bug)."""
    from hydra.errors import InstantiationException

    while error is not None:
        if isinstance(error, _user_error_types()):
            return error
        if not isinstance(error, InstantiationException):
            return None
        error = error.__cause__ or error.__context__
    return None


def describe(error: BaseException) -> str:
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a key"
        return f"{key}: no value given (add {key}=... to the command)"
    return str(error)


F = TypeVar("F", bound=Callable[..., Any])


def exit_on_user_error(main: F) -> F:
    """Wrap an entry point's Hydra task function (under ``@hydra.main``): a user error prints one
    line and exits with status 2 instead of Hydra's traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as e:
            cause = find_user_error(e)
            if cause is None:
                raise
            print(f"error: {describe(cause)}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)

    return wrapper  # type: ignore[return-value]
