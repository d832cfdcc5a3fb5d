"""Weights files that cannot be used are refused by name: truncated, corrupt or non-finite."""
import pytest
import torch

from xnet.archs.dncnn import DnCNN
from xnet.protocol.errors import WeightsError
from xnet.deploy.weights import read_state_dict, save_weights


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
    with pytest.raises(WeightsError, match=r"diverged\.safetensors: 1 weight tensor\(s\) hold NaN/inf values \(0\.weight\)"):
        read_state_dict(path)


def test_finite_weights_load(tmp_path):
    state, extra = read_state_dict(save_weights(DnCNN(depth=3), tmp_path / "ok.pth"))
    assert set(state) >= {"0.weight", "0.bias"} and extra == {}
