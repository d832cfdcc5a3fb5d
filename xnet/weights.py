"""Loading weights from any of the forms users have: Lightning checkpoints, plain state dicts
(``.pth``/``.pt``, loaded with ``weights_only=True``), ``.safetensors`` files and zoo names.

Key mapping: wrapper prefixes are stripped until the keys match the architecture, so xnet's
checkpoints (``restorer.net.*``), ``nn.DataParallel`` saves (``module.*``) and the common DnCNN layout
(``module.dncnn.<i>.<name>`` — conv, ReLU, then conv/BN/ReLU triples, the same indices as
:class:`xnet.archs.dncnn.DnCNN`) all load into the bare net.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

PREFIXES = ("restorer.net.", "module.", "net.", "model.", "dncnn.", "generator.")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, extra)``; ``extra`` holds what a Lightning checkpoint stored beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled objects beyond tensors/containers are refused on purpose
        raise ValueError(f"{path}: not a loadable state dict with weights_only=True ({e.__class__.__name__}: {e})") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        extra = {k: v for k, v in obj.items() if k != "state_dict"}
        return dict(obj["state_dict"]), extra
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    raise ValueError(f"{path}: expected a state dict or a Lightning checkpoint, got {type(obj).__name__}")


def adapt_keys(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes until the keys match ``net``'s; drop metric buffers of the trainer."""
    wanted = set(net.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith(("val_", "test_"))}
    for _ in range(4):
        if set(state) >= wanted or not state:
            break
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                break
        else:
            state = {k.split(".", 1)[1] if k.split(".", 1)[0] + "." in PREFIXES else k: v for k, v in state.items()}
    return state


def load_weights(
    net: nn.Module, path: str | os.PathLike, loaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Load ``path`` into ``net`` strictly (``loaded``: its :func:`read_state_dict` result, if
    already read); a mismatch names the missing and unexpected keys."""
    state, extra = loaded if loaded is not None else read_state_dict(path)
    state = adapt_keys(state, net)
    for key, value in net.state_dict().items():  # older saves lack BN's step counter; it is unused in eval
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing, unexpected = sorted(set(net.state_dict()) - set(state)), sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit this model (check model= and its options). "
            f"missing keys: {missing[:6]}{' ...' if len(missing) > 6 else ''}; "
            f"unexpected keys: {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit this model: {e}") from e
    return extra


def save_weights(net: nn.Module, path: str | os.PathLike) -> Path:
    """A plain, portable state dict of the bare net (``.safetensors`` or ``.pth``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
