"""Real (tiny) training runs: learning happens, checkpoints resume, divergence stops cleanly."""

import csv
import json
import logging

import pytest
import torch
from conftest import CONF, TINY, compose, run_train
from omegaconf import OmegaConf

from xnet.evaluate import evaluate
from xnet.lit.module import NonFiniteLossError
from xnet.protocol.degradations import GaussianNoise
from xnet.protocol.errors import ConfigError
from xnet.train import optimized_value

SEARCHED = OmegaConf.load(CONF / "hparams_search" / "optuna.yaml").optimized_metric  # what the Optuna search maximises


def test_short_training_raises_psnr_well_above_the_noisy_input(tiny_run):
    out, summary = tiny_run
    assert summary["step"] == 40
    gain = summary["val/psnr"] - summary["val/psnr_input"]
    assert gain > 3.0, summary  # σ=25 input ≈ 20.2 dB; 40 steps of Adam already give several dB
    assert summary["params_paper"] == 39_296 and summary["params_trainable"] == 39_296 + 4 * 32 + 1  # + conv biases
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/psnr"] == pytest.approx(summary["test/psnr"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-*.ckpt"))
    with open(out / "csv" / "metrics.csv") as f:  # the test scores reach the CSV log too
        tested = [r for r in csv.DictReader(f) if r.get("test/psnr")]
    assert len(tested) == 1 and float(tested[0]["test/psnr"]) == pytest.approx(summary["test/psnr"], abs=1e-4)
    assert list((out / "csv" / "images").glob("*.png"))  # input | output | target triplets
    (best,) = (out / "checkpoints").glob("best-*.ckpt")  # scored after fit exactly as xnet.evaluate scores it
    evaluated = evaluate(
        compose("eval", ["experiment=demo", f"weights={best}", "data/test=sample", f"paths.output_dir={out / 'eval'}"])
    )
    assert saved["test/psnr"] == evaluated["psnr"]


def test_resume_continues_from_the_checkpoint(tmp_path):
    first = run_train(
        tmp_path, [*TINY, "trainer.max_steps=20", "trainer.val_check_interval=10", "test_after_fit=false"]
    )
    assert first["step"] == 20
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 20 and ckpt["xnet"]["params_paper"] == 39_296
    resumed = run_train(
        tmp_path,
        [*TINY, "trainer.max_steps=30", "trainer.val_check_interval=10", "ckpt_path=last", "test_after_fit=false"],
    )
    assert resumed["step"] == 30  # 10 more steps, not 30 from scratch
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert len(lines) > 3


class NaNAfterTwoDraws(GaussianNoise):
    """Noise that turns into NaN on its third training draw (a stand-in for divergence)."""

    draws = 0

    def train(self, clean, generator=None):
        NaNAfterTwoDraws.draws += 1
        noisy = super().train(clean, generator)
        return noisy * float("nan") if NaNAfterTwoDraws.draws > 2 else noisy


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_good_checkpoint(tmp_path):
    overrides = [
        *TINY,
        "trainer.val_check_interval=2",
        "test_after_fit=false",
        "task.degradation._target_=test_train.NaNAfterTwoDraws",
    ]
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        run_train(tmp_path, overrides)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


class NaNAtOnce(GaussianNoise):
    """Noise that is NaN from the first draw: the loss breaks before any checkpoint exists."""

    def train(self, clean, generator=None):
        return super().train(clean, generator) * float("nan")


def test_a_loss_that_breaks_before_any_save_does_not_point_at_a_checkpoint(tmp_path):
    overrides = [
        *TINY,
        "trainer.val_check_interval=2",
        "test_after_fit=false",
        "task.degradation._target_=test_train.NaNAtOnce",
    ]
    with pytest.raises(NonFiniteLossError, match="No checkpoint was saved before it") as info:
        run_train(tmp_path, overrides)
    assert "last.ckpt" not in str(info.value) and not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_fast_dev_run_smoke_says_where_the_run_is_at_start_and_end(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="xnet.train"):
        summary = run_train(tmp_path, ["experiment=demo", "debug=fast", "trainer.enable_progress_bar=false"])
    assert summary["step"] == 1
    said = [r.getMessage() for r in caplog.records if r.name == "xnet.train"]
    assert said[0] == f"run dir: {tmp_path.resolve()}" and said[-1] == f"done: {tmp_path.resolve()}"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        saved["step"] == 1
        and saved["config"]["name"] == "demo"
        and saved["val/psnr"] == pytest.approx(summary["val/psnr"])
    )
    assert optimized_value(summary, SEARCHED) == summary["val/psnr"]  # even a one-step run logs what a search optimises


