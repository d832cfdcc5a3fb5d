"""Parameter counts: the paper's convention and the plain trainable total."""

from __future__ import annotations

from torch import nn


def count_paper_params(model: nn.Module) -> int:
    """Conv weights + BatchNorm affine parameters; conv biases and PReLU slopes excluded.

    This is the convention of the paper's tables (DnCNN-S 556,032; xDnCNN 303,616; ...).
    """
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            total += m.weight.numel()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            total += m.weight.numel() + m.bias.numel()
    return total


def count_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_summary(model: nn.Module) -> dict[str, int]:
    return {"params_paper": count_paper_params(model), "params_trainable": count_trainable_params(model)}
