"""AutoAugment's CIFAR-10 policy, RandAugment and Cutout, batched on the device.

Each image draws its own operations, probabilities and signs from the run's generator (on the
device: no host read). Every operation is computed for the whole batch with per-image
magnitudes and kept where an image drew it, so a step launches a fixed set of kernels. The
geometric operations (shear, translate, rotate) are one ``grid_sample`` per slot, with each
image's affine matrix built as torchvision's ``_get_inverse_affine_matrix`` and
``_gen_affine_grid`` build it; the colour operations follow torchvision's tensor functions,
rounding included, so a test compares every operation with torchvision's own ``_apply_op``
image by image. Images are uint8 (N, C, H, W); Cutout acts on the normalised batch.
"""

from collections.abc import Callable
from typing import cast  # sum() of tensors is a tensor; its stub says ``Tensor | int``

import torch
import torch.nn.functional as F

from ltcifar.config.records import need

OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
)  # fmt: skip
OP = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
SIGNED = (*GEOMETRIC, "Brightness", "Color", "Contrast", "Sharpness")
RANDAUGMENT_OPS = OPS[:-1]  # torchvision's RandAugment: all but Invert

# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019), as torchvision's AutoAugmentPolicy.CIFAR10:
# 25 sub-policies of two (operation, probability, magnitude bin of 10) each.
CIFAR10_POLICY = (
    (("Invert", 0.1, 0), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 0), ("Equalize", 0.9, 0)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 0), ("Equalize", 0.5, 0)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 0), ("AutoContrast", 0.4, 0)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 0)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 0), ("Equalize", 0.6, 0)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 0)),
    (("AutoContrast", 0.8, 0), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 0)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 0), ("Invert", 0.1, 0)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 0)),
)  # fmt: skip


def magnitudes(bins: int, height: int, width: int) -> torch.Tensor:
    """(len(OPS), bins) float32 magnitudes, as torchvision's ``_augmentation_space``: unsigned;
    an operation without magnitude has 0s, Posterize its bits, Solarize its threshold."""
    table = torch.zeros(len(OPS), bins)
    for name, top in (("ShearX", 0.3), ("ShearY", 0.3), ("TranslateX", 150.0 / 331.0 * width),
                      ("TranslateY", 150.0 / 331.0 * height), ("Rotate", 30.0), ("Brightness", 0.9),
                      ("Color", 0.9), ("Contrast", 0.9), ("Sharpness", 0.9)):  # fmt: skip
        table[OP[name]] = torch.linspace(0.0, top, bins)
    table[OP["Posterize"]] = 8 - (torch.arange(bins) / ((bins - 1) / 4)).round().int()
    table[OP["Solarize"]] = torch.linspace(255.0, 0.0, bins)
    return table


def _affine_matrices(op: torch.Tensor, mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 2, 3) float32 inverse affine matrices of each image's geometric operation (identity
    for the others), computed in float64 as torchvision computes them in Python."""
    m = mag.double()
    zero = torch.zeros_like(m)
    is_ = {name: op == OP[name] for name in GEOMETRIC}
    angle = torch.where(is_["Rotate"], -m, zero)  # F.rotate passes -angle
    shear = torch.deg2rad(torch.rad2deg(torch.atan(m)))  # radians(degrees(atan(m))), as there
    shear_x = torch.where(is_["ShearX"], shear, zero)
    shear_y = torch.where(is_["ShearY"], shear, zero)
    tx = torch.where(is_["TranslateX"], m.trunc(), zero)  # int(magnitude)
    ty = torch.where(is_["TranslateY"], m.trunc(), zero)
    sheared = is_["ShearX"] | is_["ShearY"]  # sheared about the top-left corner
    cx = torch.where(sheared, torch.full_like(m, -w * 0.5), zero)
    cy = torch.where(sheared, torch.full_like(m, -h * 0.5), zero)
    rot = torch.deg2rad(angle)
    a = torch.cos(rot - shear_y) / torch.cos(shear_y)
    b = -torch.cos(rot - shear_y) * torch.tan(shear_x) / torch.cos(shear_y) - torch.sin(rot)
    c = torch.sin(rot - shear_y) / torch.cos(shear_y)
    d = -torch.sin(rot - shear_y) * torch.tan(shear_x) / torch.cos(shear_y) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).float().view(-1, 2, 3)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp with zero fill, as torchvision's ``_gen_affine_grid`` and
    ``_apply_grid_transform``: the grid in pixels about the centre, rescaled by theta."""
    n, _, h, w = x.shape
    dev = x.device
    base = torch.ones(1, h, w, 3, device=dev)
    base[..., 0] = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=dev)
    base[..., 1] = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=dev)[:, None]
    scale = torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale)
    out = F.grid_sample(x.float(), grid.view(n, h, w, 2), "nearest", "zeros", align_corners=False)
    return out.round().to(torch.uint8)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio x + (1 - ratio) other, per image, the weights rounded as torchvision's Python
    floats are when they meet a float32 tensor."""
    r = ratio.view(-1, 1, 1, 1)
    return (r.float() * x + (1.0 - r).float() * other).clamp(0, 255).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.uint8)[:, None]


def _sharp_degenerate(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 smoothed image (centre weight 5 of 13), borders unchanged."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    out = x.clone()
    out[..., 1:-1, 1:-1] = F.conv2d(x.float(), kernel, groups=c).round().to(torch.uint8)
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin((-2, -1), keepdim=True).float()
    hi = x.amax((-2, -1), keepdim=True).float()
    scale = 255.0 / (hi - lo)
    flat = ~torch.isfinite(scale)
    lo, scale = lo.masked_fill(flat, 0.0), scale.masked_fill(flat, 1.0)
    return ((x - lo) * scale).clamp(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: torchvision's ``_scale_channel`` lookup table, batched."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    last = (hist > 0).long().mul(torch.arange(256, device=x.device)).argmax(1, keepdim=True)
    step = (h * w - hist.gather(1, last)).div(255, rounding_mode="floor")  # all but the last bin
    safe = step.clamp_min(1)
    lut = (hist.cumsum(1) + step.div(2, rounding_mode="floor")).div(safe, rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, flat).to(torch.uint8)
    return torch.where(step > 0, out, flat.to(torch.uint8)).view(n, c, h, w)


def _colour(name: str, x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """One colour operation on the whole batch with per-image (signed) magnitudes."""
    if name == "Brightness":
        return _blend(x, torch.zeros_like(x), 1.0 + mag.double())
    if name == "Color":
        return x if x.shape[1] == 1 else _blend(x, _grey(x), 1.0 + mag.double())
    if name == "Contrast":
        mean = _grey(x).float().mean((-3, -2, -1), keepdim=True)
        return _blend(x, mean, 1.0 + mag.double())
    if name == "Sharpness":
        return _blend(x, _sharp_degenerate(x), 1.0 + mag.double())
    if name == "Posterize":
        keep = (256 - torch.pow(2, 8 - mag.int())).to(torch.uint8)  # -2^(8 - bits) as a byte
        return x & keep.view(-1, 1, 1, 1)
    if name == "Solarize":
        return torch.where(x >= mag.view(-1, 1, 1, 1), 255 - x, x)
    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    return 255 - x  # Invert


def apply_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Image i gets operation ``OPS[op[i]]`` at magnitude ``mag[i]`` (signed, as drawn)."""
    h, w = x.shape[-2:]
    geometric = cast(torch.Tensor, sum(op == OP[name] for name in GEOMETRIC)).bool()
    out = torch.where(geometric.view(-1, 1, 1, 1), _warp(x, _affine_matrices(op, mag, h, w)), x)
    for name in OPS[OP["Brightness"] :]:
        out = torch.where((op == OP[name]).view(-1, 1, 1, 1), _colour(name, x, mag), out)
    return out


