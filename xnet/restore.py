"""Restore your own images: ``python -m xnet.restore task=... model=... weights=... input=PATH``.

``input`` is an image or a folder; restored PNGs go to ``output`` (default: the run dir).
SR nets on Y restore the luma and keep the bicubic-upsampled chroma, as in SRCNN's colour results.

Nothing the user has is overwritten: an input file never is, an output folder equal to (or inside)
the input folder needs a ``suffix``, two inputs never map to one output name (``01.jpg`` and
``01.png`` → ``01_jpg.png``, ``01_png.png``), and existing files in ``output`` are kept unless
``overwrite=true``. Every file of a folder is tried; the failures are listed at the end (exit 2).
Big images run in tiles (:mod:`xnet.deploy.tiling`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from xnet.deploy.inference import check_finite_output, inference_module, load_restorer, pick_device
from xnet.deploy.tiling import Tiler
from xnet.protocol.errors import ConfigError, UserError, exit_on_config_error, exit_on_user_error
from xnet.protocol.io import list_images, load_image, save_image, to_tensor
from xnet.protocol.quantize import quantize_uint8
from xnet.protocol.tasks import Task
from xnet.utils.build import setup_runtime
from xnet.utils.config import CONFIG_PATH
from xnet.utils.progress import progress
from xnet.utils.validate import validate

log = logging.getLogger(__name__)

#: What makes one image fail without stopping the others: a bad file, a broken output, a full disk, no memory.
PER_IMAGE_ERRORS = (UserError, OSError, MemoryError, torch.cuda.OutOfMemoryError)


class RestoreFailed(UserError):
    """Some images of a folder could not be restored; the message lists each with its reason."""

    multiline = True


def net_input(task: Task, x: torch.Tensor) -> torch.Tensor:
    """A real degraded image → the net's input (SRCNN family: bicubic up-sampling first)."""
    scale = getattr(task.degradation, "scale", 1)
    if scale > 1 and getattr(task.degradation, "upsample", False):
        from xnet.protocol.imresize import imresize

        x = quantize_uint8(imresize(x, scale=scale))
    return x


@torch.inference_mode()
def restore_tensor(
    model: nn.Module, task: Task, x: torch.Tensor, device: torch.device, tiler: Tiler | None = None
) -> torch.Tensor:
    """``C×H×W`` degraded image in [0, 1] → restored ``C×H'×W'`` (RGB stays RGB for Y nets)."""
    x = net_input(task, x)
    tiler = tiler or Tiler.for_model(model)
    run = lambda t: tiler(model, t[None], device)[0]  # noqa: E731
    if task.color == "y" and x.shape[0] == 3:
        from xnet.protocol.color import rgb_to_ycbcr, ycbcr_to_rgb

        ycc = rgb_to_ycbcr(x)
        return ycbcr_to_rgb(torch.cat([run(ycc[:1]), ycc[1:]], dim=0)).clamp(0, 1)
    return run(x).clamp(0, 1)


def input_files(src: Path) -> list[Path]:
    if not src.exists():
        raise FileNotFoundError(f"input={src}: no such file or folder")
    files = list_images(src) if src.is_dir() else [src]
    if not files:
        raise FileNotFoundError(f"input={src}: no images found")
    return files


def output_names(files: list[Path], suffix: str = "") -> dict[Path, str]:
    """Input → output PNG stem; inputs that share a stem (``01.jpg``, ``01.png``) keep their
    extension in it, so no two map to one name."""
    stems = Counter(f.stem.lower() for f in files)
    return {
        f: (f.stem if stems[f.stem.lower()] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}") + suffix
        for f in files
    }


def plan_outputs(
    src: Path, files: list[Path], out_dir: Path, suffix: str = "", degrade: bool = False, overwrite: bool = False
) -> dict[Path, list[Path]]:
    """Input → the files it will write (restored PNG, and with ``degrade`` its degraded input),
    refusing before anything is written any plan that could lose a file of the user's."""
    src_r, out_r = src.resolve(), out_dir.resolve()
    if src.is_dir() and not suffix and (out_r == src_r or src_r in out_r.parents):
        raise ConfigError(
            f"output={out_dir} is the input folder or inside it: the restored PNGs would sit among (or replace) the "
            "originals — choose another output folder, or set suffix=_restored"
        )
    plan = {
        f: [out_dir / f"{stem}.png"] + ([out_dir / f"{stem}_input.png"] if degrade else [])
        for f, stem in output_names(files, suffix).items()
    }
    targets = [p for outs in plan.values() for p in outs]
    inputs = {f.resolve() for f in files}
    if clash := [p for p in targets if p.resolve() in inputs]:
        raise ConfigError(
            f"output={out_dir}: writing {clash[0].name} would overwrite the input {clash[0]}; "
            "choose another output folder or a suffix"
        )
    if dup := [p for p, n in Counter(p.name.lower() for p in targets).items() if n > 1]:
        raise ConfigError(
            f"input={src}: several inputs would be written as {dup[0]}; rename one of them or use another suffix"
        )
    if not overwrite and (existing := [p for p in targets if p.exists()]):
        names = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise ConfigError(
            f"output={out_dir} already holds {names}: "
            "pass overwrite=true to replace them, or choose another output folder"
        )
    return plan


