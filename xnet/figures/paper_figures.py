r"""Figs 7, 8 and 9 of the paper as PNGs (with a ``.json`` of the numbers beside each).

    python -m xnet.figures.paper_figures fig7 --sigma 50 --dncnn DnCNN-S-50.pth --xdncnn <σ50 xDnCNN> \
        --out results/fig7_sigma50.png
    python -m xnet.figures.paper_figures fig8 --derainnet <ckpt> --xdncnn <ckpt> --out results/fig8.png \
        [--rainy photo.jpg]
    python -m xnet.figures.paper_figures fig9 --srcnn <ckpt> --xsrcnn xsrcnnf_s3_k9k3k5.pkl --out results/fig9.png

* **Fig 7** (grey denoising; σ=50 in the paper): noisy, BM3D, DnCNN-S, xDnCNN, clean.
* **Fig 8** (de-raining): rainy, DerainNet, xDnCNN, clean — or, with ``--rainy``, a rainy photo with
  no ground truth (no PSNR).
* **Fig 9** (SR ×3): feature maps, weight maps and activations at layer 2 of SRCNN and xSRCNNf, drawn
  by :mod:`xnet.figures.activation_maps`.

Each restored panel is the whole image restored as ``xnet.evaluate`` restores it — the same input
(image *i* of the set degraded with seed ``seed + i``), the same fused inference, output clipped and
rounded to uint8 — and titled with that image's PSNR, the number ``xnet.evaluate`` lists for it; the
panels show the crop ``--box top,left,height,width``. Weights are whatever ``weights=`` takes (a
``.ckpt``, ``.pth``, the authors' ``.pkl``, ``.safetensors``, a zoo name); a panel from an xnet
checkpoint says how many steps it was trained (``DerainNet (500 steps)``). Trailing ``key=value``
arguments are eval overrides for every panel (``data/test=set12``, ``seed=1``, ``+data.test.path=DIR``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from xnet.protocol.atomic import atomic_path, write_json
from xnet.protocol.errors import ConfigError, exit_on_user_error
from xnet.utils.config import compose_config

Box = tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class Method:
    """A panel's restorer: its label and the eval overrides that build it (``model=``, ``weights=``)."""

    label: str
    overrides: tuple[str, ...]


@dataclass
class Panel:
    label: str
    image: torch.Tensor  # C×H×W in [0, 1]
    psnr: float | None  # the whole image's, as xnet.evaluate scores it; None: no ground truth
    weights: str | None = None

    def title(self) -> str:
        return self.label if self.psnr is None else f"{self.label}\n{self.psnr:.2f} dB"


# --- restorers -----------------------------------------------------------------------------------
def compose_eval(overrides: Sequence[str]) -> DictConfig:
    """The ``xnet.evaluate`` config for ``overrides`` (outside a Hydra app)."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    try:
        return compose_config("eval", [*overrides, "paths.output_dir=."])
    except (ConfigCompositionException, OverrideParseException) as e:  # a bad override: the user's to fix
        raise ConfigError(" ".join(str(e).split())) from e


def open_method(shared: Sequence[str], method: Method):
    """``method``'s weights loaded into their architecture (a :class:`xnet.deploy.inference.LoadedRestorer`)."""
    from xnet.deploy.inference import load_restorer

    return load_restorer(compose_eval([*shared, *method.overrides]))


def training_steps(weights: str | None) -> int | None:
    """Steps an xnet checkpoint was trained for; ``None`` for other weights (published files)."""
    if not weights or Path(weights).suffix != ".ckpt":
        return None
    from xnet.deploy.weights import read_state_dict

    return read_state_dict(weights)[1].get("global_step")


def method_label(method: Method, weights: str | None) -> str:
    steps = training_steps(weights)
    return method.label if steps is None else f"{method.label} ({steps:,} steps)"


# --- the image -----------------------------------------------------------------------------------
def image_index(source: Any, name: str) -> int:
    """Index of image ``name`` (file stem) in ``source``: its position fixes its noise seed."""
    names = [source[i][0] for i in range(len(source))]
    if name in names:
        return names.index(name)
    shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
    raise ConfigError(f"--image {name}: not in {getattr(source, 'name', 'the test set')} (it holds {shown})")