def test_the_optimized_metric_is_read_as_the_search_names_it():
    """lightning-hydra-template's get_metric_value: the named metric, None when none is named, and a
    clear error when the run did not log it."""
    summary = {"name": "x", "step": 3, "val/psnr": 27.5, "val/psnr_input": 20.1}
    assert SEARCHED == "val/psnr" and optimized_value(summary, SEARCHED) == 27.5
    assert optimized_value(summary, "val/psnr_input") == 20.1
    assert optimized_value(summary, None) is None
    assert optimized_value({"name": "x", "status": "ok", "step": 3, "rank": 1}, SEARCHED) is None  # DDP ranks > 0
    with pytest.raises(
        ConfigError,
        match=r"^optimized_metric=val/ssim: this run logged no such metric "
        r"\(it logged \['val/psnr', 'val/psnr_input'\]\)$",
    ):
        optimized_value(summary, "val/ssim")


def test_wandb_logger_works_offline_without_a_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = run_train(
        tmp_path, [*TINY, "logger=wandb", "trainer.max_steps=4", "trainer.val_check_interval=2", "test_after_fit=false"]
    )
    assert summary["step"] == 4
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_wandb_goes_offline_when_no_key_is_configured(monkeypatch, tmp_path):
    import os

    from conftest import compose

    from xnet.utils.build import setup_runtime

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    setup_runtime(compose("train", ["logger=wandb", "paths.output_dir=/tmp/unused"]))
    assert os.environ["WANDB_MODE"] == "offline"


def test_time_limited_chunks_save_their_progress_and_resume(tmp_path):
    """A chunk stopped by trainer.max_time (e.g. a 10-minute lease) keeps every step it made."""
    chunk = [
        *TINY,
        "trainer.max_steps=100000",
        "trainer.val_check_interval=1000",
        "test_after_fit=false",
        "data.samples_per_epoch=100000",
        "milestones_db=[1.0]",
    ]
    first = run_train(tmp_path, [*chunk, "trainer.max_time=00:00:00:03"])
    assert 0 < first["step"] < 100000
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == first["step"]
    clock = next(v for k, v in ckpt["callbacks"].items() if k.startswith("WallClock"))
    assert clock["elapsed"] > 0
    second = run_train(tmp_path, [*chunk, f"trainer.max_steps={first['step'] + 4}", "ckpt_path=last"])
    assert second["step"] == first["step"] + 4


