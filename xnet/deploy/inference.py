"""Weights → a restorer, and the published protocol that scores it; every entry point uses these.

:func:`load_restorer` is the one weights → network loader (a file or a zoo name; the architecture
stored with the weights wins over ``model=``), :func:`load_run` rebuilds a training checkpoint from
the run config it stores. :func:`score_image` is the protocol for one image (degraded input →
output → target → PSNR/SSIM), :func:`evaluate_module` its mean over a test set.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from xnet.archs.common import Restorer
from xnet.data.datasets import EvalDataset
from xnet.deploy.tiling import Tiler
from xnet.deploy.weights import load_weights, read_state_dict, resolve_weights, zoo_model_config
from xnet.protocol.errors import ConfigError, WeightsError
from xnet.protocol.io import ImageError, save_image
from xnet.protocol.tasks import Task
from xnet.utils.build import build_net, build_task
from xnet.utils.config import current_targets
from xnet.utils.precision import exact_float32
from xnet.utils.progress import progress
from xnet.utils.trust import check_targets

log = logging.getLogger(__name__)

MIN_SCORED_SIDE = 11  # the side of SSIM's Gaussian window (xnet.protocol.metrics.ssim)
StateAndExtra = tuple[dict[str, torch.Tensor], dict[str, Any]]  # what read_state_dict returns


# --- loading --------------------------------------------------------------------------------------
@dataclass
class LoadedRestorer:
    """Weights loaded into their architecture. ``cfg`` is the run config with the architecture the
    weights carry in place of ``model=`` (what ``metrics.json`` records); ``weights`` is ``None`` for
    a classical restorer; ``extra`` is what an xnet checkpoint stores beside the weights."""

    cfg: DictConfig
    task: Task
    restorer: Restorer
    weights: str | None
    extra: dict[str, Any]


def load_restorer(cfg: DictConfig, task: Task | None = None) -> LoadedRestorer:
    """Build the net and load ``cfg.weights`` (a file or a zoo name) into it.

    xnet checkpoints and zoo entries carry their config: that architecture is used (it is what
    the weights are), so ``model=`` only matters for plain state dicts. The task is built from the
    resulting config unless given (an SR model's input colour comes from its config).
    """
    if cfg.model.get("classical"):  # BM3D, the input (xnet.archs.classical): no weights, the output is the image
        task = task or build_task(cfg)
        return LoadedRestorer(cfg, task, Restorer(build_net(cfg, task), residual=False), None, {})
    path = resolve_weights(str(cfg.weights))
    loaded = read_state_dict(path)  # read once: the stored config and the weights
    if path.suffix == ".ckpt":
        stored, origin = (stored_run_config(loaded, path) or {}).get("model"), path
    else:
        stored, origin = zoo_model_config(path), path.parent / "config.yaml"
    if stored is not None:  # data, not code: only xnet's classes (xnet.utils.trust), checked before any is built
        check_targets(stored, str(origin), trusted_modules(cfg), where="model")
    cfg = with_stored_model(cfg, stored)
    return into_net(cfg, task or build_task(cfg), path, loaded)


def trusted_modules(cfg: DictConfig) -> tuple[str, ...]:
    """``trust_targets=[...]``: module prefixes the user trusts a stored config to build from."""
    return tuple(str(m) for m in (cfg.get("trust_targets") or ()))


#: the nodes of a stored run config that are ever built from it (the rest is read as data)
BUILT_FROM_RUN = ("task", "model", "data.test")


def load_run(path: str | Path, trusted: tuple[str, ...] = ()) -> LoadedRestorer:
    """A checkpoint saved by ``xnet.train``, rebuilt with the whole run config it stores: the task and
    the net are the ones it was trained as. The config's :data:`BUILT_FROM_RUN` nodes may only
    build xnet's classes (or those of the ``trusted`` modules)."""
    path = Path(path)
    loaded = read_state_dict(path)
    stored = stored_run_config(loaded, path)
    if stored is None:
        raise WeightsError(
            f"{path}: not an xnet training checkpoint (no run config stored in it); "
            "use a checkpoint saved by xnet.train"
        )
    for key in BUILT_FROM_RUN:
        check_targets(_node(stored, key), str(path), trusted, where=key)
    cfg = OmegaConf.create(stored)
    return into_net(cfg, build_task(cfg), path, loaded)


def _node(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def stored_run_config(loaded: StateAndExtra, path: Path) -> dict[str, Any] | None:
    """The resolved run config an xnet checkpoint stores (``checkpoint["xnet"]["config"]``), its
    ``_target_``s brought up to date (:func:`~xnet.utils.config.current_targets`) before they are checked."""
    xnet = loaded[1].get("xnet") or {}
    config = xnet.get("config") if isinstance(xnet, dict) else None
    if config is not None and not (isinstance(config, dict) and isinstance(config.get("model", {}), dict)):
        raise WeightsError(
            f"{path}: the run config stored in it is not a mapping of config nodes; not an xnet checkpoint"
        )
    return None if config is None else current_targets(config)


def with_stored_model(cfg: DictConfig, stored: dict[str, Any] | None) -> DictConfig:
    """``cfg`` with its ``model`` node *replaced* by the architecture stored with the weights: a
    merge would keep keys of ``model=`` that the stored one lacks (``depth`` in an xDnCNN)."""
    if not stored:
        return cfg
    if stored.get("name") != cfg.model.name:
        log.info(
            "using the architecture stored with the weights, '%s' (model=%s ignored)",
            stored.get("name"),
            cfg.model.name,
        )
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = stored
    return cfg


def into_net(cfg: DictConfig, task: Task, path: Path, loaded: StateAndExtra) -> LoadedRestorer:
    net = build_net(cfg, task)
    extra = load_weights(net, path, loaded)
    return LoadedRestorer(cfg, task, Restorer(net, residual=task.residual), str(path), extra.get("xnet", {}))


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA where there is one, else the CPU; a device this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as e:
        raise ConfigError(f"device={name}: not a device name (auto, cpu, cuda, cuda:1 ...)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU visible"
        raise ConfigError(f"device={name}: {build} here ({torch.__version__}); use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def inference_module(restorer: Restorer, fuse: bool) -> nn.Module:
    """The fast inference form (BN folded, xUnit gates fused) with ``fuse``, else eval mode; their
    outputs agree to float32 rounding (PSNR within 1e-4 dB per image: tests/test_evaluate.py)."""
    restorer = restorer.eval()
    if not fuse:
        return restorer
    from xnet.deploy.fuse import fuse as fuse_module  # the fused kernels load only when asked for

    return fuse_module(restorer)


# --- the protocol ---------------------------------------------------------------------------------
def check_finite_output(out: torch.Tensor, what: str) -> None:
    """NaN/inf in an output would be written as black pixels and scored as a number: refuse."""
    if not torch.isfinite(out).all():
        raise WeightsError(f"{what}: the restored output holds NaN/inf values — the weights or the input are broken")


@torch.inference_mode()
def score_image(
    restorer: nn.Module, task: Task, item: dict[str, Any], device: torch.device | str, tiler: Tiler
) -> tuple[torch.Tensor, dict[str, float]]:
    """One test image (an :class:`EvalDataset` item): its degraded input → the restored output →
    PSNR/SSIM against its target in the task's metric space. Returns ``(output, scores)``."""
    h, w = (side - 2 * task.border for side in item["target"].shape[-2:])
    if min(h, w) < MIN_SCORED_SIDE:
        raise ImageError(
            f"image {item['name']}: {w}×{h} px to score (after a {task.border}-px border shave); "
            f"SSIM needs at least {MIN_SCORED_SIDE}×{MIN_SCORED_SIDE}"
        )
    with exact_float32(torch.device(device).type):
        output = tiler(restorer, item["input"][None], device)[0]
    check_finite_output(output, f"image {item['name']}")
    scores = task.scores(output, item["target"], item["grey_source"])
    return output, {k: float(v) for k, v in scores.items()}


@torch.inference_mode()
def evaluate_module(
    restorer: nn.Module,
    task: Task,
    source: Any,
    seed: int = 0,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    image_dir: Path | None = None,
    tiler: Tiler | None = None,
) -> dict[str, Any]:
    """Per-image PSNR/SSIM of ``restorer`` on ``source`` (image ``i`` degraded with seed ``seed + i``);
    the means are over images. Images above ``tiler.max_pixels`` run in tiles (:mod:`xnet.deploy.tiling`;
    default: the restorer's own radius)."""
    restorer = restorer.to(device).eval()
    tiler = tiler or Tiler.for_model(restorer)
    dataset = EvalDataset(source, task, seed)
    name = getattr(source, "name", type(source).__name__)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:  # a mean over no images is not a figure
        raise ConfigError(f"{name}: no images to score (limit={limit})")
    log.info("scoring %s: %d images", name, n)
    rows = []
    for i in progress(range(n), desc=name, unit="img"):
        item = dataset[i]
        output, scores = score_image(restorer, task, item, device, tiler)
        rows.append({"image": item["name"], **scores})
        if image_dir is not None:
            save_image(output, image_dir / f"{item['name']}.png")
    metrics = [k for k in rows[0] if k != "image"]  # psnr, ssim (+ psnr_y, ssim_y where the task asks)
    return {"dataset": name, "images": n, **{k: sum(r[k] for r in rows) / n for k in metrics}, "per_image": rows}
