"""Tasks through the same code path as evaluation: the SR protocol and the degradations."""

import pytest
import torch
from conftest import compose
from torch import nn

from xnet.deploy.inference import evaluate_module
from xnet.utils.build import build_task

BICUBIC = {  # published bicubic PSNR (Y, shave = scale) — ×2, ×3, ×4
    "Set5": (33.66, 30.39, 28.42),
    "Set14": (30.24, 27.55, 26.00),
    "BSD100": (29.56, 27.21, 25.96),
}


class Passthrough(nn.Module):
    """Returns its input: on SRCNN-family inputs, the score is the bicubic baseline."""

    def forward(self, x):
        return x


def sr_task(scale, model="srcnn"):
    return build_task(
        compose("train", ["task=sr", f"model={model}", f"task.scale={scale}", "paths.output_dir=/tmp/unused"])
    )


@pytest.mark.parametrize("name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_evaluation_path_reproduces_the_published_bicubic_baselines(data_dir, name, scale):
    from xnet.data.sources import ImageFolder

    report = evaluate_module(Passthrough(), sr_task(scale), ImageFolder(name=name, root=data_dir))
    assert abs(report["psnr"] - BICUBIC[name][scale - 2]) <= 0.01, report["psnr"]


def test_grey_image_is_its_own_y(data_dir):
    """Set14's bridge is grey: pushing it through RGB→YCbCr studio range would add ~1.3 dB."""
    from xnet.data.sources import ImageFolder

    task = sr_task(3)
    source = ImageFolder(name="Set14", root=data_dir)
    names = [n for n, _ in source]
    bridge = source[names.index("bridge")][1]
    assert bridge.shape[-1] == 1
    target = task.to_net_space(task.clean_tensor(bridge))
    torch.testing.assert_close(target, task.clean_tensor(bridge))


def test_rgb_sr_inputs_are_low_resolution_uint8_levels():
    task = sr_task(4, "srresnet")
    clean = torch.rand(3, 40, 48)
    inp, target = task.eval_pair(clean, seed=0)
    assert inp.shape == (3, 10, 12) and target.shape == (3, 40, 48)
    torch.testing.assert_close(inp, inp.mul(255).round().div(255))


def test_denoise_eval_noise_is_unclipped_float_and_seeded():
    task = build_task(compose("train", ["task=denoise", "task.sigma=50", "paths.output_dir=/tmp/unused"]))
    clean = torch.full((1, 64, 64), 0.98)
    a, _ = task.eval_pair(clean, seed=7)
    b, _ = task.eval_pair(clean, seed=7)
    assert torch.equal(a, b)
    assert a.max() > 1.0  # not clipped
    assert not torch.equal(a, a.mul(255).round().div(255))  # not quantised
    assert abs(float((a - clean).std()) - 50 / 255) < 0.01


def test_blind_noise_draws_a_level_per_sample():
    from xnet.protocol.degradations import GaussianNoise

    noise = GaussianNoise([0, 55])
    x = torch.zeros(64, 1, 16, 16)
    stds = (noise.train(x) - x).flatten(1).std(1) * 255
    assert stds.min() < 15 and stds.max() > 40
