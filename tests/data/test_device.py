"""The device-resident training data: crops are real crops of the sources (under the drawn flips or
rotations), pairs stay aligned, sources are mixed, the generator state makes draws repeatable."""
import numpy as np
import pytest
import torch

from xnet.protocol.degradations import GaussianNoise, Identity
from xnet.data.device import DevicePatchSampler, DrawTokens, PackedImages, is_draw_token
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
        idx, rows, cols = sampler.positions()
        crops = sampler.crops(idx, rows, cols)
        assert crops.dtype == torch.uint8 and crops.shape == (24, 1, 8, 8)
        for i, crop in zip(idx.tolist(), crops):
            assert found_in(crop, srcs[i], allowed), (augment, i)
            seen_transforms.add(next(k for k in range(8) if found_in(crop, srcs[i], [k])))
    assert len(seen_transforms) == len(allowed)  # every allowed transform is drawn


def test_batch_is_float_and_degraded_on_the_fly():
    images = [("a", ramp(40, 40, salt=4))]
    task = grey_task(GaussianNoise(25))
    sampler = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 32, seed=0)
    batch = sampler.draw()
    assert batch["target"].dtype == torch.float32 and 0 <= batch["target"].min() and batch["target"].max() <= 1
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
    sampler = DevicePatchSampler(packed, task, 8, 16, seed=0)
    idx, rows, cols = sampler.positions()
    crops = sampler.crops(idx, rows, cols)
    grey = crops[idx == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_generator_state_makes_draws_repeatable():
    task = grey_task(GaussianNoise(25))
    images = [("a", ramp(40, 40, salt=7))]
    a = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 8, seed=11)
    a.draw()
    state = a.state_dict()
    first = a.draw()
    b = DevicePatchSampler(PackedImages([images], task, 16), task, 16, 8, seed=999)
    b.load_state_dict(state)
    second = b.draw()
    assert torch.equal(first["input"], second["input"]) and torch.equal(first["target"], second["target"])


def test_a_cuda_generator_state_resumes_on_cpu_seeded_from_it(caplog):
    """A GPU run's checkpoint resumed on CPU: CUDA's 16-byte Philox state cannot be set on a CPU generator;
    the sampler seeds from it (the same state, the same draws; another state, other draws) and says so once."""
    task = grey_task(GaussianNoise(25))

    def sampler():
        return DevicePatchSampler(PackedImages([[("a", ramp(40, 50))]], task, 16), task, 16, 4, seed=0)

    cuda_state = {"generator": torch.tensor(list(range(16)), dtype=torch.uint8)}
    a, b, c = sampler(), sampler(), sampler()
    with caplog.at_level("WARNING", logger="xnet.data.device"):
        a.load_state_dict(cuda_state)
    b.load_state_dict(cuda_state)
    c.load_state_dict({"generator": torch.tensor(list(range(1, 17)), dtype=torch.uint8)})
    assert "generator state (16 bytes) is another device's than this cpu generator's (5056 bytes)" in caplog.text
    first = a.draw()["input"]
    assert torch.equal(first, b.draw()["input"]) and not torch.equal(first, c.draw()["input"])


def test_bad_settings_are_named():
    task = grey_task()
    with pytest.raises(ValueError, match="smaller than the 16px crop"):
        PackedImages([[("tiny", ramp(10, 40))]], task, 16)
    packed = PackedImages([[("a", ramp(20, 20))]], task, 8)
    with pytest.raises(ValueError, match="data.augment"):
        DevicePatchSampler(packed, task, 8, 4, augment="rotate")
    with pytest.raises(ValueError, match="data.patch_size"):
        DevicePatchSampler(packed, task, 0, 4)


def test_draw_tokens():
    tokens = list(DrawTokens(3))
    assert len(tokens) == 3 and all(is_draw_token(t) for t in tokens)
    assert not is_draw_token({"input": torch.zeros(1)})


@pytest.mark.cuda
def test_cuda_draws_match_the_layout():
    task = grey_task(GaussianNoise(25))
    images = [("a", ramp(40, 50, salt=8))]
    sampler = DevicePatchSampler(PackedImages([images], task, 16).to("cuda"), task, 16, 32, augment="dihedral", seed=0)
    idx, rows, cols = sampler.positions()
    crops = sampler.crops(idx, rows, cols).cpu()
    src = torch.from_numpy(images[0][1].transpose(2, 0, 1).copy())
    assert all(found_in(c, src, list(range(8))) for c in crops)
    assert sampler.draw()["input"].is_cuda
