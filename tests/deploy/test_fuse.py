"""fuse(): BatchNorm folding and FusedXUnit are exact for every xUnit variant and model family."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from helpers_xunit import VARIANTS, randomise, single_thread  # noqa: F401 - single_thread: autouse fixture
from torch import nn

from xnet.archs.common import Restorer
from xnet.archs.dncnn import DnCNN, XDnCNN
from xnet.archs.plain import ConvNet, XNet
from xnet.archs.srcnn import SRCNN, XSRCNN
from xnet.archs.srresnet import SRResNet, XSRResNet
from xnet.archs.xunit import GATES, XUnit
from xnet.deploy.fuse import ChannelAffine, Deployed, FusedXUnit, fuse, max_abs_diff, native_kernel
from xnet.kernels.dispatch import Impl

TOL = 1e-4


def _inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("pre_norm,relu,depthwise,post_norm", VARIANTS)
@pytest.mark.parametrize("kernel", ["torch", "auto"])
def test_fused_xunit_every_variant(
    pre_norm: bool, relu: bool, depthwise: bool, post_norm: bool, gate: str, kernel: str
) -> None:
    torch.manual_seed(0)
    opts = dict(kernel_size=5, pre_norm=pre_norm, relu=relu, depthwise=depthwise, post_norm=post_norm, gate=gate)
    c = 16  # a multiple of 16: the native kernel runs where it can ("auto")
    # standalone (not in place), and as in xDnCNN: conv → xUnit (in place) → BN (absorbed) → conv
    alone = randomise(XUnit(c, **opts))
    chain = randomise(
        nn.Sequential(nn.Conv2d(3, c, 3, padding=1), XUnit(c, **opts), nn.BatchNorm2d(c), nn.Conv2d(c, 2, 3, padding=1))
    )
    xc, x3 = torch.randn(2, c, 13, 11), torch.randn(2, 3, 13, 11)
    for tile_bytes in (0, 1):  # whole image; smallest tiles (kernel_size rows, several tiles)
        fa = fuse(alone, tile_bytes=tile_bytes, cpu_kernel=kernel)
        fc = fuse(chain, tile_bytes=tile_bytes, cpu_kernel=kernel)
        assert max_abs_diff(alone, fa, xc, clip=None) <= TOL
        assert max_abs_diff(chain, fc, x3, clip=None) <= TOL
        units = [m for m in fc.modules() if isinstance(m, FusedXUnit)]
        assert len(units) == 1 and units[0].inplace and units[0].out_shift is not None
        assert not any(isinstance(m, (nn.BatchNorm2d, XUnit, ChannelAffine)) for m in fc.modules())


@pytest.mark.parametrize("channels", [6, 32])  # torch-ops path only / native where available
def test_fused_xunit_odd_sizes(channels: int) -> None:
    unit = randomise(XUnit(channels, kernel_size=9))
    fused = fuse(unit)
    for shape in ((1, channels, 1, 1), (1, channels, 3, 40), (3, channels, 17, 2)):
        assert max_abs_diff(unit, fused, torch.randn(shape), clip=None) <= TOL


def test_fused_xunit_with_bias_and_post_norm() -> None:
    unit = randomise(XUnit(4, kernel_size=3, bias=True))
    assert unit.depthwise.bias is not None
    x = torch.randn(1, 4, 9, 10)
    assert max_abs_diff(unit, fuse(unit, tile_bytes=1), x, clip=None) <= TOL


def test_fused_xunit_reference_path_matches_tiled() -> None:
    unit = randomise(XUnit(5, kernel_size=7))
    fused = FusedXUnit.from_xunit(unit, tile_bytes=1).eval()
    x = torch.randn(2, 5, 23, 9)
    with torch.no_grad():
        ref = unit(x)
        assert (fused.forward_reference(x) - ref).abs().max() <= TOL
        assert (fused(x) - ref).abs().max() <= TOL
        fused.inplace = True
        y = x.clone()
        out = fused(y)
        assert out.data_ptr() == y.data_ptr()  # overwrote its input
        assert (out - ref).abs().max() <= TOL


def _families():
    return {
        "dncnn": (Restorer(DnCNN(depth=5, width=8), residual=True), (2, 1, 17, 14)),
        "xdncnn": (Restorer(XDnCNN(num_blocks=2, width=8), residual=True), (2, 1, 17, 14)),
        "xdncnn_rgb": (Restorer(XDnCNN(channels=3, num_blocks=1, width=8), residual=True), (1, 3, 16, 15)),
        "srcnn": (SRCNN(widths=(8, 4)), (1, 1, 18, 15)),
        "xsrcnn": (XSRCNN(widths=(8, 4)), (1, 1, 18, 15)),
        "srresnet": (SRResNet(num_blocks=2, width=8, scale=4), (1, 3, 7, 6)),
        "xsrresnet": (XSRResNet(num_blocks=2, width=8, scale=2), (1, 3, 7, 6)),
        "xsrresnet_x3": (XSRResNet(num_blocks=1, width=8, scale=3), (1, 3, 6, 5)),
        "convnet": (ConvNet(4, width=8), (2, 1, 15, 16)),
        "xnet": (XNet(4, width=8), (2, 1, 15, 16)),
    }


@pytest.mark.parametrize("name", list(_families()))
def test_fused_model_matches(name: str) -> None:
    torch.manual_seed(0)
    model, shape = _families()[name]
    model = randomise(model)
    x = _inputs(shape)
    before = copy.deepcopy(model.state_dict())
    for tile_bytes in (0, 1):
        fused = fuse(model, tile_bytes=tile_bytes)
        assert isinstance(fused, Deployed)
        assert max_abs_diff(model, fused, x, clip=None) <= TOL
        assert max_abs_diff(model, fused, x, clip=(0.0, 1.0)) <= TOL
        # every BN folded away, every xUnit fused, no leftover affine ops for these families
        assert not any(isinstance(m, (nn.BatchNorm2d, XUnit, ChannelAffine)) for m in fused.modules())
    # the original is untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_xdncnn_structure_and_layout() -> None:
    model = randomise(XDnCNN(num_blocks=3, width=8))
    fused = fuse(model)
    units = [m for m in fused.modules() if isinstance(m, FusedXUnit)]
    assert len(units) == 4
    assert all(u.inplace for u in units)  # each follows a conv
    assert all(u.out_shift is not None for u in units[:-1])  # block BNs went into the multiply
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    y = fused(_inputs((1, 1, 12, 10)))
    assert y.is_contiguous()
    assert not fused.body.training and not any(p.requires_grad for p in fused.parameters())


def test_original_mode_is_kept() -> None:
    model = XDnCNN(num_blocks=1, width=4).train()
    fuse(model)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_bn_before_zero_padded_conv_is_exact() -> None:
    # nothing before the BN can absorb its shift, and the conv reads padded zeros: kept as affine
    padded = randomise(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1)))
    fused = fuse(padded)
    assert any(isinstance(m, ChannelAffine) for m in fused.modules())
    x = torch.randn(2, 3, 8, 7)
    assert max_abs_diff(padded, fused, x, clip=None) <= TOL
    # no padding (or a non-zero padding mode): folds into the conv exactly
    convs = (nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 3, groups=2))
    for conv in convs:
        cin = conv.in_channels
        seq = randomise(nn.Sequential(nn.BatchNorm2d(cin), conv))
        f = fuse(seq)
        assert not any(isinstance(m, (ChannelAffine, nn.BatchNorm2d)) for m in f.modules())
        assert max_abs_diff(seq, f, torch.randn(2, cin, 8, 7), clip=None) <= TOL


def test_standalone_bn_and_prelu() -> None:
    seq = randomise(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.PReLU(4), nn.BatchNorm2d(4)))
    f = fuse(seq)
    assert any(isinstance(m, ChannelAffine) for m in f.modules())
    assert max_abs_diff(seq, f, torch.randn(1, 2, 6, 6), clip=None) <= TOL


def test_bn_without_running_stats_is_rejected() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fuse(model)


def test_fused_grad_path_is_out_of_place() -> None:
    model = randomise(XDnCNN(num_blocks=1, width=4))
    fused = fuse(model)
    x = _inputs((1, 1, 9, 9)).requires_grad_()
    y = fused(x)
    y.sum().backward()
    assert x.grad is not None
    assert (y.detach() - model(x.detach())).abs().max() <= TOL


def test_state_dict_round_trip() -> None:
    model = randomise(XSRCNN(widths=(6, 4)))
    fused, other = fuse(model), fuse(randomise(XSRCNN(widths=(6, 4)), seed=5))
    other.load_state_dict(fused.state_dict())
    x = _inputs((1, 1, 10, 9))
    assert max_abs_diff(fused, other, x, clip=None) == 0.0


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("gcc") is None, reason="inductor needs a C++ compiler")
def test_fuse_compile_option() -> None:
    model = randomise(Restorer(XDnCNN(num_blocks=1, width=4, xunit={"kernel_size": 3}), residual=True))
    fused = fuse(model, compile=True)
    x = _inputs((1, 1, 8, 8))
    assert fused.compiled is not None
    assert max_abs_diff(model, fused, x, clip=None) <= TOL
    assert fused.compiled is not None, "compilation failed and fell back to eager"
    assert isinstance(fused.body, nn.Module)  # the eager body is kept as the fallback


needs_native = pytest.mark.skipif(
    native_kernel() is None, reason="native xUnit CPU kernel unavailable (no C++ compiler?)"
)


@needs_native
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("kernel_size", [1, 3, 9, 11])
@pytest.mark.parametrize(
    "pre_norm,post,inplace", [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]
)
def test_native_kernel_matches_reference(
    gate: str, kernel_size: int, pre_norm: bool, post: bool, inplace: bool
) -> None:
    c = 32  # two 16-channel blocks; 23 rows: several 8-row chunks per band
    unit = randomise(XUnit(c, kernel_size=kernel_size, pre_norm=pre_norm, gate=gate))
    fused = FusedXUnit.from_xunit(unit).eval()
    if post:
        fused.absorb_output_affine(torch.rand(c) + 0.5, torch.randn(c))
    fused.cpu_kernel = "native"
    fused.inplace = inplace
    x = torch.randn(2, c, 23, 19).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = fused.forward_reference(x)
        # threads split the channel blocks into groups, and with 4 also the rows into bands with shared halos
        for workers in (1, 2, 3, 4):
            fused.native_workers = workers
            xin = x.clone()
            y = fused(xin)
            assert (y.data_ptr() == xin.data_ptr()) == inplace
            assert (y - ref).abs().max() <= TOL


@needs_native
def test_native_kernel_without_openmp_runs_the_same_tasks_on_python_threads(monkeypatch) -> None:
    """The fallback for a compiler without OpenMP: the tasks on Python threads, same result."""
    from xnet.kernels.xunit_native import native_kernel

    unit = randomise(XUnit(32, kernel_size=5))
    fused = FusedXUnit.from_xunit(unit).eval()
    fused.cpu_kernel, fused.native_workers = "native", 4  # channel groups and row bands
    x = torch.randn(1, 32, 40, 19).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = fused.forward_reference(x)
        assert native_kernel().xunit_has_openmp() == 1  # gcc/clang with -fopenmp: the usual build
        monkeypatch.setattr(native_kernel(), "xunit_has_openmp", lambda: 0)
        assert (fused(x.clone()) - ref).abs().max() <= TOL


@needs_native
def test_native_kernel_in_model() -> None:
    model = randomise(Restorer(XDnCNN(num_blocks=2, width=16), residual=True))
    x = _inputs((2, 1, 30, 21))
    native, plain = fuse(model, cpu_kernel="native"), fuse(model, cpu_kernel="torch")
    assert max_abs_diff(model, native, x, clip=None) <= TOL
    assert max_abs_diff(plain, native, x, clip=None) <= TOL


def test_native_kernel_not_applicable_falls_back() -> None:
    unit = randomise(XUnit(6, kernel_size=3))  # 6 channels: not a multiple of 16
    fused = FusedXUnit.from_xunit(unit).eval()
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():  # built or not, the kernel does not take 6 channels
        assert fused.choose(x.contiguous(memory_format=torch.channels_last), native_ready=lambda: True) is Impl.TILED
    fused.cpu_kernel = "native"
    with pytest.raises(RuntimeError):
        fused(x)
    with pytest.raises(ValueError):
        fuse(unit, cpu_kernel="fast")


def test_an_xnet_with_frelu_fuses_around_its_funnels_and_keeps_its_output() -> None:
    """FReLU (combine="max") has no fused kernel: fuse() folds the BNs around it and leaves each funnel as trained."""
    torch.manual_seed(0)
    frelu = dict(kernel_size=3, pre_norm=False, relu=False, post_norm=True, gate="identity", combine="max")
    net = randomise(Restorer(XNet(depth=4, width=16, kernel_size=3, channels=1, xunit=frelu), residual=True))
    fused = fuse(net)
    assert max_abs_diff(net, fused, _inputs((1, 1, 19, 23)), clip=None) <= TOL
    kept = [m for m in fused.modules() if isinstance(m, XUnit)]
    assert len(kept) == 3 and all(m.combine == "max" for m in kept)
    assert not any(isinstance(m, FusedXUnit) for m in fused.modules())