class StopAtStep(__import__("lightning").pytorch.callbacks.Callback):
    """Stop training after ``step`` steps (as a killed chunk would), whatever max_steps says."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("restorer.")}


@pytest.mark.parametrize("loader", ["device", "workers"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, loader):
    """Weights, optimizer and where the data side is (the device generator, or the workers' next sample
    number) are all in the checkpoint: stopping at step 13 (mid-epoch: 8-batch epochs) and resuming
    gives bit-identical weights at step 30, for both loaders (the workers one with 2 worker processes)."""
    workers = ["data.num_workers=2"] if loader == "workers" else []
    common = [
        *TINY,
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "test_after_fit=false",
        f"data.loader={loader}",
        "data.samples_per_epoch=64",
        "recipe=fast",
        *workers,
    ]
    run_train(tmp_path / "whole", common)
    run_train(
        tmp_path / "split", [*common, "+callbacks.stop._target_=test_train.StopAtStep", "+callbacks.stop.step=13"]
    )
    assert (
        torch.load(tmp_path / "split/checkpoints/last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 13
    )
    resumed = run_train(tmp_path / "split", [*common, "ckpt_path=last"])
    assert resumed["step"] == 30
    whole, split = (
        _weights(tmp_path / "whole/checkpoints/last.ckpt"),
        _weights(tmp_path / "split/checkpoints/last.ckpt"),
    )
    assert all(torch.equal(whole[k], split[k]) for k in whole)


@pytest.mark.cuda
def test_gpu_trainer_trains_on_device_data_in_bf16(tmp_path):
    """trainer=gpu: bf16 autocast, channels_last, fused Adam, batches drawn on the GPU; scoring in fp32."""
    summary = run_train(
        tmp_path, [*TINY, "trainer=gpu", "trainer.max_steps=30", "trainer.val_check_interval=15", "recipe=fast"]
    )
    assert summary["step"] == 30
    assert summary["val/psnr"] - summary["val/psnr_input"] > 2.0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["RestorationDataModule"]["sampler"]["generator"].dtype == torch.uint8  # the CUDA generator's state
    assert ckpt["optimizer_states"][0]["param_groups"][0]["fused"] is True


def test_compile_option_compiles_in_place_and_keeps_the_checkpoint_layout():
    """module.compile=true compiles the restorer in place (lazily, on the first step): the state
    dict keeps the eager key names, so checkpoints load anywhere."""
    from xnet.archs.dncnn import XDnCNN
    from xnet.lit.module import RestorationModule
    from xnet.protocol.tasks import Task

    task = Task("denoise", "grey", GaussianNoise(25), residual=True)
    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    eager = RestorationModule(XDnCNN(num_blocks=1, width=16), task, **cfg.optim, **{**cfg.module, "compile": False})
    compiled = RestorationModule(XDnCNN(num_blocks=1, width=16), task, **cfg.optim, **{**cfg.module, "compile": True})
    compiled.configure_model()
    assert compiled.restorer._compiled_call_impl is not None and eager.restorer._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_the_train_entry_point_imports_no_torch_so_help_and_completion_are_quick():
    """`--help`, tab completion and config errors never need torch or Lightning (≈0.7 s, not ≈6 s)."""
    import subprocess
    import sys

    code = "import sys, xnet.train; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr[-2000:]


def test_a_checkpoint_is_never_written_after_an_unchecked_non_finite_loss(tmp_path):
    """Between two checks (every 50 steps) a NaN loss skips its update on the device; a save in that
    window (here every 3 steps, the periodic last.ckpt) raises instead of writing NaN BN statistics."""
    overrides = [
        *TINY,
        "trainer.val_check_interval=1000",
        "test_after_fit=false",
        "callbacks.periodic_last.every_n_train_steps=3",
        "task.degradation._target_=test_train.NaNAfterTwoDraws",
    ]
    NaNAfterTwoDraws.draws = 0
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        run_train(tmp_path, overrides)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # nothing good had been saved yet, nothing bad was


def test_debug_tiny_scores_four_test_images_and_a_full_run_the_whole_set(tmp_path):
    """debug=tiny: 40 steps then 4 test images (not all 68 of BSD68); without it every test image counts."""
    tiny = compose("train", ["debug=tiny", "paths.output_dir=/tmp/unused"])
    assert tiny.test_limit == 4 and compose("train", ["paths.output_dir=/tmp/unused"]).test_limit is None
    summary = run_train(
        tmp_path,
        [
            "experiment=demo",
            "debug=tiny",
            "trainer.enable_progress_bar=false",
            "data/test=bsd68",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
        ],
    )
    assert summary["test/images"] == 4 and summary["test/dataset"] == "BSD68"


def test_a_finished_run_of_another_model_in_the_run_dir_is_refused_not_skipped(tmp_path):
    from xnet.train import RunDirTaken, finished_run

    cfg = OmegaConf.create({"ckpt_path": "last_if_any", "model": {"name": "xnet"}, "trainer": {"max_steps": 6}})
    (tmp_path / "metrics.json").write_text(json.dumps({"model": "convnet", "status": "ok", "step": 6}))
    with pytest.raises(RunDirTaken, match=r"holds a run of model=convnet, not model=xnet"):
        finished_run(cfg, tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"model": "xnet", "status": "ok", "step": 6}))
    assert finished_run(cfg, tmp_path)["model"] == "xnet"
