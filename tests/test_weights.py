"""Weights files that cannot be used are refused by name: truncated, corrupt or non-finite."""

import pytest
import torch

from xnet.archs.dncnn import DnCNN
from xnet.deploy.weights import read_state_dict, save_weights
from xnet.protocol.errors import WeightsError


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_truncated_file_is_named(tmp_path, suffix):
    path = save_weights(DnCNN(depth=3), tmp_path / f"net{suffix}")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(WeightsError, match=rf"net\{suffix}: .*truncated"):
        read_state_dict(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    net = DnCNN(depth=3)
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = bad
    path = save_weights(net, tmp_path / "diverged.safetensors")
    with pytest.raises(
        WeightsError, match=r"diverged\.safetensors: 1 weight tensor\(s\) hold NaN/inf values \(0\.weight\)"
    ):
        read_state_dict(path)


def test_finite_weights_load(tmp_path):
    state, extra = read_state_dict(save_weights(DnCNN(depth=3), tmp_path / "ok.pth"))
    assert set(state) >= {"0.weight", "0.bias"} and extra == {}


def test_a_text_file_named_mat_is_named(tmp_path):
    pytest.importorskip("scipy")
    fake = tmp_path / "x3.mat"
    fake.write_text("not MATLAB at all\n")
    with pytest.raises(WeightsError, match=r"x3\.mat: not a readable MATLAB \.mat file"):
        read_state_dict(fake)


def test_a_zoo_config_that_is_not_yaml_is_named(tmp_path):
    from xnet.deploy.weights import zoo_model_config

    (tmp_path / "weights.safetensors").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(WeightsError, match=r"config\.yaml: not a readable zoo config"):
        zoo_model_config(tmp_path / "weights.safetensors")
