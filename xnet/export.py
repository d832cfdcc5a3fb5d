"""Export weights for deployment: ``python -m xnet.export weights=... format=onnx``.

``onnx``: the whole restorer (residual subtraction included), BN folded, dynamic height/width,
checked against torch with onnxruntime when it is installed. ``safetensors``/``pth``: the bare
net's state dict.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from xnet.evaluate import inference_module, load_restorer
from xnet.utils.build import build_task, setup_runtime
from xnet.weights import save_weights

log = logging.getLogger(__name__)
FORMATS = ("onnx", "safetensors", "pth")


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format}: choose one of {FORMATS}")
    setup_runtime(cfg)
    task = build_task(cfg)
    restorer, _ = load_restorer(cfg, task)
    out = Path(cfg.output)
    if cfg.format != "onnx":
        return save_weights(restorer.net, out)
    from xnet.ops.onnx_export import export_onnx, onnx_parity

    model = inference_module(restorer, cfg.fuse)
    example = torch.rand(1, task.channels, *cfg.example_size)
    export_onnx(model, out, example)
    if cfg.check:
        try:
            diff = onnx_parity(model, out, example)
        except ModuleNotFoundError as e:
            log.warning("%s: parity not checked", e)
        else:
            log.info("onnxruntime vs torch: max |diff| = %.2e", diff)
            if diff > 1e-3:
                raise RuntimeError(f"{out}: ONNX output differs from torch by {diff:.2e}")
    log.info("wrote %s", out)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
