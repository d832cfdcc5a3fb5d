"""Published weight formats (SRCNN MATLAB .mat, DnCNN MatConvNet .mat, KAIR's DnCNN .pth) on small
synthetic files of each layout: the loaded xnet net computes what the authors' code computes,
written out independently here from the format's description (scipy's correlate, not torch)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose
from torch import nn

from xnet.archs.dncnn import DnCNN
from xnet.archs.srcnn import SRCNN
from xnet.convert import convert, main
from xnet.deploy.weights import load_weights

scipy_io = pytest.importorskip("scipy.io")
from scipy.ndimage import correlate  # noqa: E402

# --------------------------------------------------------------------------- SRCNN MATLAB release


def srcnn_mat(path: Path, widths=(6, 4), ks=(5, 3, 3), seed=0) -> dict[str, np.ndarray]:
    """Variables as SRCNN's x3.mat stores them: conv1 [k², n1], conv2 [n1, k², n2], conv3 [n2, k²]."""
    rng = np.random.default_rng(seed)
    (n1, n2), (k1, k2, k3) = widths, ks
    mat = {
        "weights_conv1": rng.normal(0, 0.3, (k1 * k1, n1)),
        "biases_conv1": rng.normal(0, 0.1, (n1, 1)),
        "weights_conv2": rng.normal(0, 0.3, (n1, k2 * k2, n2)),
        "biases_conv2": rng.normal(0, 0.1, (n2, 1)),
        "weights_conv3": rng.normal(0, 0.3, (n2, k3 * k3)),
        "biases_conv3": np.array([[0.05]]),
    }
    scipy_io.savemat(path, mat)
    return mat


def srcnn_demo_forward(mat: dict[str, np.ndarray], im_b: np.ndarray) -> np.ndarray:
    """SRCNN's demo (SRCNN.m) written out: reshape(v, k, k) is column-major, imfilter correlates
    with 'replicate' borders (scipy's mode='nearest')."""

    def kernel(v):
        k = math.isqrt(v.size)
        return v.reshape(k, k, order="F")

    w1, w2, w3 = mat["weights_conv1"], mat["weights_conv2"], mat["weights_conv3"]
    conv1 = [
        np.maximum(correlate(im_b, kernel(w1[:, i]), mode="nearest") + mat["biases_conv1"][i, 0], 0)
        for i in range(w1.shape[1])
    ]
    conv2 = []
    for i in range(w2.shape[2]):
        acc = sum(correlate(conv1[j], kernel(w2[j, :, i]), mode="nearest") for j in range(w2.shape[0]))
        conv2.append(np.maximum(acc + mat["biases_conv2"][i, 0], 0))
    return (
        sum(correlate(conv2[i], kernel(w3[i, :]), mode="nearest") for i in range(w3.shape[0]))
        + mat["biases_conv3"][0, 0]
    )


def test_srcnn_mat_loads_into_replicate_padded_srcnn(tmp_path):
    mat = srcnn_mat(tmp_path / "x3.mat")
    net = SRCNN(widths=(6, 4), kernel_sizes=(5, 3, 3), padding_mode="replicate")
    load_weights(net, tmp_path / "x3.mat")
    im_b = np.random.default_rng(1).random((13, 17))  # not square: rows and columns must not swap
    out = net(torch.from_numpy(im_b).float()[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(out, srcnn_demo_forward(mat, im_b), atol=1e-4)
    zero_padded = SRCNN(widths=(6, 4), kernel_sizes=(5, 3, 3))
    load_weights(zero_padded, tmp_path / "x3.mat")
    assert not np.allclose(
        zero_padded(torch.from_numpy(im_b).float()[None, None])[0, 0].detach().numpy(), out, atol=1e-3
    )


def test_srcnn_mat_through_evaluate_and_the_convert_cli(tmp_path):
    """`weights=x3.mat` with `model.net.padding_mode=replicate` runs the SR protocol; the converted
    .safetensors gives the same figures."""
    from PIL import Image

    from xnet.evaluate import evaluate

    srcnn_mat(tmp_path / "x3.mat")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (30, 36, 3), dtype=np.uint8)).save(images / "a.png")
    assert main([str(tmp_path / "x3.mat"), str(tmp_path / "x3.safetensors")]) == 0
    base = [
        "task=sr",
        "task.scale=3",
        "model=srcnn",
        "model.net.widths=[6,4]",
        "model.net.kernel_sizes=[5,3,3]",
        "model.net.padding_mode=replicate",
        "data/test=folder",
        f"data.test.path={images}",
    ]
    reports = [
        evaluate(compose("eval", [*base, f"weights={tmp_path / w}", f"paths.output_dir={tmp_path / w}-run"]))
        for w in ("x3.mat", "x3.safetensors")
    ]
    assert reports[0]["per_image"] == reports[1]["per_image"] and np.isfinite(reports[0]["psnr"])


def test_srcnn_mat_errors_name_the_variable(tmp_path):
    mat = srcnn_mat(tmp_path / "ok.mat")
    scipy_io.savemat(tmp_path / "bad.mat", {**mat, "weights_conv2": np.zeros((6, 10, 4))})
    with pytest.raises(ValueError, match=r"bad.mat: weights_conv2: its k² axis has 10 entries"):
        convert(tmp_path / "bad.mat")
    scipy_io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(ValueError, match=r"other.mat: neither SRCNN's .* \(variables: \['foo'\]\)"):
        convert(tmp_path / "other.mat")


# --------------------------------------------------------------------------- DnCNN, MatConvNet


