"""The datamodule owns the training pairs: both loaders seed per DDP rank and checkpoint where they
are, so the next batch after a restore is the one the uninterrupted run would have drawn."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xnet.data.datamodule import RestorationDataModule
from xnet.protocol.degradations import GaussianNoise
from xnet.protocol.tasks import Task

IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 1), dtype=np.uint8)


def datamodule(loader: str, rank: int = 0, world_size: int = 1) -> RestorationDataModule:
    source = [("a", IMAGE)]
    task = Task("denoise", "grey", GaussianNoise(25), residual=True)
    dm = RestorationDataModule(
        task,
        train={"a": source},
        val=source,
        patch_size=16,
        batch_size=2,
        samples_per_epoch=6,
        num_workers=0,
        loader=loader,
        augment="flips",
        val_limit=None,
        seed=0,
    )
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank, strategy=cpu)
    dm.setup("fit")
    return dm


def steps(dm: RestorationDataModule, n: int) -> list[dict]:
    """The batches of ``n`` steps, through the hooks the trainer calls (one loader, iterated per epoch)."""
    out, loader = [], dm.train_dataloader()
    while len(out) < n:
        for batch in loader:
            out.append(dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0))
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("loader", ["device", "workers"])
def test_ddp_ranks_draw_different_pairs(loader):
    def first(rank: int, world_size: int) -> torch.Tensor:
        return steps(datamodule(loader, rank, world_size), 1)[0]["target"]

    assert not torch.equal(first(0, 2), first(1, 2))
    assert torch.equal(first(0, 1), first(0, 2))


@pytest.mark.parametrize("loader", ["device", "workers"])
def test_a_restored_datamodule_draws_what_the_uninterrupted_one_draws(loader):
    """Stopped after 4 steps (mid-epoch 2 of 3-batch epochs) and restored into a new datamodule,
    the next 4 batches are the uninterrupted run's batches 5-8; only input and target reach a step."""
    whole = steps(datamodule(loader), 8)
    first = datamodule(loader)
    steps(first, 4)
    resumed = datamodule(loader)
    resumed.load_state_dict(first.state_dict())
    rest = steps(resumed, 4)
    assert all(set(b) == {"input", "target"} for b in rest)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(whole[4:], rest) for k in ("input", "target"))
    assert not torch.equal(whole[0]["input"], rest[0]["input"])
