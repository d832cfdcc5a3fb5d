"""Resuming: ``ckpt_path=last`` says where it looked when there is nothing (``last_if_any`` starts
fresh for chunked runs), one last.ckpt holds the newest state, and SIGTERM/SIGINT stop cleanly
with a last.ckpt that resumes exactly."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, run_train

from xnet.protocol.errors import ConfigError, OutputError, WeightsError
from xnet.train import RunDirTaken, resolve_ckpt_path
from xnet.utils.rundir import held_run


def test_resume_with_nothing_to_resume_names_the_folder(tmp_path):
    with pytest.raises(
        ConfigError, match=f"ckpt_path=last: nothing to resume, no checkpoints/last.ckpt in the run dir {tmp_path}"
    ):
        resolve_ckpt_path("last", tmp_path)


def test_last_if_any_starts_fresh_or_resumes(tmp_path):
    assert resolve_ckpt_path("last_if_any", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert (
        resolve_ckpt_path("last_if_any", tmp_path)
        == resolve_ckpt_path("last", tmp_path)
        == str(tmp_path / "checkpoints" / "last.ckpt")
    )


def test_a_run_keeps_one_last_checkpoint_with_the_newest_state(tmp_path):
    """The periodic save and the validation-time save share last.ckpt (no stale last-v1.ckpt beside it)."""
    run_train(
        tmp_path,
        [
            *TINY,
            "trainer.max_steps=8",
            "trainer.val_check_interval=4",
            "callbacks.periodic_last.every_n_train_steps=3",
            "test_after_fit=false",
        ],
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("last*.ckpt"))
    assert names == ["last.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


COMMON = [*TINY, "trainer.val_check_interval=1000", "data.samples_per_epoch=100000", "test_after_fit=false"]


def train_until_signal(run_dir, signum, after_step=3):
    """``python -m xnet.train`` with no end in sight, sent ``signum`` once it logs step ``after_step``."""
    cmd = [
        sys.executable,
        "-m",
        "xnet.train",
        *COMMON,
        "trainer.max_steps=100000",
        "callbacks.progress_log.every=1",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    ]
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


# --- no run overwrites another --------------------------------------------------------------------
SHORT = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "data.val_limit=1", "test_after_fit=false"]


def cli_train(run_dir, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "xnet.train", *SHORT, "threads=1", *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_fresh_start_into_a_run_dir_that_holds_a_run_is_refused(tmp_path):
    run_train(tmp_path, SHORT)
    before = {
        p: p.read_bytes()
        for p in [tmp_path / "checkpoints" / "last.ckpt", tmp_path / "csv" / "metrics.csv", tmp_path / "metrics.json"]
    }
    with pytest.raises(
        RunDirTaken,
        match=rf"hydra.run.dir={tmp_path} already holds a run \(checkpoints/.*resume it with ckpt_path=last",
    ):
        run_train(tmp_path, [*SHORT, "trainer.max_steps=2"])
    assert all(p.read_bytes() == data for p, data in before.items())  # step 4 stays step 4, its log stays


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
    run_train(tmp_path, SHORT)
    assert run_train(tmp_path, [*SHORT, "trainer.max_steps=2", "overwrite=true"])["step"] == 2
    (old,) = tmp_path.glob("replaced-*")
    assert last_step(old) == 4 and last_step(tmp_path) == 2
    assert (old / "metrics.json").is_file() and (old / "csv" / "metrics.csv").is_file()


def test_the_command_line_refuses_in_one_line_with_status_2(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's")
    res = cli_train(tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: hydra.run.dir={tmp_path} already holds a run (checkpoints/last.ckpt)")
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run's"


def test_a_second_live_writer_fails_at_once_with_the_holder_s_pid(tmp_path):
    from xnet.utils.rundir import run_dir_lock

    with run_dir_lock(tmp_path):  # this process stands for a training that is running there
        res = cli_train(tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"another xnet run is writing into it (pid {os.getpid()} on" in res.stderr.strip().splitlines()[-1]
    assert held_run(tmp_path) == []  # it wrote nothing


def test_leftovers_of_killed_saves_go_and_save_top_k_holds_after_a_resume(tmp_path):
    run_train(tmp_path, SHORT)
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".last.ckpt.4242-0badf00d.tmp").write_bytes(b"a save cut by kill -9")
    (ckpts / ".metrics.json.4242-0badf00d.tmp").write_bytes(b"")
    orphan = ckpts / "best-step0000003-psnr99.000.ckpt"  # a best save whose older twin's removal was killed
    orphan.write_bytes((ckpts / "last.ckpt").read_bytes())
    run_train(tmp_path, [*SHORT, "trainer.max_steps=6", "ckpt_path=last"])
    assert not list(ckpts.glob("*.tmp")) and not orphan.exists()
    assert len(list(ckpts.glob("best-*.ckpt"))) == 1  # save_top_k: 1


# --- resuming from a bad checkpoint is one error naming it ------------------------------------------
def test_a_truncated_last_checkpoint_is_named(tmp_path):
    run_train(tmp_path, SHORT)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=rf"{last}: cannot read the weights file, truncated"):
        run_train(tmp_path, [*SHORT, "trainer.max_steps=6", "ckpt_path=last"])


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    run_train(tmp_path, SHORT)
    with pytest.raises(WeightsError, match=r"last.ckpt: saved by another model \(model=xdncnn; "):
        run_train(tmp_path, [*SHORT, "trainer.max_steps=6", "ckpt_path=last", "model.net.width=16"])


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_malicious_resume_checkpoint_is_refused_in_one_line(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "optimizer_states": [], "x": Payload()}, evil)
    res = cli_train(tmp_path / "run", f"ckpt_path={evil}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {evil}: not a loadable state dict with weights_only=True")
    )
    assert "pwned" not in res.stdout


def test_a_full_disk_at_a_checkpoint_save_is_named(tmp_path, monkeypatch):
    """The disk fills during training (checkpoints go to ``/dev/full``; the run's config.yaml was written)."""
    import builtins

    from xnet.protocol import atomic

    def full_for_checkpoints(file, mode="r", *args, **kwargs):
        to_full = str(file).endswith(".tmp") and ".ckpt." in os.path.basename(file) and "w" in mode
        return builtins.open("/dev/full" if to_full else file, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_for_checkpoints, raising=False)
    with pytest.raises(OutputError, match=r"\.ckpt: cannot write \(No space left on device\)"):
        run_train(tmp_path, SHORT)
    assert not list((tmp_path / "checkpoints").glob("*")) if (tmp_path / "checkpoints").exists() else True


def test_a_full_disk_at_the_start_names_the_run_s_config_file(tmp_path, dev_full):
    with pytest.raises(OutputError, match=rf"^{tmp_path / 'config.yaml'}: cannot write \(No space left on device\)"):
        run_train(tmp_path, SHORT)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".xnet.lock"] == []  # nothing half-written


# --- chunks that train ------------------------------------------------------------------------------
def test_the_same_chunk_command_trains_on_every_time(tmp_path):
    """``trainer.max_time`` per chunk: the Timer's time from earlier chunks is not carried over
    (it was, and every chunk after the first stopped at once, exit 0, the step count frozen)."""
    chunk = [
        *TINY,
        "trainer.max_steps=100000",
        "trainer.val_check_interval=1000",
        "data.samples_per_epoch=100000",
        "test_after_fit=false",
        "trainer.max_time=00:00:00:02",
        "ckpt_path=last_if_any",
    ]
    steps = [run_train(tmp_path, chunk)["step"] for _ in range(3)]
    assert 0 < steps[0] < steps[1] < steps[2], steps
    clock = next(
        v
        for k, v in torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"].items()
        if k.startswith("WallClock")
    )
    assert clock["elapsed"] >= 3 * 2 * 0.9  # the summed training time keeps counting across chunks
