"""The Hydra configs, shipped inside the package (``pkg://xnet.conf``; the entry points'
``config_path="conf"``). Add your own config dir with ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]``: its groups and files sit beside these."""
from __future__ import annotations

from collections.abc import Sequence
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
