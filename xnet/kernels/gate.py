"""The xUnit's gate functions: the weight map ``g`` from the spatial response ``d``.

One list, :data:`GATES`, for every implementation: the torch modules, the Triton kernel and the
native CPU kernel (which gets the indices as build-time constants).
"""

from __future__ import annotations

import torch

GATES = ("gaussian", "sigmoid", "tanh", "identity")


def gate(d: torch.Tensor, kind: str) -> torch.Tensor:
    """``gaussian`` is the paper's ``exp(-d²)`` (in (0, 1], peaks at d = 0); the others are the
    alternatives compared in Fig 6."""
    if kind == "gaussian":
        return torch.exp(-d * d)
    if kind == "sigmoid":
        return torch.sigmoid(d)
    if kind == "tanh":
        return torch.tanh(d)
    if kind == "identity":
        return d
    raise ValueError(f"unknown xUnit gate {kind!r}; choose one of {GATES}")
