"""The MATLAB releases of published weights → xnet state dicts (``weights=`` reads ``.mat`` files
through :func:`read_mat`; ``python -m xnet.convert`` converts them once).

``srcnn_mat`` — the official SRCNN MATLAB release (``x3.mat`` ...): variables ``weights_conv<i>`` and
    ``biases_conv<i>``, i = 1, 2, 3. Assumed exactly as ``demo_SR.m``/``SRCNN.m`` read them:
    a 3-D weight is ``[n_in, k², n_out]``; a 2-D weight is ``[k², n_out]`` for the first layer
    (``n_in`` = 1) and ``[n_in, k²]`` for a later one (``n_out`` = 1: MATLAB drops the trailing
    singleton). The k² axis is a k×k kernel in MATLAB's column-major order, ``kernel(row, col) =
    v[row + k·col]`` (``reshape(v, k, k)``), applied by correlation (``imfilter``, no flip) with
    ``'replicate'`` borders: load it into ``model=srcnn model.net.padding_mode=replicate``.
    Biases are ``n_out`` values. Output keys: ``SRCNN``'s (``0``, ``2``, ``4`` = conv 1, 2, 3).

``matconvnet`` — a MatConvNet ``simplenn`` net (the official DnCNN ``.mat`` models): ``net.layers{i}``
    with ``type`` ``conv`` (``weights{1}`` H×W×Cin×Cout, correlation, ``weights{2}`` Cout biases),
    ``bnorm`` (``weights{1,2,3}`` = multipliers, biases, moments ``[mean, std]`` with the epsilon
    already inside ``std``) or ``relu``; ``*loss`` layers at the end are dropped. Layer ``i``
    becomes module ``i-1`` of an ``nn.Sequential`` (the indices of :class:`xnet.archs.dncnn.DnCNN`).
    A conv bias before a BN (which xnet's conv does not have) is folded into the BN's running mean,
    and ``running_var = std² − 1e-5`` (PyTorch's BN eps), so the function is the same.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from xnet.protocol.errors import require_extra

__all__ = ["BN_EPS", "from_matconvnet", "from_srcnn_mat", "load_mat", "read_mat"]

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which xnet's nets use


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """``scipy.io.loadmat`` with MATLAB structs as attribute objects (nothing squeezed: a weight
    keeps its singleton axes)."""
    require_extra(f"{path}: reading .mat weights", "convert", "scipy")
    from scipy.io import loadmat

    try:
        return loadmat(str(path), struct_as_record=False)
    except Exception as e:  # not a MATLAB file, or a v7.3 (HDF5) one
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e.__class__.__name__}: {e})") from e


def read_mat(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.mat`` release as an xnet state dict: SRCNN's variables or a MatConvNet ``net``."""
    mat = load_mat(path)
    if "weights_conv1" in mat:
        return from_srcnn_mat(mat, path)
    if "net" in mat:
        return from_matconvnet(mat["net"], path)
    found = sorted(k for k in mat if not k.startswith("__"))
    raise ValueError(
        f"{path}: neither SRCNN's weights_conv<i>/biases_conv<i> nor a MatConvNet `net` (variables: {found})"
    )


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _srcnn_kernels(w: np.ndarray, first: bool, where: str) -> torch.Tensor:
    """One SRCNN weight variable → ``[n_out, n_in, k, k]`` (see the module doc for the layout)."""
    if w.ndim == 2:
        w = w[None] if first else w[:, :, None]  # [k², n_out] → [1, k², n_out]; [n_in, k²] → [n_in, k², 1]
    if w.ndim != 3:
        raise ValueError(f"{where}: expected a 2-D or 3-D weight [n_in, k², n_out], got shape {w.shape}")
    n_in, k2, n_out = w.shape
    k = math.isqrt(k2)
    if k * k != k2:
        raise ValueError(f"{where}: its k² axis has {k2} entries, not a square kernel (shape {w.shape})")
    kernels = w.reshape(n_in, k, k, n_out, order="F")  # MATLAB reshape(v, k, k): v[row + k·col]
    return _tensor(kernels.transpose(3, 0, 1, 2))


