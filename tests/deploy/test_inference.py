"""xnet.deploy.inference: the one weights → network loader and the per-image protocol, checked against the
protocol written out by hand (KAIR's main_test_dncnn: noisy input → output → ground truth → PSNR)."""

import math

import numpy as np
import pytest
import torch
from conftest import compose
from hydra.utils import instantiate

from xnet.deploy.inference import evaluate_module, load_restorer, load_run
from xnet.deploy.weights import save_weights
from xnet.protocol.errors import ConfigError, WeightsError


def hand_written_psnr(image: np.ndarray, seed: int, sigma: float) -> float:
    """Grey uint8 image → unclipped noise of ``seed`` → (identity restorer) → im2uint8 → PSNR."""
    clean = torch.from_numpy(image[..., 0].astype(np.float32) / 255)
    g = torch.Generator().manual_seed(seed)
    noisy = clean + torch.randn(clean.shape, generator=g, dtype=torch.float32) * (sigma / 255)
    output = torch.floor(noisy.clamp(0, 1) * 255 + 0.5).double()  # MATLAB's im2uint8
    mse = (output - torch.from_numpy(image[..., 0].astype(np.float64))).pow(2).mean().item()
    return 10 * math.log10(255**2 / mse)


def test_the_protocol_is_the_hand_written_one():
    cfg = compose(
        "eval",
        [
            "task=denoise",
            "model=identity",
            "task.sigma=25",
            "data/test=sample",
            "seed=7",
            "paths.output_dir=/tmp/unused",
        ],
    )
    loaded = load_restorer(cfg)
    photo = instantiate(cfg.data.test)[0][-1]
    source = [("top", photo[:64, :96]), ("bottom", photo[-80:, -64:])]  # (name, uint8 H×W×C), as a source gives them
    report = evaluate_module(loaded.restorer, loaded.task, source, seed=cfg.seed)
    greys = [loaded.task.clean_uint8(image) for _, image in source]
    expected = [hand_written_psnr(img, 7 + i, 25.0) for i, img in enumerate(greys)]
    assert [r["psnr"] for r in report["per_image"]] == pytest.approx(expected, abs=1e-9)
    assert report["psnr"] == pytest.approx(sum(expected) / 2, abs=1e-9)  # the mean of per-image PSNRs
    with pytest.raises(ConfigError, match="no images to score"):
        evaluate_module(loaded.restorer, loaded.task, source, limit=0)


def test_the_architecture_stored_with_the_weights_wins(tiny_run):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose("eval", ["model=dncnn", f"weights={ckpt}", "paths.output_dir=/tmp/unused"])
    loaded = load_restorer(cfg)
    assert cfg.model.name == "dncnn" and loaded.cfg.model.name == "xdncnn"
    assert loaded.weights == str(ckpt) and loaded.extra["params_paper"] == 39_296


def test_a_run_is_rebuilt_from_its_checkpoint_alone(tiny_run, tmp_path):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    run = load_run(ckpt)
    assert run.cfg.model.name == "xdncnn" and run.task.name == "denoise" and run.task.info["sigma"] == 25
    same = load_restorer(compose("eval", ["experiment=demo", f"weights={ckpt}", "paths.output_dir=/tmp/unused"]))
    for a, b in zip(run.restorer.state_dict().values(), same.restorer.state_dict().values()):
        assert torch.equal(a, b)
    plain = save_weights(run.restorer.net, tmp_path / "net.pth")  # weights without their run config
    with pytest.raises(WeightsError, match="not an xnet training checkpoint"):
        load_run(plain)


def test_a_device_this_machine_lacks_is_named():
    from xnet.deploy.inference import pick_device

    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device=gpu: not a device name"):
        pick_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda: .* here .*use device=cpu or device=auto"):
            pick_device("cuda")


@pytest.mark.parametrize("side", [1, 3, 10])
def test_images_too_small_to_score_are_named(side):
    from xnet.protocol.io import ImageError

    cfg = compose("eval", ["task=denoise", "model=identity", "data/test=sample", "paths.output_dir=/tmp/unused"])
    loaded = load_restorer(cfg)
    source = [("tiny", np.full((side, side, 1), 128, dtype=np.uint8))]
    with pytest.raises(ImageError, match=f"image tiny: {side}×{side} px to score .*SSIM needs at least 11×11"):
        evaluate_module(loaded.restorer, loaded.task, source)
    assert (
        evaluate_module(loaded.restorer, loaded.task, [("ok", np.full((11, 11, 1), 128, dtype=np.uint8))])["images"]
        == 1
    )
