"""ONNX export of plain and fused models; parity with onnxruntime at two image sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_xunit import randomise, single_thread  # noqa: F401 - single_thread: autouse fixture

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from xnet.archs.common import Restorer
from xnet.archs.dncnn import XDnCNN
from xnet.archs.srresnet import XSRResNet
from xnet.deploy.fuse import fuse
from xnet.deploy.onnx import export_onnx, onnx_parity

TOL = 1e-4


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_xdncnn_dynamic_hw(tmp_path: Path, fused: bool) -> None:
    model = randomise(Restorer(XDnCNN(num_blocks=1, width=6, xunit={"kernel_size": 5}), residual=True))
    module = fuse(model) if fused else model
    path = export_onnx(module, tmp_path / "sub" / "xdncnn.onnx", torch.rand(1, 1, 20, 18))
    assert isinstance(path, Path) and path.is_file()
    assert onnx_parity(module, path, torch.rand(1, 1, 20, 18)) <= TOL
    assert onnx_parity(module, path, torch.rand(1, 1, 13, 25)) <= TOL  # another size, same file


def test_xsrresnet_fused(tmp_path: Path) -> None:
    model = randomise(XSRResNet(num_blocks=1, width=6, scale=2))
    module = fuse(model)
    path = export_onnx(module, tmp_path / "xsrresnet.onnx", torch.rand(1, 3, 8, 9))
    assert onnx_parity(module, path, torch.rand(1, 3, 11, 7)) <= TOL
    # the fused graph matches the original model too
    assert onnx_parity(model, path, torch.rand(1, 3, 8, 9)) <= TOL


def test_static_shape(tmp_path: Path) -> None:
    model = randomise(XDnCNN(num_blocks=1, width=4, xunit={"kernel_size": 3}))
    path = export_onnx(model, tmp_path / "static.onnx", torch.rand(1, 1, 9, 9), dynamic_hw=False)
    assert onnx_parity(model, path, torch.rand(1, 1, 9, 9)) <= TOL
