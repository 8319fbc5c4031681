"""Batched crop-and-flip on uint8 images already on the device, and training's batch (with
the heavier policies of ``autoaugment`` when a run asks for them).

One gather does both: each image gets a random window of its padded self (offsets 0..2p) and,
with probability 1/2, the window's columns reversed. Padding is never materialised; indices that
fall outside the image read a zero (``zeros``) or the mirrored pixel (``reflect``).
"""

from collections.abc import Callable

import torch

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


def to_input(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W); NHWC memory *is* channels_last."""
    x = x.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    return x if channels_last else x.contiguous()


def batch_of(
    data: SplitData, cfg: dict, gen: torch.Generator
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Training's batch of given indices: cropped and flipped (pad 4) when the run augments, then
    its ``augment_policy`` (AutoAugment, RandAugment), normalised, then Cutout; one-hot by
    indexing, as ``F.one_hot``'s label check costs two host syncs a step."""
    one_hot = torch.eye(data.num_classes, device=data.y.device)
    heavy = policy(cfg["augment_policy"], cfg)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = data.x[idx]
        if cfg["augment"]:
            xb = crop_flip(xb, gen, 4, cfg["pad_mode"])
        if heavy is not None:
            xb = heavy(xb.permute(0, 3, 1, 2), gen).permute(0, 2, 3, 1)
        x = to_input(xb, data.mean, data.std, cfg["channels_last"])
        if cfg["cutout"]:
            x = cutout(x, cfg["cutout"], gen)
        return x, one_hot[data.y[idx]]

    return batch
