"""The benchmarked pairs are the models xnet.train builds from their configs."""

import pytest
import torch
from conftest import compose
from torch import nn

from xnet.archs.params import count_paper_params
from xnet.benchmark.models import FAMILIES, calibrate, conv_macs_per_pixel, upscale
from xnet.utils.build import build_net, build_task

# the paper-convention counts the model configs state
PAPER_PARAMS = {
    "DnCNN-S": 556_032,
    "xDnCNN": 303_616,
    "SRCNN": 57_184,
    "xSRCNNf": 32_576,
    "SRResNet": 1_546_752,
    "xSRResNet": 1_155_968,
}


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_each_model_is_the_trained_one(family):
    for name, model_name in zip(family.names, family.models):
        built = family.build(name)
        cfg = compose("train", [*family.task, f"model={model_name}"])
        task = build_task(cfg)
        torch.manual_seed(0)
        trained = build_net(cfg, task)
        assert built.residual == task.residual and repr(built.net) == repr(trained)
        assert all(torch.equal(a, b) for a, b in zip(built.net.state_dict().values(), trained.state_dict().values()))
        assert count_paper_params(built) == PAPER_PARAMS[name]


def test_upscale_is_the_output_over_input_size():
    assert upscale(FAMILIES["srresnet"].build("SRResNet"), 3) == 4
    assert upscale(FAMILIES["srcnn"].build("SRCNN"), 1) == 1


def test_conv_macs_count_every_conv_per_output_pixel():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2, groups=4))
    macs = conv_macs_per_pixel(net, torch.zeros(1, 2, 6, 7))
    assert macs == {"total": 4 * 2 * 9 + 4 * 25, "xunit": 0}
    xdncnn = FAMILIES["dncnn"].build("xDnCNN")
    assert conv_macs_per_pixel(xdncnn, torch.zeros(1, 1, 16, 16))["xunit"] == 8 * 64 * 81  # eight 9×9 depthwise xUnits


def test_calibrate_sets_the_bn_statistics_to_the_batch():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    x = torch.randn(2, 1, 5, 5) * 3 + 1
    calibrate(net, x)
    assert not net.training and net[1].momentum == 0.1
    assert torch.allclose(net[1].running_mean, net[0](x).mean((0, 2, 3)), atol=1e-5)
