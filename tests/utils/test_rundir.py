"""One writer per run dir: a second one fails at once naming the holder, a killed holder leaves no
stale lock, and an earlier run moves aside whole instead of being written over."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from xnet.utils.rundir import LOCK_NAME, RunDirBusy, held_run, move_aside, run_dir_lock


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    with run_dir_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).read_text().startswith(f"{os.getpid()} on ")
        busy = rf"hydra.run.dir={tmp_path / 'run'}: another xnet run is writing into it \(pid {os.getpid()} on"
        with pytest.raises(RunDirBusy, match=busy), run_dir_lock(tmp_path / "run"):
            pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released and removed
    with run_dir_lock(tmp_path / "run"):  # free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        "from xnet.utils.rundir import run_dir_lock\n"
        f"with run_dir_lock({str(tmp_path)!r}):\n"
        "    print('locked', flush=True)\n    input()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid} on"), run_dir_lock(tmp_path):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays, its lock went with the process
    with run_dir_lock(tmp_path):
        pass


def test_what_an_earlier_run_left_is_found_and_moved_aside_whole(tmp_path):
    assert held_run(tmp_path) == []
    for name in (
        "checkpoints/last.ckpt",
        "checkpoints/best-step0000200-psnr29.000.ckpt",
        "csv/metrics.csv",
        "metrics.json",
        ".hydra/config.yaml",
        "train.log",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert held_run(tmp_path) == [
        "checkpoints/best-step0000200-psnr29.000.ckpt",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
        "metrics.json",
    ]
    dest = move_aside(tmp_path)
    assert dest.parent == tmp_path and dest.name.startswith("replaced-")
    assert (dest / "checkpoints" / "last.ckpt").read_text() == "checkpoints/last.ckpt"
    assert (dest / "metrics.json").is_file() and held_run(tmp_path) == []
    assert (tmp_path / ".hydra" / "config.yaml").is_file() and (tmp_path / "train.log").is_file()  # the starting run's
    (tmp_path / "metrics.json").write_text("second")
    time.sleep(0.01)
    second = move_aside(tmp_path)
    assert second != dest and (second / "metrics.json").read_text() == "second" and dest.is_dir()
