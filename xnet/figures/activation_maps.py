"""Figs 5/9: what a layer's activation does — feature maps, weight maps and their products.

    # default out: outputs/visualize/<time>
    python -m xnet.figures.activation_maps weights=<ckpt> image=<png> [layer=4] [out=dir]
    python -m xnet.figures.activation_maps weights=<xnet.ckpt>,<convnet.ckpt> image=<png> layer=4 out=fig5

For the chosen activation layer (1-based, counted from the input; ``-1`` = the last) it saves 8×8
grids of the 64 feature maps ``z`` (the conv output entering the activation), the weight maps ``g``
(the xUnit gate; for a ReLU the indicator ``z > 0``) and the products ``x = z·g``, per net and side by
side when several checkpoints are given. It prints (and writes to ``stats.json``) how dense the
weights are: the fraction of gate values above ``threshold`` (0.9) for xUnits against the fraction of
positive values for ReLUs — the paper's "xNet activations are dense" observation — and the largest value
the layer passes on.

The net and task come from the resolved run config stored in the checkpoint by ``xnet.train``
(``checkpoint["xnet"]["config"]``); the noisy input is made with the task's test protocol (seed
``seed``), so the maps are those of a test-time forward pass. Arguments are ``key=value`` (or
``--key value``): weights, image, layer, out, seed, sigma, crop, threshold, channels.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from xnet.protocol.atomic import atomic_path, write_json
from xnet.protocol.errors import exit_on_user_error

log = logging.getLogger(__name__)


# --- loading -------------------------------------------------------------------------------------
@dataclass
class Run:
    """A trained restorer rebuilt from its checkpoint, with the task it was trained on."""

    path: Path
    cfg: Any
    task: Any
    restorer: nn.Module
    label: str


def run_from_checkpoint(path: str | Path, sigma: float | None = None) -> Run:
    """The net and task a checkpoint of ``xnet.train`` stores (:func:`xnet.deploy.inference.load_run`);
    ``sigma``: the task's own degradation at another noise level."""
    from xnet.deploy.inference import load_run
    from xnet.figures.sweep_plots import xunit_variant
    from xnet.utils.build import build_task

    loaded = load_run(path)
    cfg = loaded.cfg if sigma is None else with_noise_level(loaded.cfg, sigma)
    task = loaded.task if sigma is None else build_task(cfg)
    net_cfg = cfg.model.net
    depth = net_cfg.get("depth") or net_cfg.get("num_blocks")
    label = f"{cfg.model.name}-d{depth}" if depth is not None else str(cfg.model.name)
    if net_cfg.get("xunit") is not None:  # Fig 6's variants side by side: say which unit each net has
        label += f"-{xunit_variant(OmegaConf.to_container(net_cfg.xunit))}"
    return Run(Path(path), cfg, task, loaded.restorer.eval(), label)


def with_noise_level(cfg: DictConfig, sigma: float) -> DictConfig:
    """The run config with its degradation at noise level ``sigma`` (test-time level included)."""
    from xnet.protocol.errors import ConfigError

    degradation = cfg.task.degradation
    if "sigma" not in degradation:
        raise ConfigError(f"sigma={sigma}: this run's degradation ({degradation.get('_target_')}) has no noise level")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.task.sigma = cfg.task.degradation.sigma = sigma
        if "eval_sigma" in degradation:
            cfg.task.degradation.eval_sigma = sigma
    return cfg


# --- capturing -----------------------------------------------------------------------------------
def activation_modules(net: nn.Module) -> list[nn.Module]:
    """The activation layers in forward order: xUnits, and ReLUs that are not inside an xUnit."""
    from xnet.archs.xunit import XUnit

    inside = {id(m) for x in net.modules() if isinstance(x, XUnit) for m in x.modules() if m is not x}
    return [m for m in net.modules() if isinstance(m, (XUnit, nn.ReLU)) and id(m) not in inside]


@dataclass
class LayerMaps:
    kind: str  # "xunit" or "relu"
    z: torch.Tensor  # C×H×W, the activation's input
    g: torch.Tensor  # the weight map
    x: torch.Tensor  # the activation's output z·g
    stats: dict[str, float] = field(default_factory=dict)


def capture(restorer: nn.Module, inp: torch.Tensor, layer: int) -> tuple[LayerMaps, torch.Tensor]:
    """Run ``restorer`` on ``inp`` (C×H×W) and return the maps of activation ``layer`` and the output."""
    from xnet.archs.xunit import XUnit

    acts = activation_modules(restorer)
    if not acts:
        raise ValueError("this net has no xUnit or ReLU activation to show")
    idx = layer - 1 if layer > 0 else len(acts) + layer
    if not 0 <= idx < len(acts):
        raise ValueError(
            f"layer={layer}: this net has {len(acts)} activation layers (1..{len(acts)}, or -1 for the last)"
        )
    module = acts[idx]
    got: dict[str, LayerMaps] = {}

    def hook(mod: nn.Module, args: tuple) -> None:
        z = args[0].detach().float().clone()  # clone: a ReLU may work in place
        if isinstance(mod, XUnit):
            g = mod.weight_map(z)
            got["m"] = LayerMaps("xunit", z[0], g[0], (z * g)[0])
        else:
            g = (z > 0).float()
            got["m"] = LayerMaps("relu", z[0], g[0], z.clamp_min(0)[0])

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            out = restorer(inp[None].float())[0]
    finally:
        handle.remove()
    return got["m"], out


