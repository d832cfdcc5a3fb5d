"""Synthetic rain streaks (xnet.protocol.rain)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from xnet.data.sources import PairedFolder
from xnet.protocol.io import to_tensor, to_uint8
from xnet.protocol.rain import RainStreaks, image_seed, main, make_rain_testset

torch.set_num_threads(1)


def _gen(seed: int = 0, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _clean(b=2, c=3, h=40, w=48, seed=0) -> torch.Tensor:
    return torch.rand((b, c, h, w), generator=_gen(seed)) * 0.9


def _orientation(rain: torch.Tensor) -> torch.Tensor:
    """Streak angle (degrees from vertical, positive leaning right going down) per sample of B×1×H×W,
    from the structure tensor: the mean gradient is perpendicular to the streaks."""
    r = rain[:, 0].double()
    gx = r[:, 1:-1, 2:] - r[:, 1:-1, :-2]  # central differences: co-located, no diagonal bias
    gy = r[:, 2:, 1:-1] - r[:, :-2, 1:-1]
    jxx, jyy, jxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    phi = 0.5 * torch.atan2(2 * jxy, jxx - jyy)  # gradient direction; streak = (sin θ, cos θ) ⟂ it
    return torch.rad2deg(-phi)


def _autocorr(rain: torch.Tensor, dy: int, dx: int) -> float:
    r = rain[:, 0] - rain[:, 0].mean((1, 2), keepdim=True)
    h, w = r.shape[1:]
    a = r[:, : h - dy, : w - dx]
    b = r[:, dy:, dx:]
    return float((a * b).mean() / (r * r).mean())


def test_shapes_dtype_device_and_range():
    rain = RainStreaks()
    for dtype in (torch.float32, torch.float64):
        x = _clean().to(dtype)
        y = rain.train(x, _gen(1))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert not torch.equal(y, x)
    grey = _clean(c=1)
    assert rain.train(grey, _gen(1)).shape == grey.shape
    z = rain.eval(_clean(b=1)[0], seed=3)
    assert z.shape == (3, 40, 48) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert float(z.min()) >= 0 and float(z.max()) <= 1


def test_rain_only_adds_light():
    x = _clean()
    for blend in ("add", "screen"):
        y = RainStreaks(blend=blend).train(x, _gen(2))
        assert bool((y >= x - 1e-7).all())
        assert float((y - x).abs().max()) > 0.2  # visible streaks


def test_eval_is_deterministic():
    rain = RainStreaks()
    x = _clean(b=1)[0]
    a, b = rain.eval(x, seed=7), rain.eval(x.clone(), seed=7)
    assert torch.equal(a, b)
    assert torch.equal(RainStreaks().eval(x, seed=7), a)  # a fresh instance too
    assert not torch.equal(rain.eval(x, seed=8), a)


def test_train_redraws_each_call_and_follows_the_generator():
    rain = RainStreaks()
    x = _clean()
    g = _gen(5)
    first, second = rain.train(x, g), rain.train(x, g)
    assert not torch.equal(first, second)
    assert torch.equal(rain.train(x, _gen(5)), first)
    # samples of one batch get their own rain
    same = x[:1].expand(2, -1, -1, -1).contiguous()
    y = rain.train(same, _gen(6))
    assert not torch.equal(y[0], y[1])


def test_rain_is_achromatic():
    rain = RainStreaks(intensity=0.5)  # clean <= 0.4 and R <= 1: no clipping
    x = torch.stack([torch.full((32, 32), v) for v in (0.1, 0.25, 0.4)])[None]
    inc = rain.train(x, _gen(3)) - x
    assert float(inc.max()) > 0.1
    torch.testing.assert_close(inc[:, 0], inc[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(inc[:, 0], inc[:, 2], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [{"density": 0.0}, {"intensity": 0.0}])
def test_no_rain_leaves_the_image_unchanged(kwargs):
    x = _clean()
    rain = RainStreaks(**kwargs)
    assert torch.equal(rain.train(x, _gen(4)), x)
    assert torch.equal(rain.eval(x[0], seed=4), x[0])


def test_longer_streaks_are_more_anisotropic():
    def ratio(length: float) -> float:
        rain = RainStreaks(length=length, angle=0.0, angle_jitter=0.0, width=1.0, blur=0.0, layers=1, density=0.004)
        r = rain.rain_layer(rain.draw(4, generator=_gen(9)), 96, 96, _gen(10))
        return _autocorr(r, 4, 0) / max(_autocorr(r, 0, 4), 1e-3)

    short, long = ratio(3.0), ratio(30.0)
    assert long > 5 and long > 3 * short


def test_angle_is_drawn_per_sample_and_rendered_per_sample():
    # soft streaks: finite differences see thin lines with a lattice bias
    rain = RainStreaks(
        angle=(-40, 40), angle_jitter=0.0, length=30.0, width=2.0, blur=1.0, layers=1, density=0.004, intensity=1.0
    )
    g = _gen(11)
    params = rain.draw(8, generator=g)
    angles = params["angle"][:, 0]
    assert float(angles.std()) > 10
    r = rain.rain_layer(params, 128, 128, g)
    est = _orientation(r)
    assert float((est - angles).abs().max()) < 5, (est, angles)
    # train() is draw() + rain_layer() + composite() from one generator stream
    y = rain.train(torch.zeros(8, 3, 128, 128), _gen(11))
    assert torch.equal(y, r.expand(-1, 3, -1, -1))


def test_positive_angle_leans_right():
    rain = RainStreaks(angle=30.0, angle_jitter=0.0, length=30.0, width=1.0, blur=0.0, layers=1, density=0.004)
    r = rain.rain_layer(rain.draw(2, generator=_gen(13)), 96, 96, _gen(14))
    s, c = math.sin(math.radians(30)), math.cos(math.radians(30))
    along = _autocorr(r, round(6 * c), round(6 * s))  # down and to the right
    r_flip = r.flip(-1)
    assert along > 2 * _autocorr(r_flip, round(6 * c), round(6 * s))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        RainStreaks(blend="multiply")
    with pytest.raises(ValueError):
        RainStreaks(density=(0.01, 0.001))
    with pytest.raises(ValueError):
        RainStreaks(intensity=1.5)
    with pytest.raises(ValueError):
        RainStreaks(layers=0)
    assert "RainStreaks(" in repr(RainStreaks())


@pytest.mark.cuda
def test_cuda():
    x = _clean().cuda()
    y = RainStreaks().train(x, _gen(0, "cuda"))
    assert y.device == x.device and y.shape == x.shape and 0 <= float(y.min()) <= float(y.max()) <= 1


def test_testset_round_trips_through_paired_folder(tmp_path):
    rng = np.random.default_rng(0)
    items = [(f"img{i}", rng.integers(0, 200, (40 + i, 36, 3), dtype=np.uint8)) for i in range(3)]
    out = make_rain_testset(items, tmp_path / "set", seed=0)
    pairs = PairedFolder(path=out, mode="RGB").items
    assert [p[0] for p in pairs] == ["img0", "img1", "img2"]
    rain = RainStreaks()
    for (name, arr), (pname, rainy, target) in zip(items, pairs):
        assert pname == name
        np.testing.assert_array_equal(target, arr)
        np.testing.assert_array_equal(rainy, to_uint8(rain.eval(to_tensor(arr), image_seed(0, name))))
        assert (rainy.astype(int) - arr).max() > 30
    again = make_rain_testset(items, tmp_path / "again", seed=0)
    for name, _ in items:
        assert (again / "rain" / f"{name}.png").read_bytes() == (out / "rain" / f"{name}.png").read_bytes()
    other = make_rain_testset(items[:1], tmp_path / "other", seed=1)
    assert (other / "rain" / "img0.png").read_bytes() != (out / "rain" / "img0.png").read_bytes()


def test_cli(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for name in ("b", "a", "c"):
        Image.fromarray(rng.integers(0, 255, (30, 34, 3), dtype=np.uint8)).save(src / f"{name}.png")
    Image.fromarray(rng.integers(0, 255, (30, 34), dtype=np.uint8)).save(src / "d.png")  # grey → RGB
    assert (
        main(
            [
                "--source-dir",
                str(src),
                "--out",
                str(tmp_path / "out"),
                "--seed",
                "0",
                "--limit",
                "2",
                "--intensity",
                "0.5",
                "0.6",
            ]
        )
        == 0
    )
    pairs = PairedFolder(path=tmp_path / "out", mode="RGB").items
    assert [p[0] for p in pairs] == ["a", "b"]
    assert "wrote 2 pairs" in capsys.readouterr().out
    assert main(["--source-dir", str(src), "--out", str(tmp_path / "all"), "--seed", "0"]) == 0
    assert PairedFolder(path=tmp_path / "all", mode="RGB").items[3][1].shape == (30, 34, 3)
