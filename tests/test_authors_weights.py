"""The xUnit authors' released weights (../shared/reference/authors_xunit) through `xnet.evaluate`:
xnet's xDnCNN and xSRCNNf are the authors' models (layout, conv biases) and the protocols are theirs."""

from pathlib import Path

import pytest
import torch
from conftest import REPO, compose
from torch import nn

from xnet.archs.dncnn import DnCNN, XDnCNN
from xnet.archs.plain import XNet
from xnet.archs.srcnn import XSRCNN
from xnet.deploy.weights import from_authors_layout, load_weights
from xnet.evaluate import evaluate

AUTHORS = REPO.parent / "shared" / "reference" / "authors_xunit"
XDNCNN = AUTHORS / "xdncnn_res_f64k3k9_s25.pkl"
XSRCNNF = AUTHORS / "xsrcnnf_s3_k9k3k5.pkl"
needs_authors = pytest.mark.skipif(not AUTHORS.is_dir(), reason="../shared/reference/authors_xunit not present")


def figures() -> dict[tuple[str, str], float]:
    """{(weights, set): PSNR} from the reference README's figures table (its first number)."""
    out = {}
    for line in (AUTHORS / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith(("xDnCNN σ", "xSRCNNf ×")):
            out[(cells[0], cells[1].split()[0])] = float(cells[2].split()[0])
    return out


def run_eval(tmp_path: Path, overrides: list[str]) -> dict:
    return evaluate(compose("eval", [f"paths.output_dir={tmp_path}", *overrides]))


@needs_authors
@pytest.mark.parametrize("test_set", ["Set12", pytest.param("BSD68", marks=pytest.mark.slow)])
def test_authors_xdncnn_s25_reproduces_its_figures(tmp_path, data_dir, test_set):
    expected = figures()[("xDnCNN σ=25", test_set)]
    report = run_eval(
        tmp_path,
        ["task=denoise", "model=xdncnn", f"weights={XDNCNN}", f"data/test={test_set.lower()}", "task.sigma=25"],
    )
    assert abs(report["psnr"] - expected) <= 0.02, (test_set, report["psnr"], expected)
    assert report["params_paper"] == 303_616


@needs_authors
@pytest.mark.parametrize("test_set", ["Set5", pytest.param("BSD100", marks=pytest.mark.slow)])
def test_authors_xsrcnnf_x3_reproduces_its_figures(tmp_path, data_dir, test_set):
    expected = figures()[("xSRCNNf ×3", test_set)]
    report = run_eval(
        tmp_path, ["task=sr", "model=xsrcnn_f", "task.scale=3", f"weights={XSRCNNF}", f"data/test={test_set.lower()}"]
    )
    assert abs(report["psnr"] - expected) <= 0.02, (test_set, report["psnr"], expected)


def authors_cell_forward(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """The authors' cell written out independently: conv (bias) → y · exp(-BN(DW(ReLU(BN(y))) + b)²)."""
    F = nn.functional
    w, b = state[f"{prefix}.features.0.weight"], state[f"{prefix}.features.0.bias"]
    y = F.conv2d(x, w, b, padding=w.shape[-1] // 2)

    def bn(t, p):
        return F.batch_norm(
            t,
            state[f"{p}.running_mean"],
            state[f"{p}.running_var"],
            state[f"{p}.weight"],
            state[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    dw = state[f"{prefix}.module.2.weight"]
    d = F.conv2d(
        F.relu(bn(y, f"{prefix}.module.0")),
        dw,
        state[f"{prefix}.module.2.bias"],
        padding=dw.shape[-1] // 2,
        groups=dw.shape[0],
    )
    return y * torch.exp(-(bn(d, f"{prefix}.module.3") ** 2))


def synthetic_authors_xdncnn(blocks: int = 2, width: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def t(*shape, positive=False):
        v = torch.randn(*shape, generator=g) * 0.3
        return v.abs() + 0.5 if positive else v

    def bn(p):
        return {
            f"{p}.weight": t(width) + 1,
            f"{p}.bias": t(width),
            f"{p}.running_mean": t(width),
            f"{p}.running_var": t(width, positive=True),
        }

    def cell(p, cin):
        return {
            f"{p}.features.0.weight": t(width, cin, 3, 3),
            f"{p}.features.0.bias": t(width),
            **bn(f"{p}.module.0"),
            f"{p}.module.2.weight": t(width, 1, 9, 9) * 0.3,
            f"{p}.module.2.bias": t(width),
            **bn(f"{p}.module.3"),
        }

    state = cell("md1.0", 1)
    for i in range(2, blocks + 2):
        state |= bn(f"md{i}.0") | cell(f"md{i}.1", width)
    return state | {"joints.weight": t(1, width, 3, 3), "joints.bias": t(1)}


def test_authors_layout_maps_onto_xdncnn_exactly():
    """A synthetic save in the authors' layout, biases everywhere: xnet's XDnCNN computes what the
    authors' cells compute (the depthwise bias folded into the following BN)."""
    state = synthetic_authors_xdncnn()
    net = XDnCNN(num_blocks=2, width=8).eval()
    net.load_state_dict(from_authors_layout(state, net))
    x = torch.rand(1, 1, 20, 17)
    h = authors_cell_forward(state, "md1.0", x)
    for i in (2, 3):
        p = f"md{i}.0"
        h = authors_cell_forward(
            state,
            f"md{i}.1",
            nn.functional.batch_norm(
                h,
                state[f"{p}.running_mean"],
                state[f"{p}.running_var"],
                state[f"{p}.weight"],
                state[f"{p}.bias"],
                False,
                0.0,
                1e-5,
            ),
        )
    expected = nn.functional.conv2d(h, state["joints.weight"], state["joints.bias"], padding=1)
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="modules with weights"):
        from_authors_layout(state, XDnCNN(num_blocks=3, width=8))
    with pytest.raises(ValueError, match="does not fit"):
        from_authors_layout(state, XNet(4, width=8, xunit={"kernel_size": 7}))


def test_every_conv_without_a_following_bn_has_a_bias():
    """The authors' nets (and the official DnCNN) bias every conv that no BN follows."""
    for net in (XDnCNN(), XNet(4), XSRCNN(), DnCNN()):
        mods = list(net)
        for i, m in enumerate(mods):
            if isinstance(m, nn.Conv2d):
                followed_by_bn = i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d)
                assert (m.bias is None) == followed_by_bn, (type(net).__name__, i)


def test_a_save_without_conv_biases_loads_with_zero_biases(tmp_path):
    """Older saves (e.g. DnCNN-S retrains without first/last biases) compute the same function."""
    old = DnCNN(depth=4, width=8)
    for m in old.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    last = str(len(old) - 1)
    state = {k: v for k, v in old.state_dict().items() if not (k.endswith(".bias") and k.split(".")[0] in ("0", last))}
    torch.save(state, tmp_path / "old.pth")
    net = DnCNN(depth=4, width=8)
    load_weights(net, tmp_path / "old.pth")
    assert net[0].bias.abs().sum() == 0 and net[-1].bias.abs().sum() == 0
    x = torch.rand(1, 1, 12, 12)
    old[0].bias.data.zero_(), old[-1].bias.data.zero_()
    torch.testing.assert_close(net.eval()(x), old.eval()(x))
