"""Figs 7/8/9 (xnet.figures.paper_figures) on tiny images and random weights: panel order, titles' PSNRs equal
to xnet.evaluate's per-image PSNRs (image i with seed seed + i), files written, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from xnet.figures import paper_figures as pf


def write_images(folder, n, size, mode, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[:size, :size]
    for i in range(n):
        base = 128 + 90 * np.sin(x / (3 + i)) * np.cos(y / 4)
        img = np.clip(base[..., None] + rng.normal(0, 8, (size, size, 3 if mode == "RGB" else 1)), 0, 255).astype(
            np.uint8
        )
        Image.fromarray(img if mode == "RGB" else img[..., 0], mode).save(folder / f"im{i}.png")
    return folder


def random_weights(path, overrides, ckpt_steps=None):
    """A randomly initialised net of ``overrides`` (eval config) saved as a .pth, or as a Lightning-style
    .ckpt holding ``global_step``; BN running statistics are made non-trivial."""
    from xnet.utils.build import build_net, build_task

    cfg = pf.compose_eval([*overrides, "weights=none"])
    torch.manual_seed(0)
    net = build_net(cfg, build_task(cfg))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(2.0)
    state = net.state_dict()
    if ckpt_steps is None:
        torch.save(state, path)
    else:
        torch.save({"state_dict": {f"restorer.net.{k}": v for k, v in state.items()}, "global_step": ckpt_steps}, path)
    return path


def evaluate_per_image(overrides, weights, seed=0):
    """``xnet.evaluate``'s per-image PSNRs for the same config (the reference the titles must equal)."""
    from xnet.deploy.inference import evaluate_module, inference_module, load_restorer
    from xnet.utils.build import instantiate_config

    cfg = pf.compose_eval([*overrides, *([f"weights={weights}"] if weights else [])])
    loaded = load_restorer(cfg)
    source = instantiate_config(cfg.data.test, "data.test")
    report = evaluate_module(inference_module(loaded.restorer, cfg.fuse), loaded.task, source, seed=seed)
    return {r["image"]: r["psnr"] for r in report["per_image"]}


@pytest.fixture(scope="module")
def denoise_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig7")
    grey = write_images(root / "grey", 3, 40, "L")
    dncnn = random_weights(root / "dncnn.pth", ["task=denoise", "model=dncnn"])
    xdncnn = random_weights(root / "xdncnn.pth", ["task=denoise", "model=xdncnn"])
    out = root / "fig7.png"
    report = pf.run(
        [
            "fig7",
            "--sigma",
            "30",
            "--dncnn",
            str(dncnn),
            "--xdncnn",
            str(xdncnn),
            "--image",
            "im1",
            "--box",
            "4,6,20,24",
            "--out",
            str(out),
            f"+data.test.path={grey}",
        ]
    )
    return {"grey": grey, "dncnn": dncnn, "xdncnn": xdncnn, "out": out, "report": report}


def test_fig7_panels_are_noisy_bm3d_dncnn_xdncnn_clean_with_evaluate_psnrs(denoise_case):
    report, grey = denoise_case["report"], denoise_case["grey"]
    assert [p["label"] for p in report["panels"]] == ["Noisy", "BM3D", "DnCNN-S", "xDnCNN", "Clean"]
    assert report["panels"][2]["weights"] == str(denoise_case["dncnn"]) and "weights" not in report["panels"][1]
    assert report["degradation_seed"] == 1  # image 1 of the set: seed + 1, as xnet.evaluate draws it
    shared = ["task=denoise", "task.sigma=30", f"+data.test.path={grey}"]
    expected = [
        evaluate_per_image([*shared, "model=identity"], None)["im1"],
        evaluate_per_image([*shared, "model=bm3d"], None)["im1"],
        evaluate_per_image([*shared, "model=dncnn"], denoise_case["dncnn"])["im1"],
        evaluate_per_image([*shared, "model=xdncnn"], denoise_case["xdncnn"])["im1"],
    ]
    got = [p["psnr"] for p in report["panels"][:4]]
    assert got == pytest.approx(expected, abs=1e-6)
    assert report["panels"][-1]["psnr"] is None
    assert len({round(v, 3) for v in got}) == 4  # four different restorers, four different numbers


def test_fig7_writes_the_png_and_its_json(denoise_case):
    out = denoise_case["out"]
    assert out.is_file() and Image.open(out).format == "PNG"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["panels"] == denoise_case["report"]["panels"] and saved["box"] == [4, 6, 20, 24]


