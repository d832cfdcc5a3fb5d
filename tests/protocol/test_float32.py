"""Every protocol step runs in float32 whatever the trainer's precision (issue #22.6): the training
and evaluation pairs made under CPU bf16 autocast equal the fp32 ones bit for bit."""

from __future__ import annotations

import pytest
import torch

from xnet.protocol.color import rgb_to_y
from xnet.protocol.degradations import Bicubic, GaussianNoise, seeded_generator
from xnet.protocol.imresize import imresize
from xnet.protocol.quantize import quantize_uint8
from xnet.protocol.rain import RainStreaks
from xnet.protocol.tasks import Task

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}
TASKS = {
    "sr_y_x3": Task("sr", "y", Bicubic(3), residual=False),
    "sr_y_x4_lr": Task("sr", "y", Bicubic(4, upsample=False), residual=False),
    "denoise_blind": Task("denoise", "grey", GaussianNoise([0, 55]), residual=True),
    "derain": Task("derain", "rgb", RainStreaks(), residual=True),
}


def batch(channels: int, seed: int = 0) -> torch.Tensor:
    return quantize_uint8(torch.rand(6, channels, 48, 48, generator=seeded_generator(seed)))


@pytest.mark.parametrize("name", list(TASKS))
def test_train_pair_under_bf16_autocast_equals_fp32(name):
    task = TASKS[name]
    clean = batch(1 if task.color == "grey" else 3)
    want = task.train_pair(clean, seeded_generator(1))
    with torch.autocast(**BF16):
        got = task.train_pair(clean, seeded_generator(1))
    for w, g in zip(want, got):
        assert g.dtype == torch.float32 and torch.equal(w, g)


def test_mixed_pairs_keep_their_real_inputs_under_autocast():
    task = TASKS["sr_y_x3"]
    clean, real = batch(3, 0), batch(3, 1)
    given = torch.tensor([True, False, True, False, False, True])
    with torch.autocast(**BF16):
        inp, target = task.train_pair(clean, seeded_generator(2), real, given)
    synthetic, _ = task.train_pair(clean, seeded_generator(2))
    assert torch.equal(inp[given], task.to_net_space(real)[given]) and torch.equal(inp[~given], synthetic[~given])
    assert torch.equal(target, task.to_net_space(clean))


def test_eval_pair_under_bf16_autocast_equals_fp32():
    task = TASKS["sr_y_x3"]
    clean = batch(3)[0]
    want = task.eval_pair(clean, seed=5)
    with torch.autocast(**BF16):
        got = task.eval_pair(clean, seed=5)
    assert all(torch.equal(w, g) for w, g in zip(want, got))


@pytest.mark.parametrize("step", [rgb_to_y, lambda x: imresize(x, scale=1 / 3), quantize_uint8])
def test_each_step_widens_a_bf16_input_to_float32(step):
    """A bf16 tensor given to a step is computed (and returned) in float32, not in bf16."""
    x = batch(3)
    assert torch.equal(step(x.bfloat16()), step(x.bfloat16().float()))
    assert step(x.bfloat16()).dtype == torch.float32


def test_float64_stays_float64():
    x = batch(3).double()
    assert rgb_to_y(x).dtype == torch.float64 and imresize(x, scale=0.5).dtype == torch.float64
