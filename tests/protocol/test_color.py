"""Tests for xnet.protocol.color (BT.601 studio range, MATLAB rgb2ycbcr semantics)."""

from __future__ import annotations

import pytest
import torch

from xnet.protocol.color import rgb_to_y, rgb_to_ycbcr, to_y, ycbcr_to_rgb

F64 = torch.float64


def _px(r: float, g: float, b: float, dtype=F64) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=dtype).view(3, 1, 1)


def test_y_known_values():
    assert rgb_to_y(_px(0, 0, 0)).item() == pytest.approx(16 / 255, abs=1e-15)
    assert rgb_to_y(_px(1, 1, 1)).item() == pytest.approx(235 / 255, abs=1e-15)
    assert rgb_to_y(_px(1, 0, 0)).item() == pytest.approx((16 + 65.481) / 255, abs=1e-15)
    assert rgb_to_y(_px(0, 1, 0)).item() == pytest.approx((16 + 128.553) / 255, abs=1e-15)
    assert rgb_to_y(_px(0, 0, 1)).item() == pytest.approx((16 + 24.966) / 255, abs=1e-15)


def test_ycbcr_matches_matlab_uint8_examples():
    # MATLAB: rgb2ycbcr(uint8(cat(3,255,0,0))) -> [81 90 240];
    #         rgb2ycbcr(uint8(cat(3,0,0,0)))   -> [16 128 128];
    #         rgb2ycbcr(uint8(cat(3,255,255,255))) -> [235 128 128].
    for rgb, ycc in [((1, 0, 0), (81, 90, 240)), ((0, 0, 0), (16, 128, 128)), ((1, 1, 1), (235, 128, 128))]:
        out = torch.floor(rgb_to_ycbcr(_px(*rgb)) * 255 + 0.5).flatten().tolist()
        assert out == list(ycc)


def test_y_equals_first_channel_of_ycbcr():
    x = torch.rand(2, 3, 5, 4, dtype=F64)
    torch.testing.assert_close(rgb_to_y(x), rgb_to_ycbcr(x)[:, :1], rtol=0, atol=0)


def test_shapes_and_dtype():
    x = torch.rand(3, 6, 7)
    assert rgb_to_y(x).shape == (1, 6, 7)
    assert rgb_to_y(x).dtype == torch.float32
    assert rgb_to_y(torch.rand(2, 3, 6, 7)).shape == (2, 1, 6, 7)
    assert rgb_to_ycbcr(torch.rand(2, 3, 6, 7)).shape == (2, 3, 6, 7)
    with pytest.raises(ValueError):
        rgb_to_y(torch.rand(6, 7))
    with pytest.raises(ValueError):
        rgb_to_y(torch.rand(4, 6, 7))
    with pytest.raises(ValueError):
        ycbcr_to_rgb(torch.rand(1, 6, 7))


def test_to_y_passes_grey_through_unchanged():
    g = torch.rand(1, 5, 5, dtype=F64)
    assert to_y(g) is g  # a grey image is its own Y; no studio-range squeeze
    gb = torch.rand(2, 1, 5, 5)
    assert to_y(gb) is gb
    x = torch.rand(2, 3, 5, 5, dtype=F64)
    torch.testing.assert_close(to_y(x), rgb_to_y(x), rtol=0, atol=0)


def test_inverse_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 9, generator=g, dtype=F64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, rtol=0, atol=1e-13)
    ycc = torch.rand(3, 8, 9, generator=g, dtype=F64)
    torch.testing.assert_close(rgb_to_ycbcr(ycbcr_to_rgb(ycc)), ycc, rtol=0, atol=1e-13)


def test_inverse_coefficients_match_matlab_ycbcr2rgb():
    # MATLAB ycbcr2rgb (double): R = 1.164383 (Y-16/255) + 1.596027 (Cr-128/255), etc.
    eye = torch.eye(3, dtype=F64).view(3, 3, 1, 1)  # three YCbCr "pixels" as a batch
    zero = ycbcr_to_rgb(torch.zeros(1, 3, 1, 1, dtype=F64))
    cols = (ycbcr_to_rgb(eye) - zero).view(3, 3).T  # rows R,G,B; cols Y,Cb,Cr
    expected = torch.tensor(
        [[1.164383, 0.0, 1.596027], [1.164383, -0.391762, -0.812968], [1.164383, 2.017232, 0.0]], dtype=F64
    )
    # (the "0" entries are only ~1e-6 in the exact inverse: the published
    # forward coefficients are rounded to 3 decimals)
    torch.testing.assert_close(cols, expected, rtol=0, atol=1e-5)
    # Grey YCbCr (16..235 luma, neutral chroma) maps to grey RGB.
    grey = ycbcr_to_rgb(torch.tensor([235 / 255, 128 / 255, 128 / 255], dtype=F64).view(3, 1, 1))
    torch.testing.assert_close(grey.flatten(), torch.ones(3, dtype=F64), rtol=0, atol=1e-14)


def test_restore_y_with_bicubic_chroma_roundtrip():
    # The SR colour-restore path: replace Y, keep Cb/Cr, go back to RGB.
    x = torch.rand(3, 4, 4, dtype=F64)
    ycc = rgb_to_ycbcr(x)
    new = torch.cat([rgb_to_y(x), ycc[1:]], dim=0)
    torch.testing.assert_close(ycbcr_to_rgb(new), x, rtol=0, atol=1e-13)


def test_differs_from_kornia_full_range_y():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(1, 3, 4, 4, dtype=torch.float32)
    full = kornia.color.rgb_to_y(x) if hasattr(kornia.color, "rgb_to_y") else kornia.color.rgb_to_ycbcr(x)[:, :1]
    # kornia: Y = 0.299 R + 0.587 G + 0.114 B (full range); ours is 16 + 219/255 * that.
    torch.testing.assert_close(rgb_to_y(x), 16 / 255 + full * (219 / 255), rtol=0, atol=1e-3)
    assert (rgb_to_y(x) - full).abs().max() > 1e-2
