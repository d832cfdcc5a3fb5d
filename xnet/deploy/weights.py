"""Loading weights from any of the forms users have: Lightning checkpoints, plain state dicts
(``.pth``/``.pt``, loaded with ``weights_only=True``), ``.safetensors`` files and zoo names.

Key mapping: wrapper prefixes are stripped until the keys match the architecture, so xnet's
checkpoints (``restorer.net.*``), ``nn.DataParallel`` saves (``module.*``) and the common DnCNN layout
(``module.dncnn.<i>.<name>`` — conv, ReLU, then conv/BN/ReLU triples, the same indices as
:class:`xnet.archs.dncnn.DnCNN`) all load into the bare net. The xUnit authors' released layout
(``md<i>.…``/``joints.…``, see :func:`from_authors_layout`) is converted. A conv bias that a save
lacks (a net trained without it) loads as zero: the function the save computed. A zoo name
(:func:`resolve_weights`) is the zoo's weights file, checked against its sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xnet.protocol.atomic import atomic_write
from xnet.protocol.errors import WeightsError
from xnet.utils.config import current_targets

log = logging.getLogger(__name__)

PREFIXES = ("restorer.net.", "module.", "net.", "model.", "dncnn.", "generator.")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, extra)``; ``extra`` holds what a Lightning checkpoint stored beside it.
    Unreadable, truncated or non-finite weights raise :class:`WeightsError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".mat":  # MATLAB releases (SRCNN .mat, DnCNN MatConvNet)
        from xnet.deploy.matlab_weights import read_mat  # lazy: scipy is an optional dependency

        try:
            return read_mat(path), {}
        except ValueError as e:  # not a MATLAB file, or a layout that is not a known release: it names the file
            raise WeightsError(str(e)) from e
    state, extra = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    check_finite(state, path)
    return state, extra


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), {}
    except Exception as e:  # SafetensorError (truncated, bad header) names no file
        raise WeightsError(f"{path}: not a readable .safetensors file, truncated or corrupt ({e})") from e


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # pickled objects beyond tensors/containers are refused on purpose
        raise WeightsError(
            f"{path}: not a loadable state dict with weights_only=True ({e.__class__.__name__}: {e})"
        ) from e
    except Exception as e:  # a cut-off zip, or not a torch file at all
        raise WeightsError(
            f"{path}: cannot read the weights file, truncated or not a PyTorch save ({e.__class__.__name__}: {e})"
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        extra = {k: v for k, v in obj.items() if k != "state_dict"}
        return dict(obj["state_dict"]), extra
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    raise WeightsError(f"{path}: expected a state dict or a Lightning checkpoint, got {type(obj).__name__}")


def check_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """NaN/inf weights restore nothing (an all-black image); refuse them by name."""
    bad = [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise WeightsError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN/inf values "
            f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
            "the training diverged before this save — use an earlier checkpoint"
        )


def adapt_keys(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes until the keys match ``net``'s; drop metric buffers of the trainer."""
    wanted = set(net.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith(("val_", "test_"))}
    for _ in range(4):
        if set(state) >= wanted or not state:
            break
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                break
        else:
            state = {k.split(".", 1)[1] if k.split(".", 1)[0] + "." in PREFIXES else k: v for k, v in state.items()}
    return state


AUTHORS_PREFIXES = ("md1.", "joints.")


def is_authors_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """The xUnit authors' key layout: cells ``md<i>[.<j>].features.0`` (conv) + ``module.{0,2,3}``
    (BN, depthwise conv, BN), block BNs ``md<i>.0``, the last conv ``joints``."""
    return any(k.startswith(AUTHORS_PREFIXES[0]) for k in state) and any(
        k.startswith(AUTHORS_PREFIXES[1]) for k in state
    )


def _groups(keys: Iterable[str]) -> dict[str, list[str]]:
    """Module prefix → its tensor names, in the state dict's (module registration) order."""
    out: dict[str, list[str]] = {}
    for k in keys:
        prefix, name = k.rsplit(".", 1)
        out.setdefault(prefix, []).append(name)
    return out


