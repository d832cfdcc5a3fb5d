"""The training pairs (both loaders): crops are real crops of the sources (under the drawn flips or
rotations), pairs stay aligned, sources are mixed, the generator state makes draws repeatable, a
workers' batch is a pure function of its number, and pairs are float32 under bf16 autocast."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from xnet.data.datasets import ItemNumbers, PatchDataset, item_generator
from xnet.data.device import (
    DevicePatchSampler,
    DrawTokens,
    PackedImages,
    PatchSampler,
    is_draw_token,
)
from xnet.protocol.degradations import Bicubic, GaussianNoise, Identity
from xnet.protocol.tasks import Task


def grey_task(degradation=None, color="grey") -> Task:
    return Task("denoise", color, degradation or Identity(), residual=True)


def ramp(h: int, w: int, c: int = 1, salt: int = 0) -> np.ndarray:
    """An image whose every pixel value pattern is unique enough to locate a crop in it."""
    rng = np.random.default_rng(salt)
    return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)


def transforms(img: torch.Tensor) -> list[torch.Tensor]:
    """The 8 dihedral versions of a ``C×H×W`` image."""
    out = []
    for t in (img, img.transpose(-1, -2)):
        out += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
    return out


def found_in(crop: torch.Tensor, image: torch.Tensor, allowed: list[int]) -> bool:
    p = crop.shape[-1]
    for k in allowed:
        t = transforms(image)[k]
        windows = t.unfold(-2, p, 1).unfold(-2, p, 1)  # C × nh × nw × p × p
        if (windows == crop[:, None, None]).flatten(-2).all(-1).all(0).any():
            return True
    return False


@pytest.mark.parametrize("augment,allowed", [("none", [0]), ("flips", [0, 1, 2, 3]), ("dihedral", list(range(8)))])
def test_every_crop_is_a_crop_of_a_source_image_under_the_allowed_transforms(augment, allowed):
    images = [("a", ramp(20, 27, salt=1)), ("b", ramp(31, 18, salt=2))]
    packed = PackedImages([images], grey_task(), patch_size=8)
    sampler = DevicePatchSampler(packed, grey_task(), patch_size=8, batch_size=24, augment=augment, seed=3)
    srcs = [torch.from_numpy(img.transpose(2, 0, 1).copy()) for _, img in images]
    seen_transforms = set()
    for _ in range(3):
        idx, rows, cols = sampler.positions(24, sampler.generator)
        crops = sampler.crops(idx, rows, cols)
        assert crops.dtype == torch.uint8 and crops.shape == (24, 1, 8, 8)
        for i, crop in zip(idx.tolist(), crops):
            assert found_in(crop, srcs[i], allowed), (augment, i)
            seen_transforms.add(next(k for k in range(8) if found_in(crop, srcs[i], [k])))
    assert len(seen_transforms) == len(allowed)  # every allowed transform is drawn


def test_batch_is_float_and_degraded_on_the_fly():
    images = [("a", ramp(40, 40, salt=4))]
    task = grey_task(GaussianNoise(25))
    sampler = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 32, "flips", seed=0)
    batch = sampler.draw()
    assert batch["target"].dtype == torch.float32 and batch["target"].min() >= 0 and batch["target"].max() <= 1
    noise = batch["input"] - batch["target"]
    assert abs(noise.std().item() * 255 - 25) < 1.0
    assert not torch.equal(sampler.draw()["input"], batch["input"])  # redrawn every batch


def test_pairs_stay_aligned_and_mix_with_synthetic_sources():
    """A paired source keeps its real input (here 255 − target, cropped alongside); the other
    source's samples are degraded by the task."""
    clean = ramp(30, 30, 3, salt=5)
    paired = [("p", 255 - clean, clean)]
    synthetic = [("s", ramp(30, 30, 3, salt=6))]
    task = Task("derain", "rgb", GaussianNoise(0.0), residual=True)
    packed = PackedImages([paired, synthetic], task, 10)
    sampler = DevicePatchSampler(packed, task, 10, 64, augment="dihedral", seed=1)
    batch = sampler.draw()
    real = torch.isclose(batch["input"] + batch["target"], torch.ones(()), atol=1e-6).flatten(1).all(1)
    same = torch.equal  # σ=0 noise: synthetic inputs equal their targets
    synth = torch.tensor([same(i, t) for i, t in zip(batch["input"], batch["target"])])
    assert (real ^ synth).all()  # every sample is one or the other
    assert 10 < int(real.sum()) < 54  # both sources drawn (each with probability 1/2)


def test_grey_images_among_rgb_are_replicated_for_y_tasks():
    task = Task("sr", "y", Identity(), residual=False)
    packed = PackedImages([[("g", ramp(12, 12, 1)), ("c", ramp(12, 12, 3))]], task, 8)
    assert packed.channels == 3
    sampler = DevicePatchSampler(packed, task, 8, 16, "flips", seed=0)
    idx, rows, cols = sampler.positions(16, sampler.generator)
    crops = sampler.crops(idx, rows, cols)
    grey = crops[idx == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_generator_state_makes_draws_repeatable():
    task = grey_task(GaussianNoise(25))
    images = [("a", ramp(40, 40, salt=7))]
    a = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 8, "flips", seed=11)
    a.draw()
    state = a.state_dict()
    first = a.draw()
    b = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 8, "flips", seed=999)
    b.load_state_dict(state)
    second = b.draw()
    assert torch.equal(first["input"], second["input"]) and torch.equal(first["target"], second["target"])


