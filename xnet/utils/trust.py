"""Configs read from files are data, not code.

A config stored in a checkpoint, a zoo entry's ``config.yaml`` or a run's ``metrics.json`` is built
with Hydra's ``instantiate``, which calls whatever ``_target_`` names: ``{_target_: shutil.copyfile,
_args_: [a, b]}`` would copy a file the moment the checkpoint is opened (Hydra's own blocklist
stops ``os.system``, not the rest of the standard library). :func:`check_targets` walks such a
config *before* anything is built and accepts only xnet's own classes: the architectures, the Task,
the degradations and the image sources (:data:`TRUSTED_MODULES`). The command line is not checked:
a model class of the user's own ``--config-dir`` trains as before.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from xnet.protocol.errors import ConfigError

__all__ = ["TRUSTED_MODULES", "UntrustedConfigError", "check_target", "check_targets"]

#: The modules (and their sub-modules) whose classes a stored config may build. Module prefixes in
#: one place: when a module moves, update its line here.
TRUSTED_MODULES: tuple[str, ...] = (
    "xnet.archs",  # the architectures (nn.Module classes)
    "xnet.protocol.tasks",  # Task
    "xnet.protocol.degradations",  # GaussianNoise, Bicubic
    "xnet.protocol.rain",  # RainStreaks
    "xnet.data.sources",  # ImageFolder, PairedFolder, ... (a test set)
)

#: Hydra keys that change how a target is called but call nothing themselves.
_HARMLESS_KEYS = frozenset({"_target_", "_args_", "_convert_", "_recursive_"})
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class UntrustedConfigError(ConfigError):
    """A config read from a file names something other than one of xnet's own classes."""


def _under(name: str, modules: Iterable[str]) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def _refuse(origin: str, where: str, what: str, modules: Sequence[str]) -> UntrustedConfigError:
    return UntrustedConfigError(
        f"{origin}: {where}: {what}; refused — a config read from a file may only build xnet's own classes "
        f"({', '.join(m + '.*' for m in modules)}); if you trust this file, name its module in trust_targets=[...]"
    )


def _import_owner(target: str, modules: Sequence[str]) -> tuple[Any, list[str]]:
    """The longest importable module prefix of ``target`` that lies under ``modules`` (only those
    are ever imported: importing any other module would run its top-level code), and the rest."""
    parts = target.split(".")
    for m in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:m])
        if not _under(name, modules):
            continue
        try:
            return importlib.import_module(name), parts[m:]
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(target)


def check_target(target: Any, where: str, origin: str, trusted: Sequence[str] = ()) -> type:
    """The class ``target`` names, if it is one defined in a trusted module; else
    :class:`UntrustedConfigError`. The dotted name is checked before anything is imported, the
    object it resolves to after (``xnet.archs.common.os.system`` starts well but is a function of
    ``os``)."""
    modules = (*TRUSTED_MODULES, *trusted)
    shown = f"{where}._target_" if where else "_target_"
    if not isinstance(target, str) or not _DOTTED.fullmatch(target) or not _under(target, modules):
        raise _refuse(origin, f"{shown}={target!r}", "not one of xnet's classes", modules)
    try:
        obj, rest = _import_owner(target, modules)
        for attr in rest:
            obj = getattr(obj, attr)
    except (ImportError, AttributeError) as e:
        raise UntrustedConfigError(f"{origin}: {shown}={target}: no such class ({e})") from e
    if not isinstance(obj, type) or not _under(getattr(obj, "__module__", "") or "", modules):
        kind = "a class" if isinstance(obj, type) else type(obj).__name__
        raise _refuse(
            origin,
            f"{shown}={target}",
            f"resolves to {kind} {getattr(obj, '__module__', '?')}."
            f"{getattr(obj, '__qualname__', '?')}, not a class of xnet's",
            modules,
        )
    return obj


def _walk(node: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """``(path, key, value)`` for every mapping entry and list item under ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield where, key, value
            yield from _walk(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        yield where, None, node


def modules_of(node: Any) -> tuple[str, ...]:
    """The modules of every ``_target_`` in ``node``: what a config the user composed on the command
    line already trusts (a run's own checkpoints, read back after fit, may build the same)."""
    found = {str(v).rsplit(".", 1)[0] for _, k, v in _walk(as_data(node), "") if k == "_target_" and "." in str(v)}
    return tuple(sorted(found))


def as_data(node: Any) -> Any:
    """Plain containers of ``node`` (a DictConfig is read unresolved: resolving is a call too)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False)
    return node


def check_targets(node: Any, origin: str, trusted: Sequence[str] = (), where: str = "") -> None:
    """Refuse ``node`` (a config read from the file ``origin``; ``where``: its key there) unless
    every ``_target_`` in it is a class of :data:`TRUSTED_MODULES` (or of ``trusted``); refuse
    ``_partial_`` (a callable to call later), other ``_..._`` keys of Hydra's, and interpolations
    (``${...}`` runs a resolver; stored configs are saved resolved)."""
    modules = (*TRUSTED_MODULES, *trusted)
    for path, key, value in _walk(as_data(node), where):
        if key is None:
            raise _refuse(origin, f"{path}={value!r}", "an interpolation in a stored config", modules)
        if key == "_target_":
            check_target(value, path, origin, trusted)
        elif isinstance(key, str) and key.startswith("_") and key.endswith("_") and key not in _HARMLESS_KEYS:
            raise _refuse(origin, f"{path}.{key}" if path else key, f"Hydra's {key} is not accepted", modules)
