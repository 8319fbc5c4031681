"""Batched crop-and-flip on uint8 images already on the device, and training's batch (with
the heavier policies of ``autoaugment`` when a run asks for them).

One gather does both: each image gets a random window of its padded self (offsets 0..2p) and,
with probability 1/2, the window's columns reversed. Padding is never materialised; indices that
fall outside the image read a zero (``zeros``) or the mirrored pixel (``reflect``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltcifar.config.records import RunConfig, need
from ltcifar.data.autoaugment import cutout, policy
from ltcifar.data.split_data import SplitData


def _pad_index(i: torch.Tensor, size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map padded coordinates to source coordinates, and a mask of the ones inside the image."""
    inside = (i >= 0) & (i < size)
    if mode == "reflect":
        i = i.abs()
        i = torch.where(i > size - 1, 2 * (size - 1) - i, i)
    return i.clamp(0, size - 1), inside


def crop_flip(
    x: torch.Tensor, gen: torch.Generator, pad: int = 4, mode: str = "zeros"
) -> torch.Tensor:
    """Random crop with padding ``pad`` and horizontal flip of an (N, H, W, C) uint8 batch."""
    n, h, w, _ = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=gen) - pad
    ox = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=gen) - pad
    flip = torch.rand((n, 1), device=dev, generator=gen) < 0.5
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip, cols.flip(0), cols) + ox
    rows, row_in = _pad_index(oy + torch.arange(h, device=dev), h, mode)
    cols, col_in = _pad_index(cols, w, mode)
    out = x[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if mode == "zeros":
        out = out * (row_in[:, :, None] & col_in[:, None, :])[..., None]
    return out


def rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Each image of an (N, H, W, C) uint8 batch rotated about its centre by an angle drawn
    uniformly from [-degrees, degrees], nearest pixel, zeros outside: torchvision's
    ``RandomRotation(degrees)`` (BalPoE's CIFAR transform, after crop and flip), batched, with
    torchvision's own sampling grid (``_gen_affine_grid``: pixel centres, the inverse rotation
    scaled to grid_sample's [-1, 1]), so each image is what torchvision's ``rotate`` gives."""
    n, h, w, _ = x.shape
    dev = x.device
    angle = (torch.rand(n, device=dev, generator=gen) * 2 - 1) * degrees
    rad = torch.deg2rad(angle.double())  # torchvision computes its matrix in float64
    cos, sin = rad.cos().float(), rad.sin().float()
    zero = torch.zeros_like(cos)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], 1).view(n, 2, 3)
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=dev)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=dev)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=dev)])
    scale = torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = base.permute(1, 2, 0).reshape(1, h * w, 3).expand(n, -1, -1)
    grid = grid.bmm(theta.transpose(1, 2) / scale).view(n, h, w, 2)
    img = x.permute(0, 3, 1, 2).float()
    out = F.grid_sample(img, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8).permute(0, 2, 3, 1)


def to_input(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W); NHWC memory *is* channels_last."""
    x = x.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    return x if channels_last else x.contiguous()


@dataclass(frozen=True, kw_only=True)
class Augment:
    """What training's batch does to images: crop and flip with ``pad_mode`` padding (None:
    neither), a rotation within +- ``rotation`` degrees (0: none), a heavier ``policy``
    (``autoaugment.policy``), Cutout's square (0: none), and the memory layout of the result."""

    pad_mode: str | None
    channels_last: bool
    rotation: float = 0.0
    policy: str = "none"
    randaugment_ops: int | None = None
    randaugment_magnitude: int | None = None
    cutout: int = 0

    @classmethod
    def of(cls, cfg: RunConfig) -> "Augment":
        """A run's augmentation: crop and flip if it augments, its rotation, policy and Cutout."""
        return cls(
            pad_mode=need(cfg.pad_mode, "pad_mode") if cfg.augment else None,
            channels_last=cfg.channels_last,
            rotation=cfg.rotation,
            policy=cfg.augment_policy,
            randaugment_ops=cfg.randaugment_ops,
            randaugment_magnitude=cfg.randaugment_magnitude,
            cutout=cfg.cutout,
        )


def batch_of(
    data: SplitData, aug: Augment, gen: torch.Generator
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Training's batch of given indices: cropped and flipped (pad 4) when the run augments,
    rotated (``rotation``), then its ``augment_policy`` (AutoAugment, RandAugment), normalised,
    then Cutout; one-hot by indexing, as ``F.one_hot``'s label check costs two host syncs a
    step."""
    one_hot = torch.eye(data.num_classes, device=data.y.device)
    heavy = policy(aug.policy, aug.randaugment_ops, aug.randaugment_magnitude)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = data.x[idx]
        if aug.pad_mode is not None:
            xb = crop_flip(xb, gen, 4, aug.pad_mode)
        if aug.rotation > 0:
            xb = rotate(xb, aug.rotation, gen)
        if heavy is not None:
            xb = heavy(xb.permute(0, 3, 1, 2), gen).permute(0, 2, 3, 1)
        x = to_input(xb, data.mean, data.std, aug.channels_last)
        if aug.cutout:
            x = cutout(x, aug.cutout, gen)
        return x, one_hot[data.y[idx]]

    return batch
