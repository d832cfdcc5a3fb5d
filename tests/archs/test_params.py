import pytest
import torch

from xnet.archs.derainnet import DerainNet
from xnet.archs.dncnn import DnCNN, XDnCNN
from xnet.archs.params import count_paper_params, count_trainable_params
from xnet.archs.plain import ConvNet, XNet
from xnet.archs.srcnn import SRCNN, XSRCNN
from xnet.archs.srresnet import SRResNet, XSRResNet

PAPER = [
    (lambda: DnCNN(), 556_032),
    (lambda: XDnCNN(), 303_616),
    (lambda: XDnCNN(channels=3), 305_920),
    (lambda: SRCNN(), 57_184),
    (lambda: XSRCNN(), 32_576),
    (lambda: XSRCNN(widths=(42, 32), kernel_sizes=(9, 5, 5)), 44_092),
    (lambda: SRResNet(scale=4), 1_546_752),
    (lambda: XSRResNet(scale=4), 1_155_968),
    (lambda: DerainNet(), 753_664),
]


@pytest.mark.parametrize("make,expected", PAPER)
def test_paper_parameter_counts(make, expected):
    net = make()
    assert count_paper_params(net) == expected
    assert count_trainable_params(net) >= expected  # biases and PReLU slopes on top


def test_convention_excludes_biases_and_prelu():
    net = SRResNet(scale=4)
    biases = sum(m.bias.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    prelu = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.PReLU) for p in m.parameters())
    assert count_trainable_params(net) - count_paper_params(net) == biases + prelu


def test_fig3_headline_architectures():
    """A 3-layer xNet (r=9) has under a third of a 9-layer ConvNet's parameters."""
    assert count_paper_params(XNet(3, xunit={"kernel_size": 9})) * 3 < count_paper_params(ConvNet(9))


@pytest.mark.parametrize(
    "make,shape,out",
    [
        (lambda: DnCNN(depth=5), (1, 1, 20, 24), (1, 1, 20, 24)),
        (lambda: XDnCNN(num_blocks=2), (2, 1, 20, 24), (2, 1, 20, 24)),
        (lambda: XSRCNN(), (1, 1, 21, 21), (1, 1, 21, 21)),
        (lambda: SRResNet(scale=2, num_blocks=2), (1, 3, 10, 12), (1, 3, 20, 24)),
        (lambda: XSRResNet(scale=3, num_blocks=2), (1, 3, 10, 12), (1, 3, 30, 36)),
        (lambda: XNet(4, xunit={"kernel_size": 5}), (1, 1, 16, 16), (1, 1, 16, 16)),
        (lambda: DerainNet(width=8), (1, 3, 21, 19), (1, 3, 21, 19)),
    ],
)
def test_forward_shapes(make, shape, out):
    assert make()(torch.rand(shape)).shape == out
