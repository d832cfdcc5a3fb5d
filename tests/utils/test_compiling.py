"""torch.compile in place with a visible fall back: a compile that fails logs a warning, says so in the
status that goes to metrics.json and runs eagerly; the model's own errors still raise; nothing turns
on dynamo's process-wide ``suppress_errors``."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from xnet.utils.compiling import compile_in_place, is_compile_error


def _failing_backend(gm, example_inputs):
    raise RuntimeError("this backend always fails")


class Residual(nn.Module):
    """A forward of our own (dynamo skips a bare nn.Sequential's frames, torch's own code)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def test_a_failed_compile_falls_back_to_eager_visibly(caplog) -> None:
    torch.manual_seed(0)
    model = Residual()
    x = torch.randn(2, 1, 6, 6)
    expected = model(x)
    status = compile_in_place(model, "restorer", backend=_failing_backend)
    assert status == {"compile": "inductor"} and model._compiled_call_impl is not None
    with caplog.at_level(logging.WARNING, logger="xnet.utils.compiling"):
        y = model(x)
    assert torch.equal(y, expected)
    assert status["compile"] == "eager (compile failed)" and "always fails" in status["compile_error"]
    assert "torch.compile of the restorer failed" in caplog.text
    assert model._compiled_call_impl is None  # later calls go straight to eager
    assert torch.equal(model(x), expected)
    assert list(model.state_dict()) == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]


def test_the_models_own_errors_are_not_swallowed() -> None:
    model = Residual()
    compile_in_place(model, backend="eager")
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.randn(1, 3, 8, 8))  # 3 channels into a 1-channel conv: an error eagerly too
    assert not is_compile_error(RuntimeError("out of memory")) and is_compile_error(torch._dynamo.exc.Unsupported("x"))


def test_the_training_module_no_longer_suppresses_errors_process_wide() -> None:
    import torch._dynamo

    from xnet.archs.dncnn import XDnCNN
    from xnet.lit.module import RestorationModule
    from xnet.protocol.degradations import GaussianNoise
    from xnet.protocol.tasks import Task

    before = torch._dynamo.config.suppress_errors
    task = Task("denoise", "grey", GaussianNoise(25), residual=True)
    from conftest import compose

    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    options = {**cfg.optim, **cfg.module, "compile": True}
    module = RestorationModule(XDnCNN(num_blocks=1, width=16), task, **options)
    assert module.compile_status == {}
    module.configure_model()
    assert module.compile_status == {"compile": "inductor"}
    assert torch._dynamo.config.suppress_errors is before is False
