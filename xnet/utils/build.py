"""Turn a composed Hydra config into objects. ``_target_`` is the registry: nothing here knows a
model by name."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xnet.protocol.errors import ConfigError, find_user_error, require_extra
from xnet.protocol.io import reset_warnings
from xnet.protocol.tasks import Task
from xnet.utils.config import current_net_config
from xnet.utils.logs import quiet_logs
from xnet.utils.memory import retain_freed_memory

log = logging.getLogger(__name__)


def instantiate_config(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node)``; a ValueError/TypeError from its target (a bad value or an unknown
    option the user gave) becomes one :class:`ConfigError` naming ``key``."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if find_user_error(e) is not None or not isinstance(cause, (ValueError, TypeError)):
            raise
        raise ConfigError(f"{key}: {cause}") from e


def build_task(cfg: DictConfig) -> Task:
    return instantiate_config(cfg.task, "task")


def build_net(cfg: DictConfig, task: Task | None = None) -> nn.Module:
    """The architecture of ``cfg.model``, after checking that it is made for ``cfg.task``."""
    task = task or build_task(cfg)
    task.check_model(cfg.model.name, cfg.model.get("tasks"))
    node = cfg.model.net
    if "xunit_kernel" in node:
        node = OmegaConf.create(current_net_config(OmegaConf.to_container(node, resolve=True)))
    net = instantiate_config(node, f"model={cfg.model.name} (model.net)")
    in_ch = _input_channels(net)
    if in_ch is not None and in_ch != task.channels:
        raise ConfigError(
            f"model '{cfg.model.name}' takes {in_ch}-channel images but task '{task.name}' works on "
            f"{task.channels} ({task.color}); use a model config with matching channels"
        )
    return net


def _input_channels(net: nn.Module) -> int | None:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else first.in_channels


def build_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``{key: {_target_: ...}}`` group (loggers, callbacks)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data (stored in checkpoints and metrics.json)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def setup_runtime(cfg: DictConfig) -> None:
    """Threads, CPU memory reuse (:mod:`xnet.utils.memory`), and W&B that never prompts:
    offline unless a key is configured (without wandb installed: one line naming the extra).
    Conversion warnings (:func:`xnet.protocol.io.warn_once`) start afresh; logs go through Hydra's
    handlers once, without third-party noise (:func:`xnet.utils.logs.quiet_logs`)."""
    quiet_logs()
    reset_warnings()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.get("retain_cpu_memory", True):
        retain_freed_memory()
    if "wandb" not in (cfg.get("logger") or {}):
        return
    require_extra("logger=wandb", "wandb", "wandb")
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: not logged in, logging offline to <run dir>/wandb (sync later: see the README)")


def wandb_logged_in() -> bool:
    """Whether wandb has credentials for its configured host — ``WANDB_API_KEY``, its settings, or a
    ``.netrc`` entry for that host (a self-hosted server too) — asked of wandb itself, with no
    network call and no prompt. ``wandb.login(prompt=False)`` is that lookup, but on success it
    fetches the user name from the server to greet them: its silent form skips the greeting."""
    import wandb

    try:
        try:
            from wandb.sdk.wandb_login import _login

            return bool(_login(prompt=False, verify=False, _silent=True)[0])
        except (ImportError, TypeError):  # another wandb: its api object reads the same places
            return bool(wandb.api.api_key)
    except Exception as e:
        log.warning("W&B: cannot read the credentials (%s)", e)
        return False
