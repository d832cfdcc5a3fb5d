"""ONNX export of a restoration model (plain or :func:`xnet.deploy.fuse.fuse`-d) and a parity check.

The exported graph takes ``input`` (N, C, H, W) and returns ``output``; with ``dynamic_hw`` the
height and width are symbolic, so one file serves every image size. A fused model exports its
out-of-place reference ops (``FusedXUnit.forward_reference``), which are the folded BN/conv
weights plus ``exp``/``mul``; a ``torch.compile`` twin is never exported.

Needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` for :func:`onnx_parity`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from xnet.protocol.errors import is_environment_error, require_extra

__all__ = ["export_onnx", "onnx_parity", "require_onnx"]


def require_onnx() -> None:
    """The exporter's packages (``onnx``, ``onnxscript``), or one line naming the ``export`` extra."""
    require_extra("format=onnx", "export", "onnx", "onnxscript")


def _exportable(module: nn.Module) -> nn.Module:
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper
    return module.eval()


def export_onnx(
    module: nn.Module,
    path: str | Path,
    example: torch.Tensor,
    dynamic_hw: bool = True,
    opset: int | None = None,
) -> Path:
    """Write ``module`` as ONNX to ``path`` (parents created) and return the path.

    Uses the ``torch.export``-based exporter; if that fails, falls back to the TorchScript one
    (with a warning). ``example`` fixes N and C (and H, W unless ``dynamic_hw``).
    """
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _exportable(module)
    example = example.detach()
    errors: list[str] = []
    with torch.no_grad():
        try:
            dynamic_shapes = None
            if dynamic_hw:
                dim = torch.export.Dim
                dynamic_shapes = ({2: dim.DYNAMIC, 3: dim.DYNAMIC},)
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
            )
            program.save(str(path), external_data=False)
            return path
        except Exception as exc:  # try the other exporter
            if is_environment_error(exc):  # a full disk or no permission: the other exporter fares no better
                raise
            errors.append(f"dynamo exporter: {type(exc).__name__}: {exc}")
        try:
            dynamic_axes = {"input": {2: "height", 3: "width"}, "output": {2: "out_height", 3: "out_width"}}
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                opset_version=opset or 17,
                dynamic_axes=dynamic_axes if dynamic_hw else None,
            )
            warnings.warn(f"exported with the TorchScript ONNX exporter ({errors[0]})", stacklevel=2)
            return path
        except Exception as exc:
            if is_environment_error(exc):
                raise
            errors.append(f"TorchScript exporter: {type(exc).__name__}: {exc}")
    raise RuntimeError("ONNX export failed:\n" + "\n".join(errors))


def onnx_parity(module: nn.Module, path: str | Path, example: torch.Tensor) -> float:
    """Max ``|module(example) − onnxruntime(path)(example)|`` on CPU.

    Raises ``ModuleNotFoundError`` if onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("onnx_parity needs onnxruntime (pip install 'xnet[export]')") from exc
    module = _exportable(module)
    with torch.no_grad():
        ref = module(example).detach().float().cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: example.detach().float().cpu().contiguous().numpy()})
    if out.shape != ref.shape:
        raise ValueError(f"ONNX output shape {out.shape} != torch output shape {ref.shape}")
    return float(abs(out - ref).max()) if ref.size else 0.0
