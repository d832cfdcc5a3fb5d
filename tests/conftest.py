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
