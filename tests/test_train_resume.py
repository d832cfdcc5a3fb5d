"""Resuming: ``ckpt_path=last`` says where it looked when there is nothing (``last_if_any`` starts
fresh for chunked runs), one last.ckpt holds the newest state, and SIGTERM/SIGINT stop cleanly
with a last.ckpt that resumes exactly."""
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY, run_train
from xnet.train import resolve_ckpt_path
from xnet.protocol.errors import ConfigError


def test_resume_with_nothing_to_resume_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=f"ckpt_path=last: nothing to resume, no checkpoints/last.ckpt in the run dir {tmp_path}"):
        resolve_ckpt_path("last", tmp_path)


def test_last_if_any_starts_fresh_or_resumes(tmp_path):
    assert resolve_ckpt_path("last_if_any", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("last_if_any", tmp_path) == resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_a_run_keeps_one_last_checkpoint_with_the_newest_state(tmp_path):
    """The periodic save and the validation-time save share last.ckpt (no stale last-v1.ckpt beside it)."""
    run_train(tmp_path, [*TINY, "trainer.max_steps=8", "trainer.val_check_interval=4", "callbacks.periodic_last.every_n_train_steps=3",
                         "test_after_fit=false"])
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("last*.ckpt"))
    assert names == ["last.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


COMMON = [*TINY, "trainer.val_check_interval=1000", "data.samples_per_epoch=100000", "test_after_fit=false"]


def train_until_signal(run_dir, signum, after_step=3):
    """``python -m xnet.train`` with no end in sight, sent ``signum`` once it logs step ``after_step``."""
    cmd = [sys.executable, "-m", "xnet.train", *COMMON, "trainer.max_steps=100000", "callbacks.progress_log.every=1", "threads=1",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if f"step {after_step}/" in line:
                proc.send_signal(signum)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(output) + (rest or "")


def last_step(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


def weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("restorer.")}


def test_sigterm_saves_last_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path):
    code, output = train_until_signal(tmp_path / "split", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM" in output
    stopped = last_step(tmp_path / "split")
    assert stopped >= 3
    resumed = run_train(tmp_path / "split", [*COMMON, f"trainer.max_steps={stopped + 4}", "ckpt_path=last"])
    assert resumed["step"] == stopped + 4
    run_train(tmp_path / "whole", [*COMMON, f"trainer.max_steps={stopped + 4}"])
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_sigint_is_a_clean_stop_too(tmp_path):
    code, output = train_until_signal(tmp_path, signal.SIGINT)
    assert code == 128 + signal.SIGINT, output[-3000:]
    stopped = last_step(tmp_path)
    assert run_train(tmp_path, [*COMMON, f"trainer.max_steps={stopped + 2}", "ckpt_path=last"])["step"] == stopped + 2


def test_a_gpu_checkpoint_resumes_on_cpu(tmp_path, caplog):
    """A GPU slot's state resumed on CPU (the queue's dry run, or a slot lost): CUDA's generator state and
    fused Adam come with it; the run goes on, and says once that its batches now differ."""
    run_train(tmp_path, [*COMMON, "trainer.max_steps=3"])
    ckpt_file = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    ckpt["RestorationDataModule"]["sampler"]["generator"] = torch.arange(16, dtype=torch.uint8)  # Philox seed + offset
    for group in ckpt["optimizer_states"][0]["param_groups"]:
        group["fused"] = True  # trainer=gpu's Adam
    torch.save(ckpt, ckpt_file)
    with caplog.at_level("WARNING", logger="xnet.data.device"):
        summary = run_train(tmp_path, [*COMMON, "trainer.max_steps=5", "ckpt_path=last"])
    assert summary["step"] == 5 and last_step(tmp_path) == 5
    assert "generator state (16 bytes) is another device's" in caplog.text
