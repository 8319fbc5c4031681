"""Batched crop-and-flip: each output is a (mirrored) window of the padded input; fair draws."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from ltcifar.data.augment import crop_flip, rotate, to_input


def coordinate_images(n: int, h: int, w: int) -> torch.Tensor:
    """(n, h, w, 2) uint8: channel 0 holds row + 1, channel 1 holds column + 1 (never 0)."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8)[None, :].expand(h, w)
    return torch.stack([rows, cols], -1).expand(n, h, w, 2).contiguous()


def candidates(img: torch.Tensor, pad: int, mode: str) -> dict[bytes, tuple[int, int, bool]]:
    """Every window of the padded (H, W, C) image, plain and mirrored -> (dy, dx, flipped)."""
    h, w, _ = img.shape
    chw = img.permute(2, 0, 1).float()[None]
    padded = F.pad(chw, (pad, pad, pad, pad), mode="reflect" if mode == "reflect" else "constant")
    padded = padded[0].permute(1, 2, 0).to(torch.uint8)
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[dy : dy + h, dx : dx + w]
            out[win.contiguous().numpy().tobytes()] = (dy, dx, False)
            out[win.flip(1).contiguous().numpy().tobytes()] = (dy, dx, True)
    assert len(out) == 2 * (2 * pad + 1) ** 2, "windows must be distinguishable"
    return out


def identify(out: torch.Tensor, table: dict) -> list[tuple[int, int, bool]]:
    found = []
    for i in range(len(out)):
        key = out[i].contiguous().numpy().tobytes()
        assert key in table, f"output {i} is no window of the padded input"
        found.append(table[key])
    return found


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_outputs_are_padded_windows_cifar_size(mode):
    x = coordinate_images(300, 32, 32)
    gen = torch.Generator().manual_seed(0)
    out = crop_flip(x, gen, pad=4, mode=mode)
    assert out.shape == x.shape and out.dtype == torch.uint8
    found = identify(out, candidates(x[0], 4, mode))
    assert len(set(found)) > 100  # many distinct windows were drawn


def test_outputs_are_windows_of_random_images():
    """Per-image windows on arbitrary content (not just the coordinate pattern)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(1, 256, (40, 12, 10, 3), generator=g, dtype=torch.uint8)
    for mode in ("zeros", "reflect"):
        out = crop_flip(x, torch.Generator().manual_seed(1), pad=3, mode=mode)
        for i in range(len(x)):
            assert out[i].contiguous().numpy().tobytes() in candidates(x[i], 3, mode)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_flip_rate_and_offsets_uniform(mode):
    n, pad = 4000, 4
    x = coordinate_images(n, 16, 16)
    out = crop_flip(x, torch.Generator().manual_seed(123), pad=pad, mode=mode)
    found = identify(out, candidates(x[0], pad, mode))
    flips = sum(f for _, _, f in found)
    assert abs(flips - n / 2) <= 4 * math.sqrt(n * 0.25)
    k = 2 * pad + 1
    hist = np.zeros(k * k)
    for dy, dx, _ in found:
        hist[dy * k + dx] += 1
    assert (hist > 0).all()
    assert chisquare(hist).pvalue > 1e-3
    # flips are independent of the offset: both halves cover the positions
    for want in (False, True):
        sub = np.zeros(k * k)
        for dy, dx, f in found:
            if f == want:
                sub[dy * k + dx] += 1
        assert chisquare(sub).pvalue > 1e-3


def test_zero_offset_no_flip_is_identity_and_zeros_pad():
    x = coordinate_images(2000, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2, mode="zeros")
    table = candidates(x[0], 2, "zeros")
    found = identify(out, table)
    centred = [i for i, (dy, dx, f) in enumerate(found) if (dy, dx, f) == (2, 2, False)]
    assert centred and all(torch.equal(out[i], x[i]) for i in centred)
    corner = [i for i, (dy, dx, f) in enumerate(found) if (dy, dx, f) == (0, 0, False)]
    assert corner
    for i in corner:
        assert torch.count_nonzero(out[i, :2]) == 0 and torch.count_nonzero(out[i, :, :2]) == 0
        assert torch.equal(out[i, 2:, 2:], x[i, :6, :6])


def test_same_seed_same_output():
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 256, (64, 32, 32, 3), generator=g, dtype=torch.uint8)
    a = crop_flip(x, torch.Generator().manual_seed(42), 4, "reflect")
    b = crop_flip(x, torch.Generator().manual_seed(42), 4, "reflect")
    c = crop_flip(x, torch.Generator().manual_seed(43), 4, "reflect")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("channels_last", [True, False])
def test_to_input(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 8, 6, 3), generator=g, dtype=torch.uint8)
    mean = torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1)
    std = torch.tensor([60.0, 50.0, 70.0]).view(1, 3, 1, 1)
    out = to_input(x, mean, std, channels_last)
    assert out.shape == (4, 3, 8, 6) and out.dtype == torch.float32
    expected = (x.permute(0, 3, 1, 2).double() - mean.double()) / std.double()
    torch.testing.assert_close(out.double(), expected)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert not out.is_contiguous()
    else:
        assert out.is_contiguous()
    assert x.dtype == torch.uint8 and int(x.max()) <= 255  # input untouched


def test_rotation_is_torchvisions_rotate():
    """Each image is what torchvision's rotate (nearest, zero fill: RandomRotation's defaults)
    gives at the angle drawn for it, and the angles fill [-degrees, degrees]."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate as tv_rotate

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=gen)
    out = rotate(x, 15.0, torch.Generator().manual_seed(1))
    angles = (torch.rand(64, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 15.0
    assert angles.min() < -12 and angles.max() > 12
    for img, got, angle in zip(x, out, angles.tolist(), strict=True):
        want = tv_rotate(img.permute(2, 0, 1), angle, InterpolationMode.NEAREST, fill=[0.0] * 3)
        assert torch.equal(got.permute(2, 0, 1), want), angle
    assert (out == 0).any() and not (x == 0).any()  # corners rotated in from outside: zeros


def test_rotation_by_zero_degrees_is_identity():
    x = torch.randint(0, 256, (4, 8, 8, 1), dtype=torch.uint8)
    assert torch.equal(rotate(x, 0.0, torch.Generator().manual_seed(0)), x)