def density(m: LayerMaps, threshold: float = 0.9) -> dict[str, float]:
    """How much of the layer passes: for xUnits the gate values near 1, for ReLUs the positive inputs."""
    g = m.g.float()
    stats = {
        "frac_g_above_threshold": float((g > threshold).float().mean()),
        "frac_g_below_0.1": float((g.abs() < 0.1).float().mean()),
        "mean_g": float(g.mean()),
        "frac_z_positive": float((m.z > 0).float().mean()),
        "frac_x_nonzero": float((m.x.abs() > 1e-6).float().mean()),
        # an unbounded weight map (Fig 6's BN+RL+CD) compounds layer by layer: this is where it shows
        "max_abs_x": float(m.x.abs().max()),
    }
    return stats


# --- drawing -------------------------------------------------------------------------------------
def tile(
    maps: torch.Tensor,
    per_map: bool = True,
    vrange: tuple[float, float] | None = None,
    ncols: int = 8,
    pad: int = 2,
    fill: float = 1.0,
) -> np.ndarray:
    """C×H×W → one grey image (float in [0, 1]) of ``ncols`` columns, maps separated by ``fill`` lines."""
    a = maps.detach().cpu().float().numpy()
    c, h, w = a.shape
    if vrange is not None:
        a = (a - vrange[0]) / max(vrange[1] - vrange[0], 1e-12)
    elif per_map:
        lo = a.reshape(c, -1).min(1)[:, None, None]
        hi = a.reshape(c, -1).max(1)[:, None, None]
        a = (a - lo) / np.maximum(hi - lo, 1e-12)
    a = np.clip(a, 0, 1)
    ncols = min(ncols, c)
    nrows = math.ceil(c / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), fill, dtype=np.float32)
    for i in range(c):
        r, q = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = a[i]
    return grid


def save_grey(img: np.ndarray, path: Path) -> Path:
    from xnet.protocol.io import save_image

    return save_image(torch.from_numpy(img)[None], path)


def panels(m: LayerMaps, channels: int) -> dict[str, np.ndarray]:
    n = min(channels, m.z.shape[0])
    side = max(1, math.ceil(math.sqrt(n)))
    return {
        "z": tile(m.z[:n], ncols=side),
        # weight maps are mostly white for xUnits: grey separators keep the maps apart
        "g": tile(
            m.g[:n], vrange=(0.0, 1.0) if m.kind == "relu" or float(m.g.min()) >= 0 else None, ncols=side, fill=0.5
        ),
        "x": tile(m.x[:n], ncols=side),
    }


def draw_figure(
    items: Sequence[tuple[str, LayerMaps, dict[str, np.ndarray]]],
    layer: int,
    threshold: float,
    path: Path,
    title: str | None = None,
) -> Path:
    """Rows: nets; columns: feature maps z, weight maps g, products x (Fig 5 of the paper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 3, figsize=(12, 4.6 * len(items)), dpi=120, squeeze=False)
    titles = {"z": "feature maps z (conv output)", "g": "weight maps g", "x": "activations x = z·g"}
    for row, (label, m, pics) in zip(axes, items):
        s = m.stats
        note = (
            f"g > {threshold:g} for {100 * s['frac_g_above_threshold']:.1f}%, "
            f"g < 0.1 for {100 * s['frac_g_below_0.1']:.1f}% (mean {s['mean_g']:.2f})"
            if m.kind == "xunit"
            else f"ReLU: g = 1 (z > 0) for {100 * s['frac_z_positive']:.1f}%, "
            f"g = 0 for {100 * s['frac_g_below_0.1']:.1f}%"
        )
        for ax, key in zip(row, ("z", "g", "x")):
            ax.imshow(pics[key], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{label}: {titles[key]}" + (f"\n{note}" if key == "g" else ""), fontsize=9)
    fig.suptitle(title or f"activation layer {layer}", fontsize=11)
    fig.tight_layout(h_pad=2.0)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``key=value`` tokens (Hydra style) or ``--key value``; ``weights`` may repeat or be comma-separated."""
    tokens: list[str] = []
    for a in argv:
        if not a.startswith("-") and "=" in a:
            k, v = a.split("=", 1)
            tokens += [f"--{k}", v]
        else:
            tokens.append(a)
    p = argparse.ArgumentParser(prog="python -m xnet.figures.activation_maps", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", required=True, help="checkpoint(s) saved by xnet.train")
    p.add_argument("--image", required=True, help="a clean image; the task's degradation is applied")
    p.add_argument("--layer", type=int, default=-1, help="activation layer, 1-based (-1: the last)")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a run dir, outputs/visualize/<time>)"
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (test protocol)")
    p.add_argument("--sigma", type=float, default=None, help="override the checkpoint's noise level")
    p.add_argument("--crop", type=int, default=0, help="centre crop of this size before degrading (0: whole image)")
    p.add_argument("--threshold", type=float, default=0.9, help="a gate value above this counts as 'passes'")
    p.add_argument("--channels", type=int, default=64, help="feature maps shown (the first N)")
    args = p.parse_args(tokens)
    args.weights = [w for ws in args.weights for w in split_paths(ws)]
    return args


