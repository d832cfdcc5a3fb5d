"""Figs 5/9: what a layer's activation does — feature maps, weight maps and their products.

    python -m xnet.activation_maps weights=<ckpt> image=<png> [layer=4] [out=dir]   # default out: outputs/visualize/<time>
    python -m xnet.activation_maps weights=<xnet.ckpt>,<convnet.ckpt> image=<png> layer=4 out=fig5

For the chosen activation layer (1-based, counted from the input; ``-1`` = the last) it saves 8×8
grids of the 64 feature maps ``z`` (the conv output entering the activation), the weight maps ``g``
(the xUnit gate; for a ReLU the indicator ``z > 0``) and the products ``x = z·g``, per net and side by
side when several checkpoints are given. It prints (and writes to ``stats.json``) how dense the
weights are: the fraction of gate values above ``threshold`` (0.9) for xUnits against the fraction of
positive values for ReLUs — the paper's "xNet activations are dense" observation.

The net and task come from the resolved run config stored in the checkpoint by ``xnet.train``
(``checkpoint["xnet"]["config"]``); the noisy input is made with the task's test protocol (seed
``seed``), so the maps are those of a test-time forward pass. Arguments are ``key=value`` (or
``--key value``): weights, image, layer, out, seed, sigma, crop, threshold, channels.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from xnet.utils.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

# globals an xnet Lightning checkpoint may hold besides tensors: OmegaConf containers saved with
# the hyper-parameters. Only these are allowed when the plain weights-only load refuses the file.
SAFE_MODULE_PREFIXES = ("omegaconf.",)
SAFE_GLOBALS = {
    "typing.Any", "builtins.list", "builtins.dict", "builtins.tuple", "builtins.set", "builtins.int",
    "builtins.float", "builtins.str", "builtins.bool", "collections.defaultdict", "collections.OrderedDict",
}


# --- loading -------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, extra)`` of a checkpoint, loaded with ``weights_only=True``."""
    from xnet.weights import read_state_dict

    try:
        return read_state_dict(path)
    except ValueError as first:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - not a zip checkpoint: report the original error
            raise first from None
        unsafe = [n for n in names if not (n.startswith(SAFE_MODULE_PREFIXES) or n in SAFE_GLOBALS)]
        if unsafe:
            raise ValueError(f"{path}: refusing to load, it pickles {unsafe}") from first
        import importlib

        objs = []
        for n in names:
            mod, _, attr = n.rpartition(".")
            objs.append(getattr(importlib.import_module(mod), attr))
        with torch.serialization.safe_globals(objs):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)):
            raise first
        return dict(obj["state_dict"]), {k: v for k, v in obj.items() if k != "state_dict"}


def stored_config(extra: dict[str, Any], path: str | Path):
    from omegaconf import DictConfig, OmegaConf

    cfg = (extra.get("xnet") or {}).get("config")
    if cfg is None:
        raise ValueError(f"{path}: no run config stored (checkpoint['xnet']['config']); use a checkpoint saved by xnet.train")
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


@dataclass
class Run:
    """A trained restorer rebuilt from its checkpoint."""

    path: Path
    cfg: Any
    task: Any
    restorer: nn.Module
    label: str


def load_run(path: str | Path) -> Run:
    from xnet.archs.common import Restorer
    from xnet.utils.build import build_net, build_task
    from xnet.weights import adapt_keys, load_weights

    path = Path(path)
    state, extra = read_checkpoint(path)
    cfg = stored_config(extra, path)
    task = build_task(cfg)
    net = build_net(cfg, task)
    try:
        load_weights(net, path)
    except ValueError:  # load_weights reads weights-only and may refuse the pickled hyper-parameters
        state = adapt_keys(state, net)
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                state.setdefault(k, v)
        net.load_state_dict(state, strict=True)
    net_cfg = cfg.model.net
    depth = net_cfg.get("depth") or net_cfg.get("num_blocks")
    label = f"{cfg.model.name}-d{depth}" if depth is not None else str(cfg.model.name)
    return Run(path, cfg, task, Restorer(net, residual=task.residual).eval(), label)


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
        raise ValueError(f"layer={layer}: this net has {len(acts)} activation layers (1..{len(acts)}, or -1 for the last)")
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
    }
    return stats


# --- drawing -------------------------------------------------------------------------------------
def tile(maps: torch.Tensor, per_map: bool = True, vrange: tuple[float, float] | None = None, ncols: int = 8, pad: int = 2,
         fill: float = 1.0) -> np.ndarray:
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
        grid[y:y + h, x:x + w] = a[i]
    return grid


def save_grey(img: np.ndarray, path: Path) -> Path:
    from xnet.data.io import save_image

    return save_image(torch.from_numpy(img)[None], path)


def panels(m: LayerMaps, channels: int) -> dict[str, np.ndarray]:
    n = min(channels, m.z.shape[0])
    side = max(1, math.ceil(math.sqrt(n)))
    return {
        "z": tile(m.z[:n], ncols=side),
        # weight maps are mostly white for xUnits: grey separators keep the maps apart
        "g": tile(m.g[:n], vrange=(0.0, 1.0) if m.kind == "relu" or float(m.g.min()) >= 0 else None, ncols=side, fill=0.5),
        "x": tile(m.x[:n], ncols=side),
    }