def benchmark_item(loaded: Any, name: str) -> dict[str, Any]:
    """Image ``name`` of the config's test set, degraded as ``xnet.evaluate`` degrades it."""
    from xnet.data.datasets import EvalDataset
    from xnet.utils.build import instantiate_config

    source = instantiate_config(loaded.cfg.data.test, "data.test")
    item = EvalDataset(source, loaded.task, int(loaded.cfg.seed))[image_index(source, name)]
    return {**item, "dataset": getattr(source, "name", "test"), "seed": int(loaded.cfg.seed) + item["index"]}


def photo_item(loaded: Any, path: str | Path) -> dict[str, Any]:
    """A degraded photo with no ground truth (a real rainy image): the input as it is."""
    from xnet.protocol.io import load_image

    inp = loaded.task.to_net_space(loaded.task.clean_tensor(load_image(path)))
    return {
        "name": Path(path).stem,
        "input": inp,
        "target": None,
        "grey_source": inp.shape[0] == 1,
        "dataset": str(path),
        "seed": None,
    }


def restore(loaded: Any, item: dict[str, Any]) -> tuple[torch.Tensor, float | None]:
    """``(output, PSNR)`` of one image through ``xnet.evaluate``'s inference and scoring (no ground
    truth: no PSNR)."""
    from xnet.deploy.inference import inference_module, score_image
    from xnet.deploy.tiling import Tiler

    module = inference_module(loaded.restorer, loaded.cfg.fuse)
    truth = item["target"] is not None
    output, scores = score_image(
        module, loaded.task, item if truth else {**item, "target": item["input"]}, "cpu", Tiler.for_model(module)
    )
    return output, scores["psnr"] if truth else None


def score(task: Any, image: torch.Tensor, item: dict[str, Any]) -> float | None:
    if item["target"] is None:
        return None
    return float(task.scores(image, item["target"], item["grey_source"])["psnr"])


def restored_panels(
    shared: Sequence[str], methods: Sequence[Method], image: str | None, photo: str | None, names: tuple[str, str]
) -> tuple[list[Panel], dict[str, Any]]:
    """``[input, *methods, target]`` panels of one image (no target panel for a photo)."""
    loaded = [open_method(shared, m) for m in methods]
    item = photo_item(loaded[0], photo) if photo else benchmark_item(loaded[0], image)
    panels = [Panel(names[0], item["input"], score(loaded[0].task, item["input"], item))]
    for method, one in zip(methods, loaded):
        panels.append(Panel(method_label(method, one.weights), *restore(one, item), one.weights))
    if item["target"] is not None:
        panels.append(Panel(names[1], item["target"], None))
    return panels, item


# --- drawing -------------------------------------------------------------------------------------
def parse_box(text: str | None) -> Box | None:
    if text is None:
        return None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1:
        raise ConfigError(f"--box {text}: expected top,left,height,width (4 integers, height and width >= 1)")
    return box  # type: ignore[return-value]


def crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return image
    top, left, h, w = box
    if top + h > image.shape[0] or left + w > image.shape[1]:
        raise ConfigError(f"--box {top},{left},{h},{w}: outside the {image.shape[0]}×{image.shape[1]} image")
    return image[top : top + h, left : left + w]


def draw_panels(panels: Sequence[Panel], box: Box | None, title: str, path: Path) -> list[str]:
    """One row of crops titled label + PSNR; returns the titles drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xnet.protocol.io import to_uint8

    crops = [crop(to_uint8(p.image), box) for p in panels]
    h, w = crops[0].shape[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8 * h / w + 1.1), dpi=120, squeeze=False)
    for ax, panel, img in zip(axes[0], panels, crops):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(panel.title(), fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return [p.title() for p in panels]


def grey_png(path: Path) -> Path:
    """Rewrite an opaque PNG whose pixels are all grey as 8-bit grey (lossless, a third of the size)."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    if (rgba[..., 3] == 255).all() and (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all():
        with atomic_path(path) as tmp:
            Image.fromarray(rgba[..., 0], "L").save(tmp, format="png", optimize=True)
    return path


