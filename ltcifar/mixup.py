"""Input mixing, registered under params names: each returns mixed images and soft targets.

A mix function gets the normalised batch, its one-hot targets, the device generator, and
``balanced_batch(n)``, which draws a fresh class-balanced, augmented batch from the same split.
Mixing coefficients come from torch's CPU generator (seeded per run, saved in checkpoints), so
no host-device sync is needed. Mixed targets are convex combinations, so they sum to 1.
"""

from collections.abc import Callable

import torch

from ltcifar import catalog
from ltcifar.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
MixFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator, Callable[[int], Batch]], Batch]
MIXUPS = Registry("mixup", catalog.MIXUPS)


def beta(a: float, b: float) -> float:
    return float(torch.distributions.Beta(a, b).sample())


def _mix(x: torch.Tensor, t: torch.Tensor, x2: torch.Tensor, t2: torch.Tensor, lam: float) -> Batch:
    """lam * first + (1 - lam) * second, for images and targets alike."""
    return torch.lerp(x2, x, lam), torch.lerp(t2, t, lam)


@MIXUPS.register("none")
def no_mixup(cfg: dict) -> MixFn:
    return lambda x, t, gen, balanced_batch: (x, t)


@MIXUPS.register("mixup")
def mixup(cfg: dict) -> MixFn:
    """Zhang et al. 2018: mix each image with another of the batch, lam ~ Beta(alpha, alpha)."""
    alpha = cfg["mixup_alpha"]

    def mix(x, t, gen, balanced_batch):
        perm = torch.randperm(len(x), device=x.device, generator=gen)
        return _mix(x, t, x[perm], t[perm], beta(alpha, alpha))

    return mix


@MIXUPS.register("sampler_mixup")
def sampler_mixup(cfg: dict) -> MixFn:
    """The seed study's variant: ordinary mixup on batches from the class-balanced sampler.

    The engine swaps in the class-balanced sampler for this mixup (see ``methods.sampler_for``).
    """
    return mixup(cfg)


@MIXUPS.register("balanced_mixup")
def balanced_mixup(cfg: dict) -> MixFn:
    """Galdran et al. 2021: the instance-sampled batch mixed with a class-balanced batch,
    lam ~ Beta(alpha, 1), the balanced batch weighted by lam (small for alpha ~ 0.2)."""
    alpha = cfg["balanced_mixup_alpha"]

    def mix(x, t, gen, balanced_batch):
        xb, tb = balanced_batch(len(x))
        return _mix(xb, tb, x, t, beta(alpha, 1.0))

    return mix


@MIXUPS.register("cutmix")
def cutmix(cfg: dict) -> MixFn:
    """Yun et al. 2019: paste a box of another image; targets mixed by the box's exact area."""
    alpha = cfg["cutmix_alpha"]

    def mix(x, t, gen, balanced_batch):
        h, w = x.shape[-2:]
        cut = (1 - beta(alpha, alpha)) ** 0.5
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
        x1, x2 = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
        perm = torch.randperm(len(x), device=x.device, generator=gen)
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
        lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
        return x, torch.lerp(t[perm], t, lam)

    return mix
