"""The shipped Hydra configs (``conf/`` at the repository's top, installed as the package data
``xnet.conf``) and stored configs brought up to date: a config read back from a checkpoint, a zoo entry
or a run's ``metrics.json`` may predate a rename."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: where the entry points' ``@hydra.main`` finds the configs
CONFIG_PATH = "pkg://xnet.conf"

#: ``_target_`` module prefixes that moved: (old, new), in configs stored before the move
MOVED_TARGETS = (
    ("xnet.tasks.", "xnet.protocol.tasks."),
    ("xnet.data.degradations.", "xnet.protocol.degradations."),
    ("xnet.data.rain.", "xnet.protocol.rain."),
)


def conf_dir() -> Path:
    """The config folder on disk (the repository's ``conf/`` in a checkout, ``xnet/conf`` installed)."""
    return Path(str(importlib.resources.files("xnet.conf")))


def compose_config(config_name: str, overrides: Sequence[str] = (), with_hydra: bool = False) -> Any:
    """The config ``config_name`` (``train``, ``eval`` ...) with ``overrides``, composed outside a
    Hydra app, or inside one (then with its search path); ``with_hydra`` keeps the ``hydra`` node (the
    sweeper's parameters live there)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name, list(overrides), return_hydra_config=with_hydra)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name, list(overrides), return_hydra_config=with_hydra)


def current_net_config(net: Mapping[str, Any]) -> dict[str, Any]:
    """A ``model.net`` node (plain data) in today's form: configs written before
    :class:`~xnet.archs.xunit.XUnitConfig` — older checkpoints, zoo entries and run dirs — had
    ``xunit_kernel: r`` beside ``xunit: {...}``."""
    net = dict(net)
    if "xunit_kernel" in net:
        net["xunit"] = {"kernel_size": net.pop("xunit_kernel"), **dict(net.get("xunit") or {})}
    return net


def read_stored_config(path: Path) -> dict[str, Any]:
    """A config saved as YAML (a zoo entry's ``config.yaml``, a run's ``.hydra/config.yaml``) as plain
    data, its ``_target_``s brought up to date."""
    from omegaconf import OmegaConf

    return current_targets(OmegaConf.to_container(OmegaConf.load(path)))


def current_targets(node: Any) -> Any:
    """``node`` (plain data) with every ``_target_`` of a moved module renamed (:data:`MOVED_TARGETS`)."""
    if isinstance(node, Mapping):
        return {k: current_target(v) if k == "_target_" else current_targets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [current_targets(v) for v in node]
    return node


def current_target(target: Any) -> Any:
    for old, new in MOVED_TARGETS:
        if isinstance(target, str) and target.startswith(old):
            return new + target[len(old) :]
    return target
