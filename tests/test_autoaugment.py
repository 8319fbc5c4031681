"""AutoAugment, RandAugment and Cutout on the device: every operation equals torchvision's own
``_apply_op`` image by image, the policies are deterministic per generator and draw per image,
and Cutout zeroes one clipped square per image."""

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

from ltcifar.data import autoaugment as aa


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 32, 32): smooth gradients plus noise, so every operation moves pixels."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, 32)
    base = 60 + 120 * (ramp[None, :, None] * ramp[None, None, :])  # (1, 32, 32)
    noise = torch.randint(0, 60, (n, 3, 32, 32), generator=g)
    tint = torch.randint(0, 60, (n, 3, 1, 1), generator=g)
    return (base + noise + tint).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("name", aa.OPS[1:])
@pytest.mark.parametrize("bins", [10, 31])
def test_every_operation_equals_torchvisions_image_by_image(name, bins):
    x = images()
    table = aa.magnitudes(bins, 32, 32)
    for b in (1, bins // 2, bins - 1):
        for sign in (1.0, -1.0) if name in aa.SIGNED else (1.0,):
            mag = float(table[aa.OP[name], b]) * sign
            op = torch.full((len(x),), aa.OP[name])
            got = aa.apply_ops(x, op, torch.full((len(x),), mag))
            want = torch.stack(
                [_apply_op(img, name, mag, InterpolationMode.NEAREST, None) for img in x]
            )
            assert torch.equal(got, want), (name, b, sign)


def test_each_image_gets_its_own_operation():
    x = images()
    op = torch.tensor(
        [aa.OP[n] for n in ("Identity", "Rotate", "Equalize", "Invert", "ShearX", "Posterize")]
    )
    mag = aa.magnitudes(10, 32, 32)[op, 5]
    got = aa.apply_ops(x, op, mag)
    for i, name in enumerate(aa.OPS[k] for k in op.tolist()):
        want = _apply_op(x[i], name, float(mag[i]), InterpolationMode.NEAREST, None)
        assert torch.equal(got[i], want), name


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policies_are_deterministic_per_generator_and_draw_per_image(policy):
    apply = aa.policy(policy, 2, 9)
    x = images(64)
    a = apply(x, torch.Generator().manual_seed(0))
    b = apply(x, torch.Generator().manual_seed(0))
    c = apply(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    assert changed.sum() > len(x) // 2
    assert (
        len({tuple((a[i] != x[i]).flatten().nonzero()[:5].flatten().tolist()) for i in range(8)})
        > 1
    )


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(200, 3, 32, 32)
    out = aa.cutout(x, 16, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(1)  # (n, 32, 32): every channel of a pixel
    rows, cols = zeroed.any(2), zeroed.any(1)
    assert torch.equal(zeroed, rows[:, :, None] & cols[:, None, :])  # one rectangle each
    assert int(rows.sum(1).max()) == 16 and int(rows.sum(1).min()) <= 9  # clipped at borders
    assert torch.equal(out[~zeroed[:, None].expand_as(out)], x[~zeroed[:, None].expand_as(x)])
