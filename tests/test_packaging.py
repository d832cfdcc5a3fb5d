"""xnet as an installed package: a wheel carries its configs and zoo and trains from anywhere; the
console scripts exist and complete on the shell; `make install` keeps the user's torch; the declared
lower bounds are versions that were tested."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: versions the suite has passed on: torch 2.13.0 here (CPU); torch 2.11.0 + lightning 2.6.6 +
#: torchmetrics 1.9.0 on the GPU machine. The declared lower bounds must be the oldest of these.
TESTED = {"torch": ["2.11.0", "2.13.0"], "lightning": ["2.6.6"], "torchmetrics": ["1.9.0"]}


def declared() -> dict[str, Requirement]:
    return {r.name: r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}


@pytest.mark.parametrize("name", sorted(TESTED))
def test_lower_bounds_are_tested_versions(name):
    from importlib.metadata import version

    spec = declared()[name].specifier
    lower = [Version(s.version) for s in spec if s.operator == ">="]
    assert lower == [min(map(Version, TESTED[name]))], (
        f"{name}{spec}: raise the bound to a tested version or test the bound"
    )
    assert all(spec.contains(v) for v in TESTED[name]) and spec.contains(version(name).split("+")[0])


def test_console_scripts_point_at_entry_points():
    import importlib

    scripts = PYPROJECT["project"]["scripts"]
    assert {"xnet-train", "xnet-eval", "xnet-restore", "xnet-export", "xnet-zoo"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_tab_completion_lists_config_options():
    env = {**os.environ, "COMP_LINE": "xnet-train model=xd", "COMP_POINT": "19"}
    res = subprocess.run(
        [sys.executable, "-m", "xnet.train", "-sc", "query=bash"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert set(res.stdout.split()) == {"model=xdncnn", "model=xdncnn_rgb"}


def fake_python(tmp_path: Path, has_torch: bool) -> tuple[Path, Path]:
    """A `python` for make that logs its arguments; `-c "import torch..."` succeeds iff ``has_torch``."""
    log = tmp_path / "calls.log"
    py = tmp_path / "python"
    py.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in "-c import torch"*) exit {0 if has_torch else 1};; esac
exit 0
""")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return py, log


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("has_torch", [True, False])
def test_make_install_keeps_an_installed_torch(tmp_path, has_torch):
    py, log = fake_python(tmp_path, has_torch)
    res = subprocess.run(["make", "-s", "install", f"PY={py}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    installs = [line for line in log.read_text().splitlines() if line.startswith("-m pip install")]
    torch_installs = [line for line in installs if "torch==" in line]
    if has_torch:
        assert not torch_installs and "is installed: kept" in res.stdout
    else:
        assert torch_installs == ["-m pip install -q torch==2.13.0"]  # pip's configured index: none forced
    assert installs[-1] == "-m pip install -q -e .[dev]"
    if not has_torch:  # an index only when asked for
        res = subprocess.run(
            ["make", "-s", "install", f"PY={py}", "TORCH_INDEX=https://download.pytorch.org/whl/cu126"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (
            "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
            in log.read_text().splitlines()
        )


def source_copy(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored): a build from it has no stale build/."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """xnet built as a wheel and installed (no deps: they are this venv's) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = source_copy(tmp / "src")
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # noqa: E731
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(src),
        "-w",
        str(tmp / "dist"),
        "--no-deps",
        "--no-build-isolation",
        "-q",
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("xnet-*.whl")
    site = tmp / "site"
    done = run(sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    return site


def run_installed(site: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``args`` with only the installed copy importable: the repo is neither the cwd nor on the path."""
    environ = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", **env}
    return subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_a_wheel_install_trains_lists_the_zoo_and_completes(installed, tmp_path):
    py = sys.executable
    where = run_installed(installed, [py, "-c", "import xnet; print(xnet.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout  # the installed copy, not /work/main/xnet
    assert (installed / "xnet" / "conf" / "train.yaml").is_file() and (
        installed / "xnet" / "_zoo" / "zoo.json"
    ).is_file()

    trained = run_installed(
        installed,
        [
            py,
            "-m",
            "xnet.train",
            "experiment=demo",
            "debug=fast",
            f"hydra.run.dir={tmp_path / 'run'}",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Primary config directory not found" not in trained.stderr and (tmp_path / "run" / "metrics.json").is_file()

    zoo = run_installed(installed, [str(installed / "bin" / "xnet-zoo"), "list"], tmp_path)
    assert zoo.returncode == 0 and "xdncnn_s25_cpu" in zoo.stdout, zoo.stderr[-2000:]

    completion = run_installed(
        installed,
        [str(installed / "bin" / "xnet-train"), "-sc", "query=bash"],
        tmp_path,
        COMP_LINE="xnet-train xunit=si",
        COMP_POINT="19",
    )
    assert completion.stdout.split() == ["xunit=sigmoid", "xunit=silu"], completion.stderr[-2000:]
    install = run_installed(installed, [str(installed / "bin" / "xnet-train"), "-sc", "install=bash"], tmp_path)
    assert "complete -o nospace -o default -F hydra_bash_completion xnet-train" in install.stdout


def test_a_users_config_dir_adds_options_to_the_installed_configs(installed, tmp_path):
    mine = tmp_path / "my_conf" / "model"
    mine.mkdir(parents=True)
    (mine / "tiny_xnet.yaml").write_text(
        "defaults:\n  - xnet\n  - _self_\nname: tiny_xnet\nnet:\n  depth: 2\n  width: 8\n"
    )
    res = run_installed(
        installed,
        [
            str(installed / "bin" / "xnet-train"),
            "--config-dir",
            str(tmp_path / "my_conf"),
            "model=tiny_xnet",
            "--cfg",
            "job",
            "--package",
            "model",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        "name: tiny_xnet" in res.stdout and "depth: 2" in res.stdout and "kernel_size: 9" in res.stdout
    )  # merged over conf's xnet
