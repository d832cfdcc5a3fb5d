"""Synthetic rain streaks for the de-raining task (``task=derain``).

Streak model (:class:`RainStreaks`), per sample, all in torch and batched:

1. **Drops.** A sparse random field of seeds: every pixel of a canvas slightly larger than the image
   holds a drop with probability ``density`` (drawn per sample), with a brightness drawn per drop from
   ``brightness``. The seeds are split over ``layers`` independent streak layers (a crude stand-in for
   drops at different depths), each with its own small angle jitter and length scale.
2. **Motion blur.** A drop falling during the exposure images as a line: each layer's seeds are
   convolved with an anti-aliased line kernel of ``length`` px (×U(0.5, 1) per layer) and ``width`` px,
   tilted by ``angle`` degrees from vertical (positive: the wind blows to the right, streaks run from
   upper left to lower right), fading in/out over ``taper``·length at the ends (a moving drop's blur
   is a trapezoid along its path) and softened by a Gaussian of ``blur`` px. The kernel's peak is 1
   before the blur, so a streak is about as bright as its drop; overlapping streaks add and the rain
   layer ``R`` is clipped to [0, 1]. The convolution is done by FFT (one per layer per sample,
   whatever the streak length) on the canvas, keeping only the part the wrap-around cannot reach, so
   streaks enter from outside the frame and the density is uniform up to the borders.
3. **Composite.** Rain is achromatic (one ``R`` for every channel) and adds light:
   ``rainy = clip(clean + intensity·R)`` (``blend='add'``, the additive model of the Rain100/DDN
   data sets) or the screen blend ``1 − (1 − clean)(1 − intensity·R)`` (``blend='screen'``, which
   cannot saturate). A photograph of rain is an image, so the result is clipped to [0, 1].

Why not :class:`kornia.augmentation.RandomRain`: it draws one-pixel aliased lines written as the
fixed value 200/255 (darkening bright pixels, no transparency, no blur), loops over the samples in
Python, and draws from the global RNG (no ``torch.Generator``), so it can give neither the per-call
generator streams of :meth:`Degradation.train` nor the seeded, pure :meth:`Degradation.eval`.

The module also writes fixed-seed synthetic test sets in the ``rain/``–``norain/`` layout that
:class:`xnet.data.sources.PairedFolder` reads::

    python -m xnet.protocol.rain --source-dir shared/data/BSD100 --out data/BSD100-rain --seed 0
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xnet.protocol.degradations import Degradation, seeded_generator
from xnet.protocol.float32 import float32_step

Range = float | Sequence[float]

BLENDS = ("add", "screen")


def _range(value: Range, name: str, low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    """A scalar or ``[low, high]`` pair as a validated ``(low, high)``."""
    if isinstance(value, (int, float)):
        lo = hi = float(value)
    else:
        vals = [float(v) for v in value]
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2:
            raise ValueError(f"rain {name} must be a number or a [low, high] pair, got {value!r}")
        lo, hi = vals
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise ValueError(f"rain {name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


def _uniform(shape: tuple[int, ...], rng: tuple[float, float], device, generator) -> torch.Tensor:
    lo, hi = rng
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return lo + (hi - lo) * u


class RainStreaks(Degradation):
    """Synthetic rain streaks (see the module docstring for the model).

    Every argument that is a range (a number means a fixed value) is drawn uniformly per sample:

    Args:
        density: fraction of pixels that seed a streak (all layers together).
        length: streak length in px; each layer uses ``length·U(0.5, 1)``.
        angle: streak direction in degrees from vertical (positive leans to the right going down).
        angle_jitter: standard deviation (degrees) of each layer's deviation from the sample's angle.
        width: streak width in px (anti-aliased; 1 is a one-pixel line).
        blur: standard deviation (px) of a Gaussian that softens the streaks (0: none).
        brightness: brightness of each drop (per streak), before ``intensity``.
        intensity: scale of the rain layer ``R`` in the composite.
        layers: number of streak layers (each its own seeds, angle jitter and length scale).
        taper: fraction of a streak's length over which each end fades in/out (0: hard ends).
        blend: ``'add'`` (``clean + intensity·R``) or ``'screen'``.

    The defaults give clearly visible, moderately heavy rain of one dominant direction, in the range
    of Rain100L/Rain12.
    """

    def __init__(
        self,
        density: Range = (0.002, 0.006),
        length: Range = (15.0, 45.0),
        angle: Range = (-25.0, 25.0),
        angle_jitter: float = 3.0,
        width: Range = (1.0, 1.8),
        blur: Range = 0.5,
        brightness: Range = (0.5, 1.0),
        intensity: Range = (0.4, 0.8),
        layers: int = 2,
        taper: float = 0.25,
        blend: str = "add",
    ) -> None:
        self.density = _range(density, "density", 0.0, 1.0)
        self.length = _range(length, "length", 1.0, 512.0)
        self.angle = _range(angle, "angle", -90.0, 90.0)
        self.width = _range(width, "width", 0.5, 16.0)
        self.blur = _range(blur, "blur", 0.0, 8.0)
        self.brightness = _range(brightness, "brightness", 0.0, 1.0)
        self.intensity = _range(intensity, "intensity", 0.0, 1.0)
        self.angle_jitter = float(angle_jitter)
        if not (math.isfinite(self.angle_jitter) and self.angle_jitter >= 0):
            raise ValueError(f"rain angle_jitter must be >= 0, got {angle_jitter!r}")
        self.taper = float(taper)
        if not 0 <= self.taper <= 0.5:
            raise ValueError(f"rain taper must be in [0, 0.5], got {taper!r}")
        self.layers = int(layers)
        if self.layers < 1:
            raise ValueError(f"rain layers must be >= 1, got {layers!r}")
        if blend not in BLENDS:
            raise ValueError(f"rain blend must be one of {BLENDS}, got {blend!r}")
        self.blend = blend
        # One kernel size for every draw (no device sync): covers the longest, widest, blurriest streak.
        reach = self.length[1] / 2 + self.width[1] / 2 + 1 + 3 * self.blur[1]
        self.ksize = 2 * math.ceil(reach) + 1

    # -- sampling ---------------------------------------------------------------------------------

    def draw(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-sample parameters: ``density``, ``intensity`` (B,), ``angle``, ``length``, ``width``,
        ``blur`` (B×layers; angle in degrees), drawn in a fixed order from ``generator``."""
        b, j = batch, self.layers
        u = lambda shape, rng: _uniform(shape, rng, device, generator)  # noqa: E731
        density = u((b,), self.density)
        intensity = u((b,), self.intensity)
        angle = u((b, 1), self.angle)
        length = u((b, 1), self.length)
        width = u((b, 1), self.width).expand(b, j)
        blur = u((b, 1), self.blur).expand(b, j)
        jitter = torch.randn((b, j), generator=generator, device=device, dtype=torch.float32)
        scale = u((b, j), (0.5, 1.0))
        if j == 1:  # a single layer keeps the sample's own length and angle
            scale, jitter = torch.ones_like(scale), torch.zeros_like(jitter)
        return {
            "density": density,
            "intensity": intensity,
            "angle": (angle + self.angle_jitter * jitter).clamp(-90.0, 90.0),
            "length": (length * scale).clamp(min=1.0),
            "width": width.contiguous(),
            "blur": blur.contiguous(),
        }

    def kernels(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Streak kernels ``B×layers×k×k`` (peak 1 before the blur) for the drawn parameters."""
        k = self.ksize
        angle, length, width, blur = params["angle"], params["length"], params["width"], params["blur"]
        device = angle.device
        r = torch.arange(k, device=device, dtype=torch.float32) - (k // 2)
        dy, dx = r.view(1, 1, k, 1), r.view(1, 1, 1, k)
        theta = torch.deg2rad(angle)[..., None, None]
        s, c = torch.sin(theta), torch.cos(theta)
        along = dx * s + dy * c  # position along the streak (down-and-with-the-wind is positive)
        across = (dy * s - dx * c).abs()
        # Anti-aliased segment: a box of the given width seen through 1-px pixels (linear ramps across),
        # fading in and out over ``taper``·length at either end (a drop's blur is a trapezoid along).
        half = length[..., None, None] / 2 + 0.5
        ramp = (self.taper * length[..., None, None]).clamp(min=1.0)
        ker = ((half - along.abs()) / ramp).clamp(0, 1)
        ker = ker * (width[..., None, None] / 2 + 0.5 - across).clamp(0, 1)
        if self.blur[1] > 0:
            # Soften the streak: blur its (small) kernel with a per-(sample, layer) separable Gaussian.
            sig = blur[..., None]
            g = torch.exp(-(r.view(1, 1, k) ** 2) / (2 * sig.clamp(min=1e-3) ** 2))
            g = torch.where(sig > 0, g / g.sum(-1, keepdim=True), (r.view(1, 1, k) == 0).float())
            ker = _blur_separable(ker, g)
        return ker

    def rain_layer(
        self,
        params: dict[str, torch.Tensor],
        height: int,
        width: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The rain layer ``R`` (``B×1×H×W`` in [0, 1]) for drawn ``params``; the drops are drawn from
        ``generator`` on the parameters' device."""
        density = params["density"]
        device, b, j, k = density.device, density.shape[0], self.layers, self.ksize
        hc, wc = height + k - 1, width + k - 1
        # Drops on a canvas that extends k-1 px beyond the top/left, so the valid part of the circular
        # convolution is exactly the image and streaks enter from outside the frame.
        hit = torch.rand((b, j, hc, wc), generator=generator, device=device, dtype=torch.float32)
        bright = _uniform((b, j, hc, wc), self.brightness, device, generator)
        seeds = torch.where(hit < (density / j).view(b, 1, 1, 1), bright, torch.zeros((), device=device))
        ker = self.kernels(params)
        ker_pad = F.pad(ker, (0, wc - k, 0, hc - k))
        spec = (torch.fft.rfft2(seeds) * torch.fft.rfft2(ker_pad)).sum(1)
        rain = torch.fft.irfft2(spec, s=(hc, wc))[:, k - 1 :, k - 1 :]
        # FFT round-off leaves ~1e-7 where there is no rain: zero it so rain-free pixels stay exact.
        rain = torch.where(rain > 1e-5, rain, torch.zeros((), device=device)).clamp_(max=1.0)
        return rain.unsqueeze(1)

    def composite(self, clean: torch.Tensor, rain: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
        """Blend the rain layer ``rain`` (B×1×H×W) into ``clean`` (B×C×H×W) and clip to [0, 1]."""
        r = rain * intensity.view(-1, 1, 1, 1)
        out = clean.float() + r if self.blend == "add" else 1 - (1 - clean.float()) * (1 - r)
        return out.clamp_(0, 1).to(clean.dtype)

    @float32_step
    def _apply(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if clean.ndim != 4:
            raise ValueError(f"rain expects a B×C×H×W batch, got shape {tuple(clean.shape)}")
        b, _, h, w = clean.shape
        params = self.draw(b, clean.device, generator)
        return self.composite(clean, self.rain_layer(params, h, w, generator), params["intensity"])

    # -- Degradation API --------------------------------------------------------------------------

    def train(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._apply(clean, generator)

    def eval(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        return self._apply(clean.detach().float().cpu()[None], seeded_generator(seed))[0]

    def __repr__(self) -> str:
        def fmt(r: tuple[float, float]) -> str:
            return f"{r[0]:g}" if r[0] == r[1] else f"({r[0]:g}, {r[1]:g})"

        return (
            f"RainStreaks(density={fmt(self.density)}, length={fmt(self.length)}, angle={fmt(self.angle)}, "
            f"angle_jitter={self.angle_jitter:g}, width={fmt(self.width)}, blur={fmt(self.blur)}, "
            f"brightness={fmt(self.brightness)}, intensity={fmt(self.intensity)}, layers={self.layers}, "
            f"taper={self.taper:g}, "
            f"blend={self.blend!r})"
        )


def _blur_separable(ker: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Blur ``ker`` (B×J×k×k) with per-(B, J) 1-D Gaussians ``g`` (B×J×k), 'same' size, zero padded."""
    b, j, k, _ = ker.shape
    x = ker.reshape(1, b * j, k, k)
    gw = g.reshape(b * j, 1, 1, k)
    x = F.conv2d(x, gw, padding=(0, k // 2), groups=b * j)
    x = F.conv2d(x, gw.transpose(2, 3), padding=(k // 2, 0), groups=b * j)
    return x.reshape(b, j, k, k)


# -- fixed-seed test sets -------------------------------------------------------------------------


def image_seed(seed: int, name: str) -> int:
    """Per-image seed from the set's ``seed`` and the image's name (adding images changes no other)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63)


def make_rain_testset(
    source_items: Iterable[tuple[str, np.ndarray]],
    out_dir: str | Path,
    seed: int = 0,
    **rain_kwargs,
) -> Path:
    """Write a synthetic rain test set: ``out_dir/rain/NAME.png`` and ``out_dir/norain/NAME.png``.

    ``source_items`` are ``(name, uint8 H×W×C)`` images (grey ones are replicated to RGB); each is
    rained on with :meth:`RainStreaks.eval` under :func:`image_seed` ``(seed, name)``, so the set is
    bit-for-bit reproducible. ``rain_kwargs`` go to :class:`RainStreaks`. Returns ``out_dir``.
    """
    from PIL import Image

    from xnet.protocol.io import to_tensor, to_uint8

    rain = RainStreaks(**rain_kwargs)
    out_dir = Path(out_dir)
    (out_dir / "rain").mkdir(parents=True, exist_ok=True)
    (out_dir / "norain").mkdir(parents=True, exist_ok=True)
    count = 0
    for name, arr in source_items:
        arr = np.asarray(arr, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        rainy = to_uint8(rain.eval(to_tensor(arr), image_seed(seed, name)))
        Image.fromarray(rainy).save(out_dir / "rain" / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(arr)).save(out_dir / "norain" / f"{name}.png")
        count += 1
    if count == 0:
        raise ValueError("make_rain_testset: no source images")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    from xnet.protocol.io import list_images, load_image

    p = argparse.ArgumentParser(
        prog="python -m xnet.protocol.rain",
        description="Write a fixed-seed synthetic rain test set (rain/ and norain/ PNG folders).",
    )
    p.add_argument("--source-dir", required=True, help="folder of clean images")
    p.add_argument("--out", required=True, help="output folder (gets rain/ and norain/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use the first N images (sorted by name)")
    for opt in ("density", "length", "angle", "width", "blur", "brightness", "intensity"):
        p.add_argument(f"--{opt}", type=float, nargs="+", default=None, metavar="V", help=f"{opt}: a value or LOW HIGH")
    p.add_argument("--blend", choices=BLENDS, default=None)
    args = p.parse_args(argv)

    kwargs = {
        k: getattr(args, k) for k in ("density", "length", "angle", "width", "blur", "brightness", "intensity", "blend")
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    files = list_images(args.source_dir)[: args.limit]
    if not files:
        p.error(f"no images in {args.source_dir}")
    items = ((f.stem, load_image(f, "RGB")) for f in files)
    out = make_rain_testset(items, args.out, args.seed, **kwargs)
    print(f"wrote {len(files)} pairs to {out}/rain and {out}/norain ({RainStreaks(**kwargs)!r}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