def matconvnet_dncnn(path: Path, width=4, seed=0) -> list[dict]:
    """A 3-layer simplenn DnCNN (conv, relu, conv, bnorm, relu, conv, loss) saved as net.layers{i}."""
    rng = np.random.default_rng(seed)

    def conv(cin, cout):
        return {
            "type": "conv",
            "name": "c",
            "weights": _cell([rng.normal(0, 0.4, (3, 3, cin, cout)), rng.normal(0, 0.1, (cout, 1))]),
        }

    bnorm = {
        "type": "bnorm",
        "weights": _cell(
            [
                rng.normal(1, 0.2, (width, 1)),
                rng.normal(0, 0.1, (width, 1)),
                np.stack([rng.normal(0, 0.2, width), rng.uniform(0.5, 1.5, width)], 1),
            ]
        ),
    }
    layers = [
        conv(1, width),
        {"type": "relu"},
        conv(width, width),
        bnorm,
        {"type": "relu"},
        conv(width, 1),
        {"type": "loss"},
    ]
    scipy_io.savemat(path, {"net": {"layers": _cell(layers)}})
    return layers


def _cell(items: list) -> np.ndarray:
    out = np.empty((1, len(items)), dtype=object)
    for i, x in enumerate(items):
        out[0, i] = x
    return out


def matconvnet_forward(layers: list[dict], x: np.ndarray) -> np.ndarray:
    """vl_simplenn in eval mode, written out: zero-padded correlation, y = g·(x − μ)/σ + b."""
    h = [x]
    for layer in layers:
        if layer["type"] == "conv":
            w, b = layer["weights"][0]
            h = [
                sum(correlate(h[ci], w[:, :, ci, co], mode="constant") for ci in range(w.shape[2])) + b[co, 0]
                for co in range(w.shape[3])
            ]
        elif layer["type"] == "bnorm":
            g, b, m = layer["weights"][0]
            h = [g[c, 0] * (h[c] - m[c, 0]) / m[c, 1] + b[c, 0] for c in range(len(h))]
        elif layer["type"] == "relu":
            h = [np.maximum(t, 0) for t in h]
    return h[0]


def test_matconvnet_dncnn_loads_into_dncnn(tmp_path):
    layers = matconvnet_dncnn(tmp_path / "sigma=25.mat")
    net = DnCNN(depth=3, width=4).eval()
    load_weights(net, tmp_path / "sigma=25.mat")  # the middle conv's bias is folded into the BN
    x = np.random.default_rng(3).random((11, 14))
    out = net(torch.from_numpy(x).float()[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(out, matconvnet_forward(layers, x), atol=1e-4)


def test_matconvnet_unknown_layer_is_named(tmp_path):
    scipy_io.savemat(tmp_path / "odd.mat", {"net": {"layers": _cell([{"type": "pool"}])}})
    with pytest.raises(ValueError, match=r"odd.mat: net.layers\{1\} \(pool\): layer type 'pool' is not supported"):
        convert(tmp_path / "odd.mat")


# --------------------------------------------------------------------------- DnCNN, KAIR (BN merged)


def merge_bn(bn_net: DnCNN) -> dict[str, torch.Tensor]:
    """KAIR's released layout: every BN folded into the conv before it, keys model.<i>."""
    mods, out, i, j = list(bn_net), {}, 0, 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d):
            w, b = (
                m.weight.detach().clone(),
                (m.bias.detach().clone() if m.bias is not None else torch.zeros(m.out_channels)),
            )
            if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
                bn = mods[i + 1]
                s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w, b = w * s[:, None, None, None], (b - bn.running_mean) * s + bn.bias
                i += 1
            out[f"model.{j}.weight"], out[f"model.{j}.bias"] = w.detach(), b.detach()
            j += 2  # conv, ReLU
        i += 1
    return out


def test_kair_merged_dncnn_loads_into_bn_merged_dncnn(tmp_path):
    torch.manual_seed(0)
    bn_net = DnCNN(depth=4, width=6).eval()
    for m in bn_net.modules():
        if isinstance(m, nn.BatchNorm2d):
            (
                m.running_mean.uniform_(-0.5, 0.5),
                m.running_var.uniform_(0.5, 2),
                m.weight.data.uniform_(0.5, 1.5),
                m.bias.data.uniform_(-0.2, 0.2),
            )
    torch.save(merge_bn(bn_net), tmp_path / "dncnn_25.pth")
    merged = DnCNN(depth=4, width=6, bn_merged=True).eval()
    load_weights(merged, tmp_path / "dncnn_25.pth")
    x = torch.rand(1, 1, 12, 15)
    torch.testing.assert_close(merged(x), bn_net(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="missing keys"):  # the BN variant is another architecture
        load_weights(DnCNN(depth=4, width=6), tmp_path / "dncnn_25.pth")
    assert main([str(tmp_path / "dncnn_25.pth"), str(tmp_path / "dncnn_25.safetensors"), "--layout", "kair"]) == 0
    again = DnCNN(depth=4, width=6, bn_merged=True).eval()
    load_weights(again, tmp_path / "dncnn_25.safetensors")
    torch.testing.assert_close(again(x), merged(x))


def test_model_configs_offer_the_published_architectures():
    cfg = compose("eval", ["task=denoise", "model=dncnn", "model.net.bn_merged=true", "paths.output_dir=/tmp/unused"])
    from xnet.utils.build import build_net

    net = build_net(cfg)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) and len(net) == 33
    cfg = compose(
        "eval", ["task=sr", "model=srcnn", "model.net.padding_mode=replicate", "paths.output_dir=/tmp/unused"]
    )
    assert all(m.padding_mode == "replicate" for m in build_net(cfg).modules() if isinstance(m, nn.Conv2d))