def test_titles_carry_the_psnr_and_the_crop_is_the_box(tmp_path):
    img = torch.rand(1, 30, 40)
    panels = [pf.Panel("Noisy", img, 20.123), pf.Panel("Clean", img, None)]
    titles = pf.draw_panels(panels, (2, 3, 10, 12), "t", tmp_path / "p.png")
    assert titles == ["Noisy\n20.12 dB", "Clean"]
    arr = (np.arange(30 * 40).reshape(30, 40, 1) % 251).astype(np.uint8)
    assert np.array_equal(pf.crop(arr, (2, 3, 10, 12)), arr[2:12, 3:15])
    with pytest.raises(pf.ConfigError, match="outside the 30×40 image"):
        pf.crop(arr, (25, 0, 10, 10))


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,4,4"])
def test_a_bad_box_is_one_error_line(box, capsys):
    with pytest.raises(SystemExit) as e:
        pf.run(["fig7", "--dncnn", "x", "--xdncnn", "y", f"--box={box}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --box") and "\n" not in err


def test_a_missing_weights_file_is_one_error_line(denoise_case, tmp_path, capsys):
    missing = tmp_path / "nope" / "DnCNN-S-50.pth"
    with pytest.raises(SystemExit) as e:
        pf.run(
            [
                "fig7",
                "--dncnn",
                str(missing),
                "--xdncnn",
                str(denoise_case["xdncnn"]),
                "--out",
                str(tmp_path / "f.png"),
                f"+data.test.path={denoise_case['grey']}",
                "--image",
                "im0",
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(missing) in err and "\n" not in err
    assert not (tmp_path / "f.png").exists()


def test_an_unknown_image_names_the_ones_there(denoise_case, capsys):
    with pytest.raises(SystemExit):
        pf.run(
            [
                "fig7",
                "--dncnn",
                str(denoise_case["dncnn"]),
                "--xdncnn",
                str(denoise_case["xdncnn"]),
                "--image",
                "test999",
                f"+data.test.path={denoise_case['grey']}",
                "--out",
                "/tmp/unused.png",
            ]
        )
    assert "im0, im1, im2" in capsys.readouterr().err


def test_fig8_pairs_and_a_photo_without_ground_truth(tmp_path):
    pairs = tmp_path / "pairs"
    write_images(pairs / "test" / "norain", 2, 36, "RGB", seed=1)
    for f in (pairs / "test" / "norain").iterdir():  # "rain": the clean image plus bright streaks
        a = np.asarray(Image.open(f)).copy()
        a[:, ::5] = 250
        (pairs / "test" / "rain").mkdir(exist_ok=True)
        Image.fromarray(a).save(pairs / "test" / "rain" / f.name)
    derainnet = random_weights(tmp_path / "derainnet.ckpt", ["task=derain", "model=derainnet"], ckpt_steps=500)
    xdncnn = random_weights(tmp_path / "xdncnn_rgb.pth", ["task=derain", "model=xdncnn_rgb"])
    shared = [f"+data.test.path={pairs}"]
    report = pf.run(
        [
            "fig8",
            "--derainnet",
            str(derainnet),
            "--xdncnn",
            str(xdncnn),
            "--image",
            "im1",
            "--out",
            str(tmp_path / "f8.png"),
            *shared,
        ]
    )
    assert [p["label"] for p in report["panels"]] == ["Rainy", "DerainNet (500 steps)", "xDnCNN", "Clean"]
    base = ["task=derain", "data/test=rain_sample", *shared]
    assert report["panels"][0]["psnr"] == pytest.approx(
        evaluate_per_image([*base, "model=identity"], None)["im1"], abs=1e-6
    )
    assert report["panels"][1]["psnr"] == pytest.approx(
        evaluate_per_image([*base, "model=derainnet"], derainnet)["im1"], abs=1e-6
    )
    assert (tmp_path / "f8.png").is_file()

    photo = pf.run(
        [
            "fig8",
            "--derainnet",
            str(derainnet),
            "--xdncnn",
            str(xdncnn),
            "--rainy",
            str(pairs / "test" / "rain" / "im0.png"),
            "--out",
            str(tmp_path / "photo.png"),
        ]
    )
    assert [p["label"] for p in photo["panels"]] == ["Rainy", "DerainNet (500 steps)", "xDnCNN"]
    assert all(p["psnr"] is None for p in photo["panels"])


def test_fig9_draws_layer_2_of_srcnn_and_xsrcnnf(tmp_path):
    images = write_images(tmp_path / "rgb", 2, 33, "RGB", seed=2)
    srcnn = random_weights(tmp_path / "srcnn.pth", ["task=sr", "model=srcnn"])
    xsrcnn = random_weights(tmp_path / "xsrcnn.pth", ["task=sr", "model=xsrcnn_f"])
    out = tmp_path / "f9.png"
    report = pf.run(
        [
            "fig9",
            "--srcnn",
            str(srcnn),
            "--xsrcnn",
            str(xsrcnn),
            "--image",
            "im1",
            "--box",
            "3,3,24,24",
            "--out",
            str(out),
            f"+data.test.path={images}",
        ]
    )
    assert [(n["label"], n["kind"], n["channels"]) for n in report["nets"]] == [
        ("SRCNN", "relu", 32),
        ("xSRCNNf", "xunit", 32),
    ]
    base = ["task=sr", "task.scale=3", "data/test=set5", f"+data.test.path={images}"]
    for net, model, w in zip(report["nets"], ("srcnn", "xsrcnn_f"), (srcnn, xsrcnn)):
        assert net["psnr"] == pytest.approx(evaluate_per_image([*base, f"model={model}"], w)["im1"], abs=1e-4)
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["layer"] == 2


def test_grey_png_is_lossless_and_keeps_colour_images(tmp_path):
    grey = np.repeat((np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64, 1), 3, axis=-1)
    Image.fromarray(grey).save(tmp_path / "g.png")
    pf.grey_png(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey[..., 0])
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "c.png")
    pf.grey_png(tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), colour)
