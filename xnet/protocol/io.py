"""Reading and writing images, with clear errors for the inputs real folders contain.

Lossy conversions (alpha dropped, CMYK → RGB, 16 → 8 bit, colour → grey for a grey model) are
logged as a warning once per run (:func:`warn_once`; the entry points reset it at start).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from xnet.protocol.atomic import atomic_path
from xnet.protocol.errors import UserError
from xnet.protocol.quantize import uint8_levels

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
MODES = ("L", "RGB", "keep")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")

_warned: set[str] = set()


class ImageError(UserError):
    """An image that cannot be used; the message names the file."""


def warn_once(kind: str, message: str, *args: object) -> None:
    """Log a conversion warning the first time ``kind`` happens in this run (not once per image)."""
    if kind not in _warned:
        _warned.add(kind)
        log.warning(message + " (reported once per run)", *args)


def reset_warnings() -> None:
    """A new run reports its conversions afresh."""
    _warned.clear()


def _report_lossy_mode(img: Image.Image, path: Path) -> None:
    if img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        warn_once("alpha", "%s: alpha channel dropped (the colour channels are used as stored)", path)
    elif img.mode == "CMYK":
        warn_once("cmyk", "%s: CMYK image converted to RGB", path)
    elif img.mode in DEEP_MODES and img.mode != "F":  # F is refused below
        warn_once(
            "deep",
            "%s: %s image rescaled to 8 bits per channel",
            path,
            "16-bit" if img.mode.startswith("I;16") else f"mode {img.mode}",
        )


def _upright(img: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation (phones store photos sideways and say so in EXIF)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:
        warn_once("exif", "%s: EXIF orientation unreadable (%s); image used as stored", path, e)
        return img


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """16/32-bit grey ('I;16', 'I') to 8 bit by rescaling its declared range, not by clipping."""
    if img.mode == "F":
        raise ImageError(f"{path}: floating-point images (mode F) are not supported; save it as 8/16-bit PNG")
    arr = np.asarray(img)
    sixteen_bit = arr.dtype == np.uint16 or img.mode.startswith("I;16") or arr.max() > 255  # mode I holds 8 or 16 bits
    levels = uint8_levels(torch.from_numpy(arr.astype(np.float64) / (65535.0 if sixteen_bit else 255.0)))
    return Image.fromarray(levels.numpy().astype(np.uint8), mode="L")


def load_image(path: str | os.PathLike, mode: str = "keep") -> np.ndarray:
    """Decode ``path`` to a ``H×W×C`` uint8 array.

    ``mode``: ``L`` (grey; colour images are converted with ITU-R 601 luma), ``RGB`` (grey images are
    replicated), or ``keep`` (grey stays 1 channel, anything else becomes RGB). The EXIF orientation
    is applied. Alpha is dropped (composited on black would change the content; the colour channels
    are kept as stored), palettes are expanded, 16-bit images are rescaled to 8 bit.
    """
    if mode not in MODES:
        raise ValueError(f"image mode must be one of {MODES}, got {mode!r}")
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            _report_lossy_mode(img, path)
            img = _upright(img, path)
            if img.mode in DEEP_MODES:
                img = _to_8bit(img, path)
            elif img.mode in ("LA", "La"):
                img = img.getchannel(0)
            elif img.mode == "1":
                img = img.convert("L")
            elif img.mode not in ("L", "RGB"):
                img = img.convert("RGBA").convert("RGB") if "A" in img.mode or img.mode == "P" else img.convert("RGB")
            if mode == "L" and img.mode != "L":
                warn_once("grey", "%s: colour image converted to grey (ITU-R 601 luma)", path)
                img = img.convert("L")
            elif mode == "RGB" and img.mode != "RGB":
                img = img.convert("RGB")
            arr = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        if isinstance(e, UnidentifiedImageError):  # its own message repeats the path
            raise ImageError(f"{path}: not an image (or a format Pillow cannot read)") from e
        raise ImageError(f"{path}: cannot decode image ({e.__class__.__name__}: {e})") from e
    return arr[..., None] if arr.ndim == 2 else arr


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``H×W×C`` uint8 → ``C×H×W`` float32 in [0, 1]."""
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``C×H×W`` float in [0, 1] → ``H×W×C`` uint8 (clipped and rounded)."""
    return uint8_levels(x.detach().float().cpu()).to(torch.uint8).permute(1, 2, 0).numpy()


def save_image(x: torch.Tensor, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write a ``C×H×W`` float image in [0, 1] as an 8-bit PNG (parents created), atomically: a
    full disk leaves no partial PNG and an :class:`~xnet.protocol.errors.OutputError` naming ``path``;
    without ``overwrite`` an existing ``path`` is kept (an OutputError too)."""
    path = Path(path)
    arr = to_uint8(x)
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(tmp, format="PNG")
    return path


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