def write_report(
    path: Path, figure: str, item: dict[str, Any], box: Box | None, panels: Sequence[Panel], shared: Sequence[str]
) -> dict[str, Any]:
    report = {
        "figure": figure,
        "png": str(path),
        "image": item["name"],
        "dataset": item["dataset"],
        "degradation_seed": item["seed"],
        "box": list(box) if box else None,
        "overrides": list(shared),
        "panels": [{"label": p.label, "psnr": p.psnr, **({"weights": p.weights} if p.weights else {})} for p in panels],
    }
    write_json(path.with_suffix(".json"), report)
    return report


def crop_note(box: Box | None) -> str:
    return "whole image" if box is None else f"crop {box[2]}×{box[3]} at ({box[0]}, {box[1]})"


# --- the figures ---------------------------------------------------------------------------------
def fig7(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Noisy, BM3D, DnCNN-S, xDnCNN, clean at σ = ``args.sigma``."""
    shared = ["task=denoise", f"task.sigma={args.sigma:g}", *overrides]
    methods = [
        Method("BM3D", ("model=bm3d",)),
        Method("DnCNN-S", ("model=dncnn", f"weights={args.dncnn}")),
        Method("xDnCNN", ("model=xdncnn", f"weights={args.xdncnn}")),
    ]
    panels, item = restored_panels(shared, methods, args.image, None, ("Noisy", "Clean"))
    title = (
        f"Fig 7: denoising at σ={args.sigma:g}, {item['dataset']} {item['name']} ({crop_note(args.box)}); "
        f"PSNR of the whole image, xnet.evaluate protocol (noise seed {item['seed']})"
    )
    draw_panels(panels, args.box, title + (f"\n{args.note}" if args.note else ""), args.out)
    return write_report(args.out, "fig7", item, args.box, panels, shared)


def fig8(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Rainy, DerainNet, xDnCNN (RGB) and clean."""
    shared = ["task=derain", f"data/test={args.test_set}", *overrides]
    methods = [
        Method("DerainNet", ("model=derainnet", f"weights={args.derainnet}")),
        Method("xDnCNN", ("model=xdncnn_rgb", f"weights={args.xdncnn}")),
    ]
    panels, item = restored_panels(shared, methods, args.image, args.rainy, ("Rainy", "Clean"))
    scored = "no ground truth" if args.rainy else "PSNR (RGB) of the whole image, xnet.evaluate protocol"
    title = f"Fig 8: de-raining, {item['dataset']} {item['name']} ({crop_note(args.box)}); {scored}"
    draw_panels(panels, args.box, title + (f"\n{args.note}" if args.note else ""), args.out)
    return write_report(args.out, "fig8", item, args.box, panels, shared)


def layer_maps(
    shared: Sequence[str], method: Method, args: argparse.Namespace
) -> tuple[tuple, dict[str, Any], dict[str, Any]]:
    """One net's row of Fig 9 (label, maps, grids of the ``--box`` crop), its numbers and the image."""
    from xnet.figures.activation_maps import LayerMaps, capture, density, panels

    loaded = open_method(shared, method)
    item = benchmark_item(loaded, args.image)
    maps, out = capture(loaded.restorer.eval(), item["input"], args.layer)  # eval: BN running statistics
    maps.stats = density(maps, args.threshold)  # over the whole image
    psnr = score(loaded.task, out, item)
    label = method_label(method, loaded.weights)
    shown = LayerMaps(
        maps.kind,
        *(
            torch.from_numpy(crop(t.permute(1, 2, 0).numpy(), args.box)).permute(2, 0, 1)
            for t in (maps.z, maps.g, maps.x)
        ),
    )
    numbers = {
        "label": label,
        "weights": loaded.weights,
        "kind": maps.kind,
        "psnr": psnr,
        "channels": int(maps.z.shape[0]),
        **maps.stats,
    }
    return (f"{label}, {psnr:.2f} dB", maps, panels(shown, args.channels)), numbers, item


def fig9(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Feature maps, weight maps and activations at ``args.layer`` of SRCNN and xSRCNNf."""
    from xnet.figures.activation_maps import draw_figure

    shared = ["task=sr", f"task.scale={args.scale}", f"data/test={args.test_set}", *overrides]
    methods = [
        Method("SRCNN", ("model=srcnn", f"weights={args.srcnn}")),
        Method("xSRCNNf", ("model=xsrcnn_f", f"weights={args.xsrcnn}")),
    ]
    rows, nets, items = zip(*(layer_maps(shared, m, args) for m in methods))
    title = f"activation layer {args.layer}: {items[0]['dataset']} {items[0]['name']} ×{args.scale}"
    grey_png(draw_figure(rows, args.layer, args.threshold, args.out, title=title))
    report = {
        "figure": "fig9",
        "png": str(args.out),
        "image": items[0]["name"],
        "dataset": items[0]["dataset"],
        "layer": args.layer,
        "box": list(args.box) if args.box else None,
        "overrides": shared,
        "nets": list(nets),
    }
    write_json(args.out.with_suffix(".json"), report)
    return report


FIGURES = {"fig7": fig7, "fig8": fig8, "fig9": fig9}


# --- command line --------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xnet.figures.paper_figures", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="figure", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, help="the PNG to write (a .json of the numbers goes beside it)")
    common.add_argument("--box", help="crop shown: top,left,height,width (default: the whole image)")
    common.add_argument("--note", default="", help="a line added to the title (e.g. what the weights are)")
    common.add_argument(
        "overrides", nargs="*", help="eval overrides for every panel: data/test=set12 seed=1 +data.test.path=DIR"
    )
    f7 = sub.add_parser("fig7", parents=[common], help="denoising: noisy, BM3D, DnCNN-S, xDnCNN, clean")
    f7.add_argument("--sigma", type=float, default=50.0)
    f7.add_argument("--dncnn", required=True, help="DnCNN-S weights for this σ")
    f7.add_argument("--xdncnn", required=True, help="xDnCNN weights for this σ")
    f7.add_argument("--image", default="test039", help="image of the test set (file stem; default BSD68 test039)")
    f8 = sub.add_parser("fig8", parents=[common], help="de-raining: rainy, DerainNet, xDnCNN, clean")
    f8.add_argument("--derainnet", required=True, help="DerainNet weights")
    f8.add_argument("--xdncnn", required=True, help="xDnCNN (RGB, de-raining) weights")
    f8.add_argument("--test-set", default="rain_sample", help="a data/test config with rainy/clean pairs")
    f8.add_argument("--image", default="norain-4", help="a pair of the test set (file stem)")
    f8.add_argument("--rainy", help="a rainy photo with no ground truth, instead of a test pair")
    f9 = sub.add_parser("fig9", parents=[common], help="SR: SRCNN vs xSRCNNf activations at a layer")
    f9.add_argument("--srcnn", required=True, help="SRCNN weights for this scale")
    f9.add_argument("--xsrcnn", required=True, help="xSRCNNf weights for this scale")
    f9.add_argument("--scale", type=int, default=3)
    f9.add_argument("--layer", type=int, default=2, help="activation layer, 1-based")
    f9.add_argument("--test-set", default="set5")
    f9.add_argument("--image", default="butterfly_GT", help="image of the test set (file stem)")
    f9.add_argument("--threshold", type=float, default=0.9, help="a gate above this counts as passing")
    f9.add_argument("--channels", type=int, default=32, help="maps shown per grid (the first N)")
    return p


DEFAULT_OUT = {
    "fig7": "results/fig7_sigma{sigma:g}.png",
    "fig8": "results/fig8.png",
    "fig9": "results/fig9_x{scale}.png",
}


@exit_on_user_error
def run(argv: Sequence[str]) -> dict[str, Any]:
    args = parser().parse_args(list(argv))
    args.box = parse_box(args.box)
    overrides = [o for o in args.overrides if o]
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{bad[0]}: not an override (key=value); figure options are --flags")
    args.out = args.out or Path(DEFAULT_OUT[args.figure].format(**vars(args)))
    report = FIGURES[args.figure](args, overrides)
    panels = report.get("panels") or report["nets"]
    print(
        f"{args.figure}: {report['png']}  "
        + "  ".join(f"{p['label']} {p['psnr']:.2f} dB" for p in panels if p["psnr"] is not None)
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    run(list(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
