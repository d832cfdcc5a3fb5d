"""User errors — a bad config value, a missing or unreadable file, weights that do not fit — and
the entry points' handling of them: one line ``error: <message>`` on stderr and exit status 2.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "USER_ERROR_EXIT",
    "ConfigError",
    "MissingExtra",
    "OutputError",
    "UserError",
    "WeightsError",
    "exit_on_config_error",
    "exit_on_user_error",
    "find_user_error",
    "require_extra",
]

USER_ERROR_EXIT = 2  # as argparse does for a bad command line


class UserError(ValueError):
    """Something the user can fix; the message names the file, key or value. It is printed on one
    line (a library's multi-line text inside it joined) unless the class says ``multiline``."""

    multiline = False


class ConfigError(UserError):
    """A config value that cannot work (``data.patch_size=0``, a model made for another task)."""


class WeightsError(UserError):
    """A weights file that cannot be used: unreadable, truncated, non-finite, another architecture."""


class OutputError(UserError, OSError):
    """A file that could not be written (full disk, no permission); the message names it."""


class MissingExtra(ConfigError):
    """An optional feature asked for without its packages: the message names the extra that installs them."""


def extra_message(feature: str, extra: str, packages: list[str]) -> str:
    return f"{feature} needs the {extra} extra ({', '.join(packages)}): pip install 'xnet[{extra}]'"


def require_extra(feature: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` for ``feature`` (``format=onnx``) unless every module of the
    ``extra`` it needs is installed (found, not imported: the check costs nothing)."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a parent package missing, or a module set to None
            return True

    if missing := [m for m in modules if absent(m)]:
        raise MissingExtra(extra_message(feature, extra, missing))


#: config options that Hydra plugins add, and the extra and package that install each
PLUGIN_OPTIONS = {
    "hydra/launcher/joblib": ("sweep", "hydra-joblib-launcher"),
    "hydra/launcher/submitit_local": ("sweep", "hydra-submitit-launcher"),
    "hydra/launcher/submitit_slurm": ("sweep", "hydra-submitit-launcher"),
    "hydra/sweeper/optuna": ("sweep", "hydra-optuna-sweeper"),
    "hydra/sweeper/sampler": ("sweep", "hydra-optuna-sweeper"),  # the Optuna sweeper's samplers: tpe, random ...
}
_NOT_FOUND = re.compile(r"Could not (?:find|load) '(hydra/[\w/]+)/(\w+)'")


def missing_plugin(message: str) -> str | None:
    """``hydra/launcher=joblib needs the sweep extra ...`` for Hydra's "Could not find
    'hydra/launcher/joblib'" when that option is a plugin's; ``None`` for another message."""
    found = _NOT_FOUND.search(message)
    if found is None:
        return None
    group, option = found.groups()
    known = PLUGIN_OPTIONS.get(f"{group}/{option}") or PLUGIN_OPTIONS.get(group)
    return extra_message(f"{group}={option}", known[0], [known[1]]) if known else None


#: an OSError with one of these is the machine's state, which the user can change: a full disk or
#: quota, no permission, a read-only filesystem
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _user_error_types() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import MissingMandatoryValue

    return (UserError, FileNotFoundError, MissingMandatoryValue)


def is_environment_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


def find_user_error(error: BaseException) -> BaseException | None:
    """The user error behind ``error``, looking through Hydra's ``InstantiationException`` (which
    wraps whatever a config's ``_target_`` raised); ``None`` for anything else (a bug)."""
    from hydra.errors import InstantiationException

    while error is not None:
        if isinstance(error, _user_error_types()) or is_environment_error(error):
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
    if getattr(error, "multiline", False):  # a list by design (restore's failed images)
        return str(error)
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return one_line(str(error))


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined, a list under a ``...:`` line (Hydra's "Available
    options in 'trainer':" and its tab-indented names) joined with commas."""
    out: list[str] = []
    listing = False
    for line in (raw.strip() for raw in str(text).split("Config search path:")[0].splitlines()):
        if not line:
            continue
        listing = listing and " " not in line
        if listing:
            out[-1] += (" " if out[-1].endswith(":") else ", ") + line
        else:
            out.append(line)
        listing = listing or line.endswith(":")
    return " ".join(out)


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
                e._xnet_task_error = True  # type: ignore[attr-defined]  # a bug: exit_on_config_error leaves it be
                raise
            print(f"error: {describe(cause)}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)

    return wrapper  # type: ignore[return-value]


def hydra_user_error(error: BaseException) -> str | None:
    """The one-line message of an error Hydra raised before or around the task function — a bad
    override, an unknown key or config option, an unresolvable value, a run dir it cannot write —
    or ``None`` for anything else (a bug, raised again)."""
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    if getattr(error, "_xnet_task_error", False):
        return None
    if isinstance(error, CompactHydraException) and not isinstance(error, InstantiationException):
        if plugin := missing_plugin(str(error)):
            return plugin
        cause = error.__cause__
        first = (
            str(cause).strip().splitlines()[0]
            if isinstance(cause, OmegaConfBaseException) and str(cause).strip()
            else ""
        )
        extra = f" ({first})" if first and first not in str(error) else ""
        return one_line(str(error)) + extra
    if isinstance(error, OmegaConfBaseException):
        return one_line(str(error))
    if is_environment_error(error):
        return describe(error)
    return None


def exit_on_config_error(main: F) -> F:
    """Wrap an entry point's ``@hydra.main`` function (outermost): Hydra's own errors — found
    while composing the config or preparing the run dir, before the task function runs — print one
    line and exit with status 2, as a user error inside the task does. Hydra is asked to raise them
    (``HYDRA_FULL_ERROR``) instead of printing them itself; ``--help``, ``--cfg``, tab completion
    and multiruns are untouched (their exits are SystemExits), and a bug keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main(*args, **kwargs)
        except Exception as e:
            message = hydra_user_error(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)
        finally:
            if previous is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = previous

    return wrapper  # type: ignore[return-value]
