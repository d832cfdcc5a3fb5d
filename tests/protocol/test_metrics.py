import math

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from xnet.protocol.metrics import image_metrics, psnr


def test_psnr_known_value():
    a = torch.zeros(1, 4, 4)
    b = torch.full((1, 4, 4), 10.0)  # MSE 100 on the 0-255 scale
    assert math.isclose(float(psnr(b, a)), 10 * math.log10(255**2 / 100), rel_tol=1e-12)


def test_set_figure_is_mean_of_per_image_psnr_not_psnr_of_mean_mse():
    torch.manual_seed(0)
    target = torch.rand(3, 1, 16, 16)
    noise = torch.tensor([0.01, 0.05, 0.2])[:, None, None, None] * torch.randn(3, 1, 16, 16)
    m = image_metrics(target + noise, target)
    pooled = peak_signal_noise_ratio(
        (target + noise).clamp(0, 1).mul(255).round(), target.mul(255).round(), data_range=255.0
    )
    assert m["psnr"].shape == (3,)
    assert abs(float(m["psnr"].mean()) - float(pooled)) > 1.0  # the two aggregations really differ


def test_output_is_clipped_and_rounded_before_scoring():
    target = torch.full((1, 1, 8, 8), 0.5)
    over = target.clone()
    over[..., 0, 0] = 7.0  # clips to 1.0
    expected = psnr(over.clamp(0, 1).mul(255).round(), target.mul(255).round())
    assert torch.allclose(image_metrics(over, target)["psnr"], expected)
    tiny = target + 0.4 / 255  # rounds back to the same uint8 level
    assert float(image_metrics(tiny, target)["psnr"]) == 100.0


def test_border_is_shaved():
    target = torch.rand(1, 1, 12, 12)
    out = target.clone()
    out[..., :2, :] = 0  # damage only the border
    assert float(image_metrics(out, target, border=2)["psnr"]) == 100.0
