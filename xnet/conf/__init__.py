"""The Hydra configs, shipped inside the package (``pkg://xnet.conf``; the entry points'
``config_path="conf"``). Add your own config dir with ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]``: its groups and files sit beside these."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """The config ``config_name`` (``train``, ``eval`` ...) with ``overrides``, composed outside a
    Hydra app, or inside one (then with its search path)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name, list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, list(overrides))


def current_net_config(net: Mapping[str, Any]) -> dict[str, Any]:
    """A ``model.net`` node (plain data) in today's form: configs written before
    :class:`~xnet.archs.xunit.XUnitConfig` — older checkpoints, zoo entries and run dirs — had
    ``xunit_kernel: r`` beside ``xunit: {...}``."""
    net = dict(net)
    if "xunit_kernel" in net:
        net["xunit"] = {"kernel_size": net.pop("xunit_kernel"), **dict(net.get("xunit") or {})}
    return net
