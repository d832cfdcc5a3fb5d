"""The DataLoader path under DDP: each rank draws its own crops (all ranks start from one seed)."""
from types import SimpleNamespace

import numpy as np
import torch

from xnet.data.datamodule import RestorationDataModule
from xnet.protocol.degradations import GaussianNoise
from xnet.protocol.tasks import Task


def first_crop(rank: int, world_size: int) -> torch.Tensor:
    torch.manual_seed(0)  # seed_everything gives every rank the same global seed
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 1), dtype=np.uint8)
    source = [("a", image)]
    dm = RestorationDataModule(Task("denoise", "grey", GaussianNoise(25), residual=True), train={"a": source}, val=source,
                               loader="workers", patch_size=16, batch_size=2)
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    dm.setup("fit")
    return dm.train_set[0]["target"]


def test_ddp_ranks_draw_different_crops():
    assert not torch.equal(first_crop(0, 2), first_crop(1, 2))


def test_one_process_draws_as_seeded():
    assert torch.equal(first_crop(0, 1), first_crop(0, 1))