def restore(cfg: DictConfig) -> list[Path]:
    validate(cfg, "restore")
    setup_runtime(cfg)
    src, out_dir = Path(str(cfg.input)).expanduser(), Path(str(cfg.output)).expanduser()
    files = input_files(src)
    plan = plan_outputs(
        src, files, out_dir, str(cfg.get("suffix") or ""), bool(cfg.degrade), bool(cfg.get("overwrite", False))
    )
    loaded = load_restorer(cfg)
    task = loaded.task
    device = pick_device(cfg.device)
    model = inference_module(loaded.restorer, cfg.fuse).to(device)
    tiler = Tiler.from_config(loaded.restorer, cfg.get("tiling"))
    written: list[Path] = []
    scores: list[tuple[float, float]] = []
    failures: list[tuple[Path, BaseException]] = []
    for i, f in enumerate(progress(files, desc="restore", unit="img")):
        try:
            seed = cfg.seed + i if cfg.degrade else None
            out, psnr = restore_file(f, plan[f], model, task, device, tiler, seed, bool(cfg.get("overwrite", False)))
            written.append(out)
            scores += [psnr] if psnr else []
        except PER_IMAGE_ERRORS as e:
            if len(files) == 1:
                raise
            log.error("%s: %s", f, e)
            failures.append((f, e))
    if len(scores) > 1:
        log.info(
            "mean PSNR over %d images: degraded %.2f dB → restored %.2f dB",
            len(scores),
            *(sum(s[k] for s in scores) / len(scores) for k in (0, 1)),
        )
    if failures:
        lines = "\n".join(f"  {e}" if str(e).startswith(str(f)) else f"  {f}: {e}" for f, e in failures)
        raise RestoreFailed(
            f"{len(failures)} of {len(files)} images failed "
            f"({len(files) - len(failures)} restored into {out_dir}):\n{lines}"
        )
    return written


def restore_file(
    f: Path,
    outputs: list[Path],
    model: nn.Module,
    task: Task,
    device: torch.device,
    tiler: Tiler,
    seed: int | None,
    overwrite: bool = False,
) -> tuple[Path, tuple[float, float] | None]:
    """Restore one image to ``outputs[0]`` (with a ``seed``: degrade it first, saved to ``outputs[1]``);
    returns the file written and, where the clean image is known (``seed``), the PSNRs of the degraded
    input and of the restored image (:func:`degraded_and_restored_psnr`). Without ``overwrite`` an
    output is created only if its name is still free when it is written (another restore into the same
    folder meanwhile is refused, not replaced)."""
    image = load_image(f)
    x = task.clean_tensor(image) if seed is not None else to_tensor(task.to_task_color(image))
    clean = x
    if seed is not None:
        x = task.degradation.eval(clean, seed)
        save_image(x, outputs[1], overwrite)
    y = restore_tensor(model, task, x, device, tiler)
    check_finite_output(y, str(f))
    out = save_image(y, outputs[0], overwrite)
    if seed is None:
        log.info("%s → %s", f, out)
        return out, None
    psnr = degraded_and_restored_psnr(task, clean, x, y, grey_source=image.shape[-1] == 1)
    log.info("%s → %s: PSNR degraded %.2f dB → restored %.2f dB", f, out, *psnr)
    return out, psnr


def degraded_and_restored_psnr(
    task: Task, clean: torch.Tensor, degraded: torch.Tensor, restored: torch.Tensor, grey_source: bool
) -> tuple[float, float]:
    """The PSNR of the degraded input and of the restored image, both as written (8 bits), against the
    clean one, scored as ``evaluate`` scores (the task's colour space and border). An input smaller
    than the clean image (SR) is scored after MATLAB-bicubic up-sampling, the usual "bicubic" row."""
    if degraded.shape != clean.shape:
        from xnet.protocol.imresize import imresize

        degraded = imresize(degraded, size=clean.shape[-2:])
    pairs = (quantize_uint8(degraded), quantize_uint8(restored.cpu()))
    return tuple(float(task.scores(t[None], clean[None], grey_source)["psnr"].reshape(-1)[0]) for t in pairs)


@exit_on_config_error
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="restore")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    restore(cfg)


if __name__ == "__main__":
    main()
