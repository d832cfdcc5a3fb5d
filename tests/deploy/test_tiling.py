"""Tiled inference equals whole-image inference where the receptive radius fits the overlap, for
same-size nets (eager and fused) and for SR nets whose output is scale × the input."""

import pytest
import torch
from conftest import compose
from helpers_xunit import randomise  # BN statistics away from (0, 1): folding really shifts and scales

from xnet.archs.common import Restorer
from xnet.archs.dncnn import DnCNN, XDnCNN
from xnet.archs.srcnn import SRCNN
from xnet.archs.srresnet import XSRResNet
from xnet.deploy.fuse import fuse
from xnet.deploy.tiling import Tiler, receptive_radius, spans


def test_receptive_radius_of_the_paper_models():
    assert receptive_radius(XDnCNN()) == 9 * 1 + 8 * 4  # 9 3×3 convs + 8 9×9 depthwise convs
    assert receptive_radius(DnCNN()) == 17
    assert receptive_radius(SRCNN(widths=[64, 32], kernel_sizes=[9, 5, 5])) == 4 + 2 + 2
    xdncnn = Restorer(randomise(XDnCNN(num_blocks=2, width=16)), residual=True)
    assert receptive_radius(fuse(xdncnn)) == receptive_radius(xdncnn)  # fused xUnits count by their kernel


class Layout(torch.nn.Module):
    """Records whether its input arrived channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x


def test_the_tiler_runs_a_model_in_its_own_layout():
    """The memory layout is the model's decision (module.channels_last in training, fuse(channels_last=)
    for inference), not the tiler's: the input reaches the model as given, whole or in tiles."""
    x = torch.rand(1, 3, 20, 30)
    for max_pixels in (None, 0):
        plain = Layout()
        Tiler(radius=2, tile=8, max_pixels=max_pixels)(plain, x)
        assert plain.seen and not any(plain.seen)
    fused = fuse(Restorer(randomise(XDnCNN(num_blocks=1, width=16)), residual=True))
    assert fused.channels_last and Tiler(radius=5, tile=8, max_pixels=0)(fused, x[:, :1]).shape == (1, 1, 20, 30)


def test_spans_cover_the_length_in_near_equal_pieces():
    assert spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert spans(9, 3) == [(0, 3), (3, 6), (6, 9)]
    assert spans(5, 8) == [(0, 5)]


@pytest.mark.parametrize("fused", [False, True])
def test_tiles_equal_the_whole_image_for_a_same_size_net(fused):
    restorer = Restorer(randomise(XDnCNN(num_blocks=2, width=16)), residual=True)
    model = fuse(restorer) if fused else restorer
    x = torch.rand(1, 1, 70, 90)
    with torch.no_grad():
        whole = model(x)
        tiled = Tiler.for_model(restorer, tile=24, max_pixels=0)(model, x)
        too_little_context = Tiler(radius=3, tile=24, max_pixels=0)(model, x)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() <= 1e-5
    assert (too_little_context - whole).abs().max() > 1e-3  # the overlap is what makes it exact


def test_tiles_equal_the_whole_image_for_an_sr_net_that_upsamples():
    net = randomise(XSRResNet(channels=3, scale=2, num_blocks=2, width=16))
    x = torch.rand(1, 3, 30, 41)
    with torch.no_grad():
        whole = net(x)
        tiled = Tiler.for_model(net, tile=12, max_pixels=0)(net, x)
    assert tiled.shape == whole.shape == (1, 3, 60, 82)
    assert (tiled - whole).abs().max() <= 1e-5


def test_small_images_run_whole_and_big_ones_in_tiles():
    tiler = Tiler(radius=2, tile=16, max_pixels=400)
    assert not tiler.needs_tiles(torch.zeros(1, 1, 20, 20)) and tiler.needs_tiles(torch.zeros(1, 1, 20, 21))
    assert not Tiler(radius=2, max_pixels=None).needs_tiles(torch.zeros(1, 1, 5000, 5000))


def test_evaluate_tiled_scores_as_untiled(tmp_path):
    """The evaluation path with tiles forced on every image gives the untiled figures."""
    from xnet.deploy.weights import save_weights
    from xnet.evaluate import evaluate
    from xnet.utils.build import build_net, build_task

    cfg = compose("eval", ["experiment=demo", "weights=x", "paths.output_dir=/tmp/unused"])
    weights = save_weights(randomise(build_net(cfg, build_task(cfg))), tmp_path / "w.pth")
    base = ["experiment=demo", f"weights={weights}", "data/test=sample"]
    whole = evaluate(compose("eval", [*base, "tiling.max_pixels=null", f"paths.output_dir={tmp_path / 'a'}"]))
    tiled = evaluate(
        compose("eval", [*base, "tiling.max_pixels=0", "tiling.tile=96", f"paths.output_dir={tmp_path / 'b'}"])
    )
    assert tiled["psnr"] == pytest.approx(whole["psnr"], abs=1e-4)
    assert tiled["ssim"] == pytest.approx(whole["ssim"], abs=1e-5)
