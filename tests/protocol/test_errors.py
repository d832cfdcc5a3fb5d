"""User errors print one line and exit 2; bugs keep their traceback; a sweep still records a failed
job and goes on."""

import json
import subprocess
import sys

import pytest
from conftest import REPO
from hydra.errors import InstantiationException

from xnet.protocol.errors import USER_ERROR_EXIT, ConfigError, exit_on_user_error, find_user_error


def cli(module, *args, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", module, *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_user_error_is_one_line_on_stderr_and_status_2(capsys):
    @exit_on_user_error
    def main():
        raise ConfigError("data.patch_size=0: must be >= 1")

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == USER_ERROR_EXIT == 2
    assert capsys.readouterr().err == "error: data.patch_size=0: must be >= 1\n"


def test_a_bug_keeps_its_traceback():
    @exit_on_user_error
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main()


def test_hydra_s_wrapper_is_looked_through():
    cause = FileNotFoundError("image folder not found: /nope")
    wrapped = InstantiationException("Error in call to target 'xnet.data.sources.ImageFolder'")
    wrapped.__cause__ = cause
    assert find_user_error(wrapped) is cause
    assert find_user_error(RuntimeError("x")) is None


@pytest.mark.parametrize(
    "module, args, message",
    [
        (
            "xnet.evaluate",
            ["weights=no_such_model", "data/test=sample"],
            "error: weights=no_such_model: no such file, and not a zoo name",
        ),
        ("xnet.evaluate", ["data/test=sample"], "error: weights: no value given (add weights=... to the command)"),
        ("xnet.train", ["experiment=demo", "data.patch_size=0"], "error: data.patch_size=0: must be >= 1"),
        (
            "xnet.export",
            ["weights=x.pth", "format=tflite"],
            "error: format=tflite: choose one of ('onnx', 'safetensors', 'pth')",
        ),
    ],
)
def test_the_entry_points_print_one_line_and_exit_2(tmp_path, module, args, message):
    res = cli(module, *args, tmp_path=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(message), res.stderr[-1000:]


def test_a_sweep_records_a_bad_job_and_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.train",
            "-m",
            "experiment=demo",
            "debug=tiny",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            "test_after_fit=false",
            "threads=1",
            "sweep_continue_on_error=true",
            "data.val_limit=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = {p.parent.name.split("_")[0]: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert jobs["0"]["status"] == "failed" and jobs["0"]["error"] == "ConfigError: data.val_limit=0: must be >= 1"
    assert jobs["1"]["status"] == "ok" and jobs["1"]["step"] == 2


# --- Hydra's own errors, before the task function runs ------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["no_such_key=1"],
            "error: Could not override 'no_such_key'. To append to your config use +no_such_key=1 "
            "(Key 'no_such_key' is not in struct)",
        ),
        (["model.net.nope=3"], "error: Could not override 'model.net.nope'."),
        (
            ["trainer=gpux"],
            "error: In 'train': Could not find 'trainer/gpux' Available options in 'trainer': cpu, ddp, ddp_cpu, gpu",
        ),
        (["optim.lr=[1"], "error: no viable alternative at input '[1'"),
    ],
)
def test_hydra_s_config_errors_are_one_line_and_status_2(tmp_path, args, message):
    res = cli("xnet.train", "experiment=demo", *args, tmp_path=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [res.stderr.strip().splitlines()[0]]  # one line
    assert res.stderr.startswith(message), res.stderr
    assert not (tmp_path / "run").exists()


def test_help_still_answers_with_status_0(tmp_path):
    res = cli("xnet.train", "--help", tmp_path=tmp_path)
    assert res.returncode == 0 and "Config groups (group=option):" in res.stdout


def test_a_run_dir_that_cannot_be_written_is_one_line(readonly_dir, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "xnet.train", "experiment=demo", f"hydra.run.dir={readonly_dir / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {readonly_dir / 'run'}") and (
        "Read-only file system" in line or "Permission denied" in line
    ), line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_trainer_without_a_gpu_is_one_line(tmp_path):
    res = cli("xnet.train", "experiment=demo", "trainer=gpu", tmp_path=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: trainer: ")


def test_long_messages_become_one_line():
    from xnet.protocol.errors import one_line

    hydra_text = (
        "In 'train': Could not find 'trainer/x'\n\n"
        "Available options in 'trainer':\n\tcpu\n\tgpu\n"
        "Config search path:\n\tprovider=main"
    )
    assert one_line(hydra_text) == "In 'train': Could not find 'trainer/x' Available options in 'trainer': cpu, gpu"


def test_a_full_disk_or_a_read_only_filesystem_is_the_user_s_to_fix():
    import errno

    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES):
        assert find_user_error(OSError(code, "x")) is not None
    assert find_user_error(OSError(errno.EBADF, "a bug")) is None


def test_a_library_s_lines_inside_a_user_error_are_joined(capsys):
    from xnet.protocol.errors import WeightsError

    @exit_on_user_error
    def main():
        raise WeightsError("evil.ckpt: not loadable (Weights only load failed.\nCheck the documentation of torch.load)")

    with pytest.raises(SystemExit):
        main()
    assert (
        capsys.readouterr().err
        == "error: evil.ckpt: not loadable (Weights only load failed. Check the documentation of torch.load)\n"
    )


# --- optional features without their packages: one line naming the extra ----------------------------------------
def test_a_missing_extra_names_the_feature_the_packages_and_the_install_command(monkeypatch):
    from xnet.protocol.errors import MissingExtra, require_extra

    require_extra("format=onnx", "export", "json", "subprocess")  # installed: nothing to say
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(MissingExtra) as info:
        require_extra("format=onnx", "export", "json", "onnxscript", "no_such_module_xyz")
    assert str(info.value) == (
        "format=onnx needs the export extra (onnxscript, no_such_module_xyz): pip install 'xnet[export]'"
    )
    assert isinstance(info.value, ConfigError)  # a user error: one line, exit 2


def test_hydra_s_missing_launcher_or_sweeper_names_the_sweep_extra():
    from xnet.protocol.errors import missing_plugin

    said = "In 'hydra/config': Could not find 'hydra/launcher/joblib' Available options in 'hydra/launcher': basic"
    assert missing_plugin(said) == (
        "hydra/launcher=joblib needs the sweep extra (hydra-joblib-launcher): pip install 'xnet[sweep]'"
    )
    optuna = "In 'hparams_search/optuna': Could not find 'hydra/sweeper/sampler/tpe'"
    assert missing_plugin(optuna).startswith("hydra/sweeper/sampler=tpe needs the sweep extra (hydra-optuna-sweeper)")
    assert missing_plugin("Could not find 'hydra/launcher/jobli'") is None  # a typo: Hydra's own message
    assert missing_plugin("Could not find 'model/xdncn'") is None