def from_srcnn_mat(mat: dict[str, Any], path: str | os.PathLike = "<mat>") -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    i = 1
    while f"weights_conv{i}" in mat:
        where = f"{path}: weights_conv{i}"
        if f"biases_conv{i}" not in mat:
            raise ValueError(f"{path}: weights_conv{i} has no biases_conv{i}")
        weight = _srcnn_kernels(np.asarray(mat[f"weights_conv{i}"], dtype=np.float64), i == 1, where)
        bias = _tensor(np.asarray(mat[f"biases_conv{i}"]).reshape(-1))
        if bias.numel() != weight.shape[0]:
            raise ValueError(f"{path}: biases_conv{i} has {bias.numel()} values for {weight.shape[0]} filters")
        if state and state[f"{2 * (i - 2)}.weight"].shape[0] != weight.shape[1]:
            raise ValueError(
                f"{where}: takes {weight.shape[1]} channels "
                f"but conv{i - 1} gives {state[f'{2 * (i - 2)}.weight'].shape[0]}"
            )
        state[f"{2 * (i - 1)}.weight"], state[f"{2 * (i - 1)}.bias"] = weight, bias
        i += 1
    return state


def _items(cell: Any) -> list[Any]:
    """A MATLAB cell/struct array as a flat list (column-major, as MATLAB indexes it)."""
    return list(np.asarray(cell, dtype=object).reshape(-1, order="F"))


def _field(struct: Any, name: str, where: str) -> Any:
    if not hasattr(struct, name):
        raise ValueError(f"{where}: no field `{name}` (fields: {sorted(getattr(struct, '_fieldnames', []))})")
    return getattr(struct, name)


def from_matconvnet(net: Any, path: str | os.PathLike = "<mat>") -> dict[str, torch.Tensor]:
    net = _items(net)[0]
    layers = [
        _items(layer)[0] if isinstance(layer, np.ndarray) else layer
        for layer in _items(_field(net, "layers", f"{path}: net"))
    ]
    kinds = [
        str(np.asarray(_field(layer, "type", f"{path}: net.layers{{{i + 1}}}")).reshape(-1)[0])
        for i, layer in enumerate(layers)
    ]
    while kinds and kinds[-1].lower().endswith("loss"):  # the training objective, not the net
        kinds.pop(), layers.pop()
    state: dict[str, torch.Tensor] = {}
    pending_bias: torch.Tensor | None = None  # a conv's bias, folded into the BN that follows
    for i, (kind, layer) in enumerate(zip(kinds, layers)):
        where = f"{path}: net.layers{{{i + 1}}} ({kind})"
        if kind == "conv":
            w, b = (np.asarray(a, dtype=np.float64) for a in _items(_field(layer, "weights", where))[:2])
            w = w.reshape(w.shape + (1,) * (4 - w.ndim))  # MATLAB drops trailing singletons (Cout = 1)
            state[f"{i}.weight"] = _tensor(w.transpose(3, 2, 0, 1))  # H×W×Cin×Cout → Cout×Cin×H×W
            bias = _tensor(b.reshape(-1))
            if i + 1 < len(kinds) and kinds[i + 1] == "bnorm":
                pending_bias = bias
            else:
                state[f"{i}.bias"] = bias
        elif kind == "bnorm":
            gain, shift, moments = (
                np.asarray(a, dtype=np.float64) for a in _items(_field(layer, "weights", where))[:3]
            )
            if moments.ndim != 2 or moments.shape[1] != 2:
                raise ValueError(f"{where}: moments must be C×2 [mean, std], got shape {moments.shape}")
            mean, std = _tensor(moments[:, 0]), _tensor(moments[:, 1])
            if pending_bias is not None:  # BN(z + b) with mean μ is BN(z) with mean μ − b
                mean, pending_bias = mean - pending_bias, None
            state[f"{i}.weight"], state[f"{i}.bias"] = _tensor(gain.reshape(-1)), _tensor(shift.reshape(-1))
            state[f"{i}.running_mean"], state[f"{i}.running_var"] = mean, (std**2 - BN_EPS).clamp(min=0)
        elif kind != "relu":
            raise ValueError(f"{where}: layer type {kind!r} is not supported (conv, bnorm, relu)")
    if not state:
        raise ValueError(f"{path}: the MatConvNet net has no conv layers")
    return state