def _signed(op: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each signed operation's magnitude negated with probability 1/2."""
    flip = torch.rand(op.shape, device=op.device, generator=gen) < 0.5
    signed = cast(torch.Tensor, sum(op == OP[name] for name in SIGNED)).bool()
    return torch.where(signed & flip, -mag, mag)


def autoaugment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """AutoAugment's CIFAR-10 policy: a sub-policy per image, each of its two operations applied
    with its probability (torchvision's ``AutoAugment``)."""
    n, dev = x.shape[0], x.device
    table = torch.tensor(
        [[[OP[o], p, b] for o, p, b in pair] for pair in CIFAR10_POLICY], device=dev
    )
    bins = magnitudes(10, *x.shape[-2:]).to(dev)
    chosen = table[torch.randint(len(CIFAR10_POLICY), (n,), device=dev, generator=gen)]
    for slot in range(2):
        op, prob, b = chosen[:, slot, 0].long(), chosen[:, slot, 1], chosen[:, slot, 2].long()
        applied = torch.rand(n, device=dev, generator=gen) <= prob
        op = torch.where(applied, op, OP["Identity"])
        x = apply_ops(x, op, _signed(op, bins[op, b], gen))
    return x


def randaugment(x: torch.Tensor, gen: torch.Generator, n_ops: int, magnitude: int) -> torch.Tensor:
    """RandAugment (Cubuk et al. 2020) as torchvision's: ``n_ops`` operations per image, each
    uniform over its 14, at bin ``magnitude`` of 31."""
    n, dev = x.shape[0], x.device
    bins = magnitudes(31, *x.shape[-2:]).to(dev)
    for _ in range(n_ops):
        op = torch.randint(len(RANDAUGMENT_OPS), (n,), device=dev, generator=gen)
        x = apply_ops(x, op, _signed(op, bins[op, magnitude], gen))
    return x


def cutout(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """DeVries & Taylor 2017: a length x length square zeroed in each (normalised) image, its
    centre uniform over the image and the square clipped at the borders."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n, 1), device=dev, generator=gen)
    cx = torch.randint(0, w, (n, 1), device=dev, generator=gen)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_y = (rows >= cy - length // 2) & (rows < cy + length - length // 2)
    in_x = (cols >= cx - length // 2) & (cols < cx + length - length // 2)
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)


def policy(
    name: str, ops: int | None = None, magnitude: int | None = None
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """The run's policy as ``(uint8 NCHW batch, gen) -> batch``, or None for ``none``;
    RandAugment's ``ops`` per image at ``magnitude``."""
    if name == "autoaugment":
        return autoaugment
    if name == "randaugment":
        n, m = need(ops, "randaugment_ops"), need(magnitude, "randaugment_magnitude")
        return lambda x, gen: randaugment(x, gen, n, m)
    return None
