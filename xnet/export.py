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

from xnet.deploy.inference import inference_module, load_restorer
from xnet.deploy.weights import save_weights
from xnet.protocol.atomic import atomic_path
from xnet.protocol.errors import ConfigError, exit_on_config_error, exit_on_user_error
from xnet.utils.build import setup_runtime
from xnet.utils.config import CONFIG_PATH
from xnet.utils.validate import validate

log = logging.getLogger(__name__)
FORMATS = ("onnx", "safetensors", "pth")


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: choose one of {FORMATS}")
    validate(cfg, "export")
    if cfg.format == "onnx":
        from xnet.deploy.onnx import require_onnx

        require_onnx()  # before the weights are read
    setup_runtime(cfg)
    loaded = load_restorer(cfg)
    task, restorer = loaded.task, loaded.restorer
    out = Path(cfg.output)
    if cfg.format != "onnx":
        out = save_weights(restorer.net, out)
        print(f"wrote {out} ({cfg.format}: the bare net's state dict)")
        return out
    from xnet.deploy.onnx import export_onnx

    model = inference_module(restorer, cfg.fuse)
    example = torch.rand(1, task.channels, *cfg.example_size)
    with atomic_path(out) as tmp:  # checked before it takes the name: a failed export leaves nothing
        export_onnx(model, tmp, example)
        check_onnx(cfg, model, tmp, example)
    print(f"wrote {out} (onnx)")
    return out


def check_onnx(cfg: DictConfig, model: torch.nn.Module, path: Path, example: torch.Tensor) -> None:
    """onnxruntime's output against torch's on the example (skipped without onnxruntime)."""
    from xnet.deploy.onnx import onnx_parity

    if cfg.check:
        try:
            diff = onnx_parity(model, path, example)
        except ModuleNotFoundError as e:
            log.warning("%s: parity not checked", e)
        else:
            log.info("onnxruntime vs torch: max |diff| = %.2e", diff)
            if diff > 1e-3:
                raise RuntimeError(f"{cfg.output}: ONNX output differs from torch by {diff:.2e}")


@exit_on_config_error
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
