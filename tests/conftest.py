"""Test settings: one CPU thread, W&B disabled, freed CPU memory kept for reuse (as the entry
points do), the data root at ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"  # the Hydra configs (installed as the package data xnet.conf)
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# the sha256 cache of benchmark files (xnet.data.catalog.HashCache): one of the session's own
os.environ.setdefault(
    "XNET_HASH_CACHE", os.path.join(__import__("tempfile").mkdtemp(prefix="xnet-test-cache-"), "sha256.json")
)
if "XNET_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["XNET_DATA"] = str(SHARED_DATA)
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    from xnet.utils.memory import retain_freed_memory

    retain_freed_memory()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.cuda`` tests skip cleanly where no CUDA device is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _release_memory_between_modules():
    """Kept memory suits one repeating workload; between test modules, give it back."""
    yield
    from xnet.utils.memory import release_freed_memory

    release_freed_memory()


def data_root() -> Path | None:
    root = Path(os.environ.get("XNET_DATA", "")) if os.environ.get("XNET_DATA") else None
    return root if root is not None and root.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("benchmark data not found (set XNET_DATA or place ../shared/data beside the repo)")
    return root


def compose(config_name: str = "train", overrides: list[str] | None = None):
    """Compose a config from ``conf/`` as the entry points do (no run dir, no logging set-up)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)


def run_train(tmp_path: Path, overrides: list[str]) -> dict:
    """``xnet.train`` in-process with output in ``tmp_path``; returns its metrics summary."""
    from xnet.train import train

    cfg = compose("train", [f"paths.output_dir={tmp_path}", "logger=csv", *overrides])
    return train(cfg)


TINY = ["experiment=demo", "debug=tiny", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny real training run (embedded sample data), shared by the tests that need weights."""
    out = tmp_path_factory.mktemp("tiny_run")
    return out, run_train(out, TINY)


# --- crafted checkpoints and hostile filesystems (tests of xnet's reliability promises) -----------
def make_checkpoint(path: Path, config: dict | None = None, **extra) -> Path:
    """A checkpoint of the TINY run's (untrained) net, storing ``config`` (default: that run's
    resolved config) as xnet.train stores it — no training needed."""
    from omegaconf import OmegaConf

    from xnet.utils.build import build_net, to_container

    tiny = to_container(compose("train", [*TINY, "paths.output_dir=/tmp/unused"]))
    net = build_net(OmegaConf.create(tiny))
    state = {f"restorer.net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "xnet": {"config": tiny if config is None else config}, **extra}, path)
    return path


def tiny_config() -> dict:
    from xnet.utils.build import to_container

    return to_container(compose("train", [*TINY, "paths.output_dir=/tmp/unused"]))


def _mount(*args: str) -> bool:
    import subprocess

    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@pytest.fixture
def full_disk(tmp_path) -> Path:
    """A folder on a real filesystem with no space left (a small tmpfs filled up: write(2) says
    ENOSPC); skipped where tmpfs cannot be mounted (not root)."""
    import errno
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)):
        pytest.skip("needs root to mount a tmpfs")
    try:
        (mnt / "zoo").mkdir()
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder nothing can be written into: a read-only tmpfs for root (who ignores modes), else a
    folder with mode 0555."""
    import subprocess

    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not _mount("-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)):
        pytest.skip("cannot mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def dev_full(monkeypatch):
    """Every file xnet writes through :mod:`xnet.protocol.atomic` goes to ``/dev/full``, whose write(2)
    fails with ENOSPC: a full disk at the syscall, on any machine."""
    import builtins

    from xnet.protocol import atomic

    def to_dev_full(file, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if str(file).endswith(".tmp") and "w" in mode else file, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", to_dev_full, raising=False)
