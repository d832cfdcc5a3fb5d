"""What a training run says about itself at its start (the header: task, model, both parameter
counts, data, recipe, device, run dir) and at its end (times, the best validation, the test figure
beside the paper's), and the times it keeps in ``metrics.json`` and the W&B summary."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from xnet.lit.callbacks import ProgressLog, WallClock
from xnet.lit.module import RestorationModule
from xnet.utils.progress import duration


def set_name(cfg: DictConfig, choices: dict[str, Any], split: str) -> str:
    """The data set of ``data.<split>`` as the command line picks it (``data/test=bsd68`` → ``bsd68``)."""
    node = cfg.data.get(split)
    if not node:
        return "none"
    name = choices.get(f"data/{split}") or node.get("name") or str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    limit = cfg.data.get("val_limit") if split == "val" else cfg.get("test_limit") if split == "test" else None
    return f"{name} (at most {limit} images)" if limit else str(name)


def header_lines(
    cfg: DictConfig, module: RestorationModule, trainer: L.Trainer, choices: dict[str, Any], ckpt: str | None
) -> list[str]:
    """The start header, one fact per line (the run dir comes first, said by the caller)."""
    task = module.task.describe()
    info = ", ".join(f"{k}={v}" for k, v in module.task.info.items() if k != "channels")  # the colour says it
    params = module.params
    optim = cfg.optim
    steps = f"{trainer.max_steps} steps" if trainer.max_steps > 0 else "no step limit"
    chunk = f", {cfg.trainer.max_time} per chunk" if cfg.trainer.get("max_time") else ""
    every = cfg.trainer.get("val_check_interval")
    device = f"{trainer.strategy.root_device}" + (f" × {trainer.world_size}" if trainer.world_size > 1 else "")
    return [
        f"{cfg.name}: {task['task']}{f' {info}' if info else ''} ({task['color']}) | model {cfg.model.name}: "
        f"{params['params_paper']:,} parameters by the paper's count, {params['params_trainable']:,} trainable",
        f"data: train {set_name(cfg, choices, 'train')}, validation {set_name(cfg, choices, 'val')}, "
        f"test {set_name(cfg, choices, 'test') if cfg.get('test_after_fit') else 'none'} | "
        f"{cfg.data.batch_size} × {cfg.data.patch_size}² crops, {steps}{chunk}, validation every {every} steps",
        f"recipe {choices.get('recipe', '?')}: Adam lr {optim.lr:.1e}, betas {tuple(optim.betas)}, "
        f"{optim.schedule} schedule, seed {cfg.seed}",
        f"device: {device}, precision {trainer.precision}, "
        f"{torch.get_num_threads()} CPU threads" + (f" | resuming {ckpt}" if ckpt else ""),
    ]


def run_times(trainer: L.Trainer, wall_s: float, test_s: float) -> dict[str, float]:
    """``time/*`` for ``metrics.json``: this command's wall time, training (summed over chunks,
    validations included) and its validations, the test, and the seconds per training step."""
    clock = next((c for c in trainer.callbacks if isinstance(c, WallClock)), None)
    times = {"time/wall_s": wall_s, "time/test_s": test_s}
    if clock is not None:
        times |= clock.times()
        if trainer.global_step:
            times["time/s_per_step"] = (times["time/train_s"] - times["time/val_total_s"]) / trainer.global_step
    return times


def best_validation(trainer: L.Trainer) -> dict[str, float]:
    """``best/val_psnr`` and ``best/step``: the best validation of the run (all chunks), if it validated."""
    log = next((c for c in trainer.callbacks if isinstance(c, ProgressLog)), None)
    if log is None or log.best is None:
        return {}
    return {"best/val_psnr": log.best[0], "best/step": log.best[1]}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The end summary from the run's ``metrics.json`` content."""
    s = summary
    lines = []
    if "time/train_s" in s:
        per_step = f"{s['time/s_per_step']:.3f} s/step" if "time/s_per_step" in s else "no steps"
        lines.append(
            f"trained {s['step']} steps in {duration(s['time/train_s'])} ({per_step}, "
            f"{duration(s['time/val_total_s'])} of it validating); this command took {duration(s['time/wall_s'])}"
        )
    if "val/psnr" in s:
        said = (
            f"validation PSNR: input {s['val/psnr_input']:.2f} dB → " if "val/psnr_input" in s else "validation PSNR: "
        )
        said += f"restored {s['val/psnr']:.2f} dB at the end"
        if "best/val_psnr" in s:
            said += f", best {s['best/val_psnr']:.2f} dB at step {s['best/step']}"
        lines.append(said)
    if "test/psnr" in s:
        images = f"{s['test/images']} image{'s' if s['test/images'] != 1 else ''}"
        said = f"test {s['test/dataset']} ({images}): PSNR {s['test/psnr']:.3f} dB, SSIM {s['test/ssim']:.4f}"
        if "paper/psnr" in s:
            said += f"; the paper: {s['paper/psnr']:.2f} dB (gap {s['paper/gap']:+.2f} dB)"
        lines.append(said)
    return lines