def from_authors_layout(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Map the authors' state dict onto ``net`` (xDnCNN, xNet, xSRCNN): both list their modules in
    the same order (conv, xUnit BN, depthwise conv, xUnit BN, block BN, ..., last conv), so the
    modules are paired in order and every shape is checked. The authors' depthwise convs have a
    bias that the following BN makes redundant; it is folded into that BN's running mean (exact:
    ``BN(z + b)`` with mean ``μ`` is ``BN(z)`` with mean ``μ - b``, and in training BN removes it)."""
    theirs = _groups(k for k in state if not k.endswith("num_batches_tracked"))
    ours = _groups(k for k in net.state_dict() if not k.endswith("num_batches_tracked"))
    if len(theirs) != len(ours):
        raise ValueError(
            f"the authors' layout has {len(theirs)} modules with weights, this model {len(ours)}: another architecture"
        )
    out: dict[str, torch.Tensor] = {}
    carry_bias: torch.Tensor | None = None
    for (src, src_names), (dst, dst_names) in zip(theirs.items(), ours.items()):
        tensors = {n: state[f"{src}.{n}"] for n in src_names}
        if carry_bias is not None:  # the previous depthwise conv's bias, into this BN's mean
            if "running_mean" not in tensors:
                raise ValueError(
                    f"{src}: a BatchNorm must follow a biased depthwise conv that this model has without bias"
                )
            tensors["running_mean"] = tensors["running_mean"] - carry_bias
            carry_bias = None
        if "bias" in tensors and "bias" not in dst_names and "running_mean" not in tensors:
            carry_bias = tensors.pop("bias")
        for n in dst_names:
            key = f"{dst}.{n}"
            if n not in tensors or tensors[n].shape != net.state_dict()[key].shape:
                got = tuple(tensors[n].shape) if n in tensors else "nothing"
                raise ValueError(
                    f"the authors' {src}.{n} ({got}) does not fit {key} {tuple(net.state_dict()[key].shape)}"
                )
            out[key] = tensors[n]
    if carry_bias is not None:
        raise ValueError("the authors' last depthwise bias has no BatchNorm to fold into")
    return out


def _zero_missing_conv_biases(state: dict[str, torch.Tensor], net: nn.Module) -> list[str]:
    """Fill a conv bias the save lacks with zeros (the function it computed); returns their keys."""
    filled = []
    for name, module in net.named_modules():
        key = f"{name}.bias"
        if isinstance(module, nn.Conv2d) and module.bias is not None and key not in state and f"{name}.weight" in state:
            state[key] = torch.zeros_like(module.bias, device="cpu")
            filled.append(key)
    return filled


def load_weights(
    net: nn.Module, path: str | os.PathLike, loaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Load ``path`` into ``net`` strictly (``loaded``: its :func:`read_state_dict` result, if
    already read); a mismatch names the missing and unexpected keys."""
    state, extra = loaded if loaded is not None else read_state_dict(path)
    if is_authors_layout(state):
        try:
            state = from_authors_layout(state, net)
        except ValueError as e:
            raise WeightsError(f"{path}: weights in the xUnit authors' layout do not fit this model: {e}") from e
    state = adapt_keys(state, net)
    if _zero_missing_conv_biases(state, net):
        log.info("%s: saved without some conv biases; they load as zero", path)
    for key, value in net.state_dict().items():  # older saves lack BN's step counter; it is unused in eval
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing, unexpected = sorted(set(net.state_dict()) - set(state)), sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not fit this model (check model= and its options). "
            f"missing keys: {missing[:6]}{' ...' if len(missing) > 6 else ''}; "
            f"unexpected keys: {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not fit this model: {e}") from e
    return extra


def save_weights(net: nn.Module, path: str | os.PathLike) -> Path:
    """A plain, portable state dict of the bare net (``.safetensors`` or ``.pth``), written
    atomically (:mod:`xnet.protocol.atomic`)."""
    return save_state_dict(net.state_dict(), path)


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """``state`` as ``.safetensors`` or ``.pth`` (by the suffix), written atomically."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_write(path) as f:  # Python writes the bytes: a full disk is an OSError naming the file
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            f.write(save(state))
        else:
            torch.save(state, f)
    return path


# --- the model zoo: weights=<name> -----------------------------------------------------------------
def zoo_root() -> Path:
    """``$XNET_ZOO``, else the checkout's ``weights/`` (a source or editable install), else the copy
    an installed package carries (``xnet/_zoo``, made by setup.py)."""
    if os.environ.get("XNET_ZOO"):
        return Path(os.environ["XNET_ZOO"])
    package = Path(__file__).resolve().parents[1]  # xnet/
    checkout = package.parent / "weights"
    return checkout if (checkout / "zoo.json").is_file() else package / "_zoo"


def zoo_index(zoo_dir: Path | None = None) -> dict[str, Any]:
    index = (zoo_dir or zoo_root()) / "zoo.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec: str, zoo_dir: Path | None = None) -> Path:
    """A file path as given, or a zoo name resolved to its verified weights file."""
    zoo_dir = zoo_dir or zoo_root()
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    index = zoo_index(zoo_dir)
    if spec not in index:
        known = ", ".join(sorted(index)) or "none shipped yet"
        raise FileNotFoundError(f"weights={spec}: no such file, and not a zoo name (zoo: {known})")
    entry = index[spec]
    file = zoo_dir / entry["file"]
    digest = sha256(file)
    if digest != entry["sha256"]:
        raise WeightsError(f"zoo weights {file}: sha256 {digest} does not match zoo.json's {entry['sha256']}")
    return file


def zoo_model_config(path: Path) -> dict[str, Any] | None:
    """The model config stored beside zoo weights (``config.yaml``), if ``path`` is zoo weights."""
    config = path.parent / "config.yaml"
    if path.name != "weights.safetensors" or not config.is_file():
        return None
    from omegaconf import DictConfig, OmegaConf

    try:  # OmegaConf's loader is YAML's safe one; nothing is resolved here (xnet.utils.trust checks the rest)
        loaded = OmegaConf.load(config)
        model = OmegaConf.to_container(loaded).get("model") if isinstance(loaded, DictConfig) else None
    except Exception as e:  # whatever the parser says, the file is not a config
        raise WeightsError(f"{config}: not a readable zoo config (a YAML mapping with a model: node): {e}") from e
    if model is not None and not isinstance(model, dict):
        raise WeightsError(f"{config}: its model: node is not a mapping")
    return current_targets(model) if model is not None else None