def split_paths(text: str) -> list[str]:
    """A comma-separated list of files whose names may hold commas themselves (Hydra sweep job dirs such
    as ``model.net.depth=4,model.net.xunit.kernel_size=9``): at each place the longest run of pieces that
    names an existing file; a piece that names none is kept as it is, for the loader to report."""
    parts, out, i = text.split(","), [], 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i, -1) if Path(",".join(parts[i:j])).is_file()), i + 1)
        out.append(",".join(parts[i:j]))
        i = j
    return [p for p in out if p]


def default_run_dir(log_dir: str | Path = "outputs") -> Path:
    """A run dir laid out as the Hydra entry points' (``<log_dir>/<name>/<time>``)."""
    import time

    return Path(log_dir) / "visualize" / time.strftime("%Y-%m-%d_%H-%M-%S")


def prepare_input(task: Any, image: str | Path, seed: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` of ``image`` under the task's test protocol (centre ``crop`` first)."""
    from xnet.protocol.io import load_image

    clean = task.clean_tensor(load_image(image))
    if crop:
        h, w = clean.shape[-2:]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        clean = clean[..., top : top + crop, left : left + crop]
    return task.eval_pair(clean, seed)


def visualize(
    weights: Sequence[str | Path],
    image: str | Path,
    layer: int = -1,
    out: str | Path | None = None,
    seed: int = 0,
    sigma: float | None = None,
    crop: int = 0,
    threshold: float = 0.9,
    channels: int = 64,
) -> dict[str, Any]:
    """Save the grids and the side-by-side figure in ``out`` (default: :func:`default_run_dir`);
    return the statistics (also in ``stats.json``)."""
    out = Path(out) if out is not None else default_run_dir()
    items, report = [], {"image": str(image), "layer": layer, "threshold": threshold, "out": str(out), "nets": {}}
    labels: set[str] = set()
    for w in weights:
        run = run_from_checkpoint(w, sigma)
        label = run.label if run.label not in labels else f"{run.label}-{len(labels)}"
        labels.add(label)
        inp, target = prepare_input(run.task, image, seed, crop)
        maps, output = capture(run.restorer, inp, layer)
        maps.stats = density(maps, threshold)
        pics = panels(maps, channels)
        files = {k: str(save_grey(v, out / f"{label}_layer{layer}_{k}.png")) for k, v in pics.items()}
        n_act = len(activation_modules(run.restorer))
        report["nets"][label] = {
            "checkpoint": str(w),
            "kind": maps.kind,
            "activation_layers": n_act,
            "channels": int(maps.z.shape[0]),
            "psnr_input": float(run.task.scores(inp, target)["psnr"]),
            "psnr_output": float(run.task.scores(output, target)["psnr"]),
            **maps.stats,
            "files": files,
        }
        items.append((label, maps, pics))
    report["figure"] = str(draw_figure(items, layer, threshold, out / f"layer{layer}.png"))
    write_json(out / "stats.json", report)
    return report


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    report = visualize(
        args.weights, args.image, args.layer, args.out, args.seed, args.sigma, args.crop, args.threshold, args.channels
    )
    print(f"activation layer {args.layer} on {args.image}")
    for label, s in report["nets"].items():
        if s["kind"] == "xunit":
            what = (
                f"gate g > {args.threshold:g} for {100 * s['frac_g_above_threshold']:5.1f}% of values, "
                f"g < 0.1 (suppressed) for {100 * s['frac_g_below_0.1']:5.1f}% (mean g {s['mean_g']:.3f})"
            )
        else:
            what = (
                f"ReLU passes (z > 0) {100 * s['frac_z_positive']:5.1f}% of values, "
                f"zeroes {100 * s['frac_g_below_0.1']:5.1f}%"
            )
        print(
            f"  {label:<14} {what}; largest |z·g| {s['max_abs_x']:.3g}; "
            f"PSNR {s['psnr_input']:.2f} → {s['psnr_output']:.2f} dB"
        )
    print(f"figure: {report['figure']}; grids and stats.json in {report['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
