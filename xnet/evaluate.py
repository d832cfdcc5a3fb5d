"""Score weights on a test set with the published protocol (written once, in :mod:`xnet.deploy.inference`).

``python -m xnet.evaluate task=denoise model=dncnn weights=PATH data/test=bsd68 task.sigma=25``

Denoising: unclipped float noise with seed (seed + image index), output clipped and rounded to
uint8, PSNR per image with no border crop, the set's figure is the mean of per-image PSNRs.
SR: Y (BT.601 studio range), ``scale`` px shaved. Prints a per-image table and writes
``metrics.json`` in the run dir. Same weights, config, ``fuse`` and machine → bit-identical numbers. Images above
``tiling.max_pixels`` run in tiles with the same output (:mod:`xnet.deploy.tiling`); benchmark sets run whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from xnet.archs.params import param_summary
from xnet.deploy.inference import evaluate_module, inference_module, load_restorer, pick_device
from xnet.deploy.tiling import Tiler
from xnet.protocol.atomic import write_json
from xnet.protocol.errors import exit_on_config_error, exit_on_user_error
from xnet.utils.build import instantiate_config, setup_runtime, to_container
from xnet.utils.config import CONFIG_PATH
from xnet.utils.validate import validate

log = logging.getLogger(__name__)


def format_table(report: dict[str, Any]) -> str:
    keys = [k for k in report["per_image"][0] if k != "image"]

    def cells(r: dict[str, Any]) -> str:
        return "".join(f"{r[k]:>9.{4 if k.startswith('ssim') else 3}f}" for k in keys)

    lines = [f"{'image':<24}" + "".join(f"{k.upper().replace('_Y', '-Y'):>9}" for k in keys)]
    lines += [f"{r['image']:<24}{cells(r)}" for r in report["per_image"]]
    lines.append(f"{'mean (' + str(report['images']) + ' images)':<24}{cells(report)}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg, "evaluate")
    setup_runtime(cfg)
    loaded = load_restorer(cfg)
    cfg, task, restorer = loaded.cfg, loaded.task, loaded.restorer
    params = param_summary(restorer.net)
    device = pick_device(cfg.device)
    source = instantiate_config(cfg.data.test, "data.test")
    out_dir = Path(cfg.paths.output_dir)
    report = evaluate_module(
        inference_module(restorer, cfg.fuse),
        task,
        source,
        seed=cfg.seed,
        device=device,
        limit=cfg.limit,
        image_dir=out_dir / "images" if cfg.save_images else None,
        tiler=Tiler.from_config(restorer, cfg.get("tiling")),
    )
    print(format_table(report))
    result = {
        "model": cfg.model.name,
        **task.describe(),
        "seed": cfg.seed,
        **params,
        **report,
        "weights": loaded.weights,
        "config": to_container(cfg),
    }
    path = write_json(out_dir / "metrics.json", result)
    log.info("%s %s: PSNR %.3f dB, SSIM %.4f → %s", task.name, report["dataset"], report["psnr"], report["ssim"], path)
    if cfg.get("logger"):  # logger=wandb: an `eval` run with the per-image table
        from xnet.lit.tracking import log_evaluation

        log_evaluation(cfg, result)
    return result


@exit_on_config_error
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