def draw_figure(items: Sequence[tuple[str, LayerMaps, dict[str, np.ndarray]]], layer: int, threshold: float, path: Path) -> Path:
    """Rows: nets; columns: feature maps z, weight maps g, products x (Fig 5 of the paper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 3, figsize=(12, 4.6 * len(items)), dpi=120, squeeze=False)
    titles = {"z": "feature maps z (conv output)", "g": "weight maps g", "x": "activations x = z·g"}
    for row, (label, m, pics) in zip(axes, items):
        s = m.stats
        note = (
            f"g > {threshold:g} for {100 * s['frac_g_above_threshold']:.1f}%, g < 0.1 for {100 * s['frac_g_below_0.1']:.1f}% (mean {s['mean_g']:.2f})"
            if m.kind == "xunit"
            else f"ReLU: g = 1 (z > 0) for {100 * s['frac_z_positive']:.1f}%, g = 0 for {100 * s['frac_g_below_0.1']:.1f}%"
        )
        for ax, key in zip(row, ("z", "g", "x")):
            ax.imshow(pics[key], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{label}: {titles[key]}" + (f"\n{note}" if key == "g" else ""), fontsize=9)
    fig.suptitle(f"activation layer {layer}", fontsize=11)
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
    p = argparse.ArgumentParser(prog="python -m xnet.activation_maps", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", required=True, help="checkpoint(s) saved by xnet.train")
    p.add_argument("--image", required=True, help="a clean image; the task's degradation is applied")
    p.add_argument("--layer", type=int, default=-1, help="activation layer, 1-based (-1: the last)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a run dir, outputs/visualize/<time>)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (test protocol)")
    p.add_argument("--sigma", type=float, default=None, help="override the checkpoint's noise level")
    p.add_argument("--crop", type=int, default=0, help="centre crop of this size before degrading (0: whole image)")
    p.add_argument("--threshold", type=float, default=0.9, help="a gate value above this counts as 'passes'")
    p.add_argument("--channels", type=int, default=64, help="feature maps shown (the first N)")
    args = p.parse_args(tokens)
    # comma-separated lists, unless the comma is part of an existing path (Hydra sweep dirs have them)
    args.weights = [w for ws in args.weights for w in ([ws] if Path(ws).exists() else ws.split(",")) if w]
    return args


def default_run_dir(log_dir: str | Path = "outputs") -> Path:
    """A run dir laid out as the Hydra entry points' (``<log_dir>/<name>/<time>``)."""
    import time

    return Path(log_dir) / "visualize" / time.strftime("%Y-%m-%d_%H-%M-%S")


def prepare_input(run: Run, image: str | Path, seed: int, sigma: float | None, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    from xnet.data.io import load_image

    clean = run.task.clean_tensor(load_image(image))
    if crop:
        h, w = clean.shape[-2:]
        t, l = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        clean = clean[..., t:t + crop, l:l + crop]
    if sigma is not None and hasattr(run.task.degradation, "sigma"):
        from xnet.data.degradations import GaussianNoise

        run.task.degradation = GaussianNoise(sigma=sigma)
    return run.task.eval_pair(clean, seed)


def visualize(weights: Sequence[str | Path], image: str | Path, layer: int = -1, out: str | Path | None = None, seed: int = 0,
              sigma: float | None = None, crop: int = 0, threshold: float = 0.9, channels: int = 64) -> dict[str, Any]:
    """Save the grids and the side-by-side figure in ``out`` (default: :func:`default_run_dir`);
    return the statistics (also in ``stats.json``)."""
    out = Path(out) if out is not None else default_run_dir()
    items, report = [], {"image": str(image), "layer": layer, "threshold": threshold, "out": str(out), "nets": {}}
    labels: set[str] = set()
    for w in weights:
        run = load_run(w)
        label = run.label if run.label not in labels else f"{run.label}-{len(labels)}"
        labels.add(label)
        inp, target = prepare_input(run, image, seed, sigma, crop)
        maps, output = capture(run.restorer, inp, layer)
        maps.stats = density(maps, threshold)
        pics = panels(maps, channels)
        files = {k: str(save_grey(v, out / f"{label}_layer{layer}_{k}.png")) for k, v in pics.items()}
        n_act = len(activation_modules(run.restorer))
        report["nets"][label] = {
            "checkpoint": str(w), "kind": maps.kind, "activation_layers": n_act, "channels": int(maps.z.shape[0]),
            "psnr_input": float(run.task.scores(inp, target)["psnr"]), "psnr_output": float(run.task.scores(output, target)["psnr"]), **maps.stats, "files": files,
        }
        items.append((label, maps, pics))
    report["figure"] = str(draw_figure(items, layer, threshold, out / f"layer{layer}.png"))
    write_json(out / "stats.json", report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    report = visualize(args.weights, args.image, args.layer, args.out, args.seed, args.sigma, args.crop, args.threshold, args.channels)
    print(f"activation layer {args.layer} on {args.image}")
    for label, s in report["nets"].items():
        if s["kind"] == "xunit":
            what = (f"gate g > {args.threshold:g} for {100 * s['frac_g_above_threshold']:5.1f}% of values, "
                    f"g < 0.1 (suppressed) for {100 * s['frac_g_below_0.1']:5.1f}% (mean g {s['mean_g']:.3f})")
        else:
            what = (f"ReLU passes (z > 0) {100 * s['frac_z_positive']:5.1f}% of values, "
                    f"zeroes {100 * s['frac_g_below_0.1']:5.1f}%")
        print(f"  {label:<14} {what}; PSNR {s['psnr_input']:.2f} → {s['psnr_output']:.2f} dB")
    print(f"figure: {report['figure']}; grids and stats.json in {report['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