def test_a_cuda_generator_state_resumes_on_cpu_seeded_from_it(caplog):
    """A GPU run's checkpoint resumed on CPU: CUDA's 16-byte Philox state cannot be set on a CPU generator;
    the sampler seeds from it (the same state, the same draws; another state, other draws) and says so once."""
    task = grey_task(GaussianNoise(25))

    def sampler():
        return DevicePatchSampler(PackedImages([[("a", ramp(40, 50))]], task, 16), task, 16, 4, "flips", seed=0)

    cuda_state = {"generator": torch.tensor(list(range(16)), dtype=torch.uint8)}
    a, b, c = sampler(), sampler(), sampler()
    with caplog.at_level("WARNING", logger="xnet.data.device"):
        a.load_state_dict(cuda_state)
    b.load_state_dict(cuda_state)
    c.load_state_dict({"generator": torch.tensor(list(range(1, 17)), dtype=torch.uint8)})
    assert "generator state (16 bytes) is another device's than this cpu generator's (5056 bytes)" in caplog.text
    first = a.draw()["input"]
    assert torch.equal(first, b.draw()["input"]) and not torch.equal(first, c.draw()["input"])


def test_a_workers_item_is_a_pure_function_of_its_number():
    """Item i is drawn by the device loader's PatchSampler from the generator of (seed, i): any
    instance and any worker give the same batch, other numbers and seeds give other batches."""
    task = grey_task(GaussianNoise(25))
    images = [("a", ramp(40, 40, salt=9)), ("b", ramp(33, 45, salt=10))]

    def dataset(seed: int, batch_size: int | None = 4) -> PatchDataset:
        return PatchDataset(images, task, 16, length=8, augment="dihedral", seed=seed, batch_size=batch_size)

    a, b = dataset(3), dataset(3)
    assert a[5]["input"].shape == (4, 1, 16, 16) and a[5]["number"] == 5
    assert all(torch.equal(a[i][k], b[i][k]) for i in (0, 5, 1000) for k in ("input", "target"))
    assert not torch.equal(a[5]["input"], a[6]["input"])
    assert not torch.equal(a[5]["input"], dataset(4)[5]["input"])
    sampler = PatchSampler(PackedImages([images], task, 16), task, 16, "dihedral")
    want = sampler.pairs(4, item_generator(3, 5))
    assert torch.equal(a[5]["input"], want["input"]) and torch.equal(a[5]["target"], want["target"])
    one, want = dataset(3, batch_size=None)[5], sampler.pairs(1, item_generator(3, 5))  # one pair, no batch dim
    assert one["input"].shape == (1, 16, 16) and torch.equal(one["target"], want["target"][0])


def test_workers_batches_are_the_same_with_any_number_of_workers_and_continue_from_a_number():
    task = grey_task(GaussianNoise(25))
    data = PatchDataset([("a", ramp(40, 40, salt=11))], task, 16, length=3, seed=0, batch_size=4)

    def batches(workers: int, start: int = 0) -> list[dict]:
        return list(DataLoader(data, batch_size=None, sampler=ItemNumbers(3, start), num_workers=workers))

    inline, forked = batches(0), batches(2)
    assert [b["number"] for b in inline] == [0, 1, 2] and inline[0]["input"].shape == (4, 1, 16, 16)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(inline, forked) for k in ("input", "target"))
    assert torch.equal(batches(0, start=2)[0]["input"], inline[2]["input"])


PAIR_TASKS = {
    "sr_y_x3": Task("sr", "y", Bicubic(3), residual=False),
    "denoise_blind": Task("denoise", "grey", GaussianNoise([0, 55]), residual=True),
}


@pytest.mark.parametrize("task", list(PAIR_TASKS.values()), ids=list(PAIR_TASKS))
def test_pairs_are_float32_and_the_same_under_bf16_autocast(task):
    """#22.6: the pair (degradation, RGB→Y, rounding) is made in float32 whatever the trainer's precision."""
    channels = 3 if task.color == "y" else 1
    packed = PackedImages([[("a", ramp(60, 60, channels, salt=12))]], task, 24)
    fp32 = DevicePatchSampler(packed, task, 24, 8, "flips", seed=5).draw()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = DevicePatchSampler(packed, task, 24, 8, "flips", seed=5).draw()
    for k in ("input", "target"):
        assert bf16[k].dtype == torch.float32 and torch.equal(bf16[k], fp32[k])
    if task.color == "y":  # in the net's space: one channel, on the uint8 grid
        assert fp32["target"].shape[1] == 1 and torch.equal(fp32["target"] * 255, (fp32["target"] * 255).round())


def test_bad_settings_are_named():
    task = grey_task()
    with pytest.raises(ValueError, match="smaller than the 16px crop"):
        PackedImages([[("tiny", ramp(10, 40))]], task, 16)
    packed = PackedImages([[("a", ramp(20, 20))]], task, 8)
    with pytest.raises(ValueError, match="data.augment"):
        DevicePatchSampler(packed, task, 8, 4, augment="rotate", seed=0)
    with pytest.raises(ValueError, match="data.patch_size"):
        DevicePatchSampler(packed, task, 0, 4, "flips", seed=0)


def test_draw_tokens():
    tokens = list(DrawTokens(3))
    assert len(tokens) == 3 and all(is_draw_token(t) for t in tokens)
    assert not is_draw_token({"input": torch.zeros(1)})


@pytest.mark.cuda
def test_cuda_draws_match_the_layout():
    task = grey_task(GaussianNoise(25))
    images = [("a", ramp(40, 50, salt=8))]
    sampler = DevicePatchSampler(PackedImages([images], task, 16).to("cuda"), task, 16, 32, augment="dihedral", seed=0)
    idx, rows, cols = sampler.positions(32, sampler.generator)
    crops = sampler.crops(idx, rows, cols).cpu()
    src = torch.from_numpy(images[0][1].transpose(2, 0, 1).copy())
    assert all(found_in(c, src, list(range(8))) for c in crops)
    assert sampler.draw()["input"].is_cuda
