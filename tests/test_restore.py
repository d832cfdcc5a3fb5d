"""``xnet.restore`` on the user's own files: nothing of theirs is overwritten or lost, every file
of a folder is tried and the failures are listed, broken weights and full disks are named, and
big images run in tiles with the untiled output."""

import errno
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, compose
from PIL import Image

from xnet.protocol.errors import ConfigError, OutputError, WeightsError
from xnet.restore import RestoreFailed, restore


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The demo xDnCNN with random weights and BN statistics (no training needed to test I/O)."""
    from xnet.deploy.weights import save_weights
    from xnet.utils.build import build_net, build_task

    torch.manual_seed(0)
    cfg = compose("restore", ["experiment=demo", "weights=x", "input=x", "paths.output_dir=/tmp/unused"])
    net = build_net(cfg, build_task(cfg))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return save_weights(net, tmp_path_factory.mktemp("weights") / "demo.pth")


def run_restore(weights, src, out, *extra):
    return restore(
        compose(
            "restore",
            [
                "experiment=demo",
                f"weights={weights}",
                f"input={src}",
                f"output={out}",
                "paths.output_dir=/tmp/unused",
                *extra,
            ],
        )
    )


def photo_folder(path, names=("a.png", "b.png")):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(path / n)
    return {n: (path / n).read_bytes() for n in names}


def test_output_into_the_input_folder_is_refused_unless_a_suffix_is_used(tmp_path, weights):
    originals = photo_folder(tmp_path / "photos")
    for out in (tmp_path / "photos", tmp_path / "photos" / "restored"):
        with pytest.raises(ConfigError, match="inside it.*suffix"):
            run_restore(weights, tmp_path / "photos", out)
    written = run_restore(weights, tmp_path / "photos", tmp_path / "photos", "suffix=_restored")
    assert sorted(p.name for p in written) == ["a_restored.png", "b_restored.png"]
    assert {n: (tmp_path / "photos" / n).read_bytes() for n in originals} == originals


def test_an_input_file_is_never_written_over(tmp_path, weights):
    originals = photo_folder(tmp_path, ["photo.png"])
    with pytest.raises(ConfigError, match="overwrite the input"):
        run_restore(weights, tmp_path / "photo.png", tmp_path, "overwrite=true")
    assert (tmp_path / "photo.png").read_bytes() == originals["photo.png"]


def test_inputs_sharing_a_name_get_distinct_outputs(tmp_path, weights):
    photo_folder(tmp_path / "in", ["01.png"])
    Image.new("L", (40, 30), 99).save(tmp_path / "in" / "01.jpg")
    written = run_restore(weights, tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in written) == ["01_jpg.png", "01_png.png"]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, weights):
    photo_folder(tmp_path / "in", ["a.png"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"an earlier result")
    with pytest.raises(ConfigError, match="already holds a.png.*overwrite=true"):
        run_restore(weights, tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out" / "a.png").read_bytes() == b"an earlier result"
    run_restore(weights, tmp_path / "in", tmp_path / "out", "overwrite=true")
    assert Image.open(tmp_path / "out" / "a.png").size == (40, 30)


def test_every_file_of_a_folder_is_tried_and_failures_are_listed(tmp_path, weights):
    photo_folder(tmp_path / "in", ["a.png", "c.png"])
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(RestoreFailed, match=r"1 of 3 images failed.*\n.*b\.png: not an image"):
        run_restore(weights, tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_the_command_line_reports_the_failures_in_lines_and_exits_2(tmp_path, weights):
    photo_folder(tmp_path / "in", ["a.png"])
    (tmp_path / "in" / "b.png").write_bytes(b"broken")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.restore",
            "experiment=demo",
            f"weights={weights}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-2:] == [
        f"error: 1 of 2 images failed (1 restored into {tmp_path / 'out'}):",
        f"  {tmp_path / 'in' / 'b.png'}: not an image (or a format Pillow cannot read)",
    ]


def test_non_finite_weights_are_refused_before_any_image_is_written(tmp_path, weights):
    state = torch.load(weights, weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    photo_folder(tmp_path / "in", ["a.png"])
    with pytest.raises(WeightsError, match=r"nan\.pth: 1 weight tensor\(s\) hold NaN/inf"):
        run_restore(tmp_path / "nan.pth", tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_names_the_output_file(tmp_path, weights, monkeypatch):
    photo_folder(tmp_path / "in", ["a.png"])

    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", no_space)
    with pytest.raises(OutputError, match=r"out/a\.png: cannot write \(No space left on device\)"):
        run_restore(weights, tmp_path / "in", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # no partial PNG, no temporary file


def test_big_images_run_in_tiles_with_the_untiled_output(tmp_path, weights, monkeypatch):
    from xnet.deploy.tiling import Tiler

    photo = np.random.default_rng(1).integers(0, 255, (150, 170), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "big.png")
    whole = run_restore(weights, tmp_path / "in", tmp_path / "whole", "tiling.max_pixels=null")[0]
    tiles = []
    real = Tiler.run_tiled
    monkeypatch.setattr(
        Tiler, "run_tiled", lambda self, *a: (tiles.append(len(list(self.boxes(150, 170)))), real(self, *a))[1]
    )
    tiled = run_restore(weights, tmp_path / "in", tmp_path / "tiled", "tiling.max_pixels=10000", "tiling.tile=64")[0]
    assert tiles == [9]  # 3 × 3 tiles of at most 64² (+ the receptive radius) instead of one 150 × 170 pass
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(tiled)))


def test_an_output_written_meanwhile_by_another_restore_is_kept(tmp_path, weights, monkeypatch):
    """Planning saw a free name; another restore into the same folder took it before this one wrote:
    without overwrite it is refused at the write (a link that cannot replace), not clobbered."""
    import xnet.restore as restore_module

    photo_folder(tmp_path / "in", ["a.png", "b.png"])
    real = restore_module.restore_tensor

    def competitor_writes_first(model, task, x, device, tiler=None):
        (tmp_path / "out").mkdir(exist_ok=True)
        if not (tmp_path / "out" / "a.png").exists():
            (tmp_path / "out" / "a.png").write_bytes(b"the other restore's a.png")
        return real(model, task, x, device, tiler)

    monkeypatch.setattr(restore_module, "restore_tensor", competitor_writes_first)
    with pytest.raises(RestoreFailed, match=r"(?s)1 of 2 images failed .*out/a\.png: already exists"):
        run_restore(weights, tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out" / "a.png").read_bytes() == b"the other restore's a.png"
    assert Image.open(tmp_path / "out" / "b.png").size == (40, 30)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]  # no temporary file left


def test_a_full_filesystem_is_one_line_and_status_2(tmp_path, weights, full_disk):
    photo_folder(tmp_path / "in", ["a.png"])
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.restore",
            "experiment=demo",
            f"weights={weights}",
            f"input={tmp_path / 'in'}",
            f"output={full_disk / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {full_disk / 'out'}") and "No space left on device" in line, line
    assert not [p for p in (full_disk / "out").rglob("*") if p.is_file()] if (full_disk / "out").exists() else True


def test_degrade_reports_the_psnr_of_the_degraded_and_the_restored_image_and_the_mean(tmp_path, caplog):
    """With degrade=true the clean image is known: each image's line gives the PSNR of the degraded
    input and of the output — those of the PNGs written, against the clean image — and the mean."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = {"a.png": 2 * xx + yy, "b.png": 128 + 60 * np.sin(xx / 7) * np.cos(yy / 9)}
    for name, image in smooth.items():
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(src / name)
    cfg = compose(
        "restore",
        ["weights=xdncnn_s25_cpu", f"input={src}", f"output={out}", "degrade=true", "paths.output_dir=/tmp/unused"],
    )
    with caplog.at_level(logging.INFO, logger="xnet.restore"):
        restore(cfg)

    def psnr(png, clean):
        error = np.asarray(Image.open(png), dtype=np.float64) - clean
        return 10 * np.log10(255**2 / np.mean(error**2))

    said = [r.getMessage() for r in caplog.records if r.name == "xnet.restore"]
    pairs = []
    for name in smooth:
        clean = np.asarray(Image.open(src / name), dtype=np.float64)
        pair = psnr(out / name.replace(".png", "_input.png"), clean), psnr(out / name, clean)
        assert f"{src / name} → {out / name}: PSNR degraded {pair[0]:.2f} dB → restored {pair[1]:.2f} dB" in said
        assert pair[1] > pair[0] + 3  # σ=25 noise on smooth images: the trained xDnCNN removes most of it
        pairs.append(pair)
    mean = [sum(p[k] for p in pairs) / 2 for k in (0, 1)]
    assert said[-1] == f"mean PSNR over 2 images: degraded {mean[0]:.2f} dB → restored {mean[1]:.2f} dB"
