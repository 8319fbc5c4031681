"""Input mixing, registered under params names: each mixes a batch into images and soft targets.

Everything random is drawn once per epoch, so the hot loop launches no draws: a mixup maps the
epoch's ``Epoch`` to a per-step ``(step, x, targets) -> (x, targets)``. Coefficients come from
torch's CPU generator (seeded per run, saved in checkpoints) as floats: no host-device sync.
Mixed targets are convex combinations, so they sum to 1.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig, need

Batch = tuple[torch.Tensor, torch.Tensor]
StepMix = Callable[[int, torch.Tensor, torch.Tensor], Batch]
MIXUPS = catalog.Registry("mixup", catalog.MIXUPS)


@dataclass(frozen=True)
class Epoch:
    """What a mixup draws from at the start of an epoch."""

    steps: int
    batch_size: int
    gen: torch.Generator  # the run's device generator
    balanced_indices: Callable[[int], torch.Tensor]  # n indices, every class equally likely
    batch: Callable[[torch.Tensor], Batch]  # augmented, normalised images and one-hot targets


def betas(a: float, b: float, n: int) -> list[float]:
    """n draws of Beta(a, b) from the CPU generator, as floats (no device sync when used)."""
    return torch.distributions.Beta(torch.full((n,), a), torch.full((n,), b)).sample().tolist()


def permutations(epoch: Epoch) -> torch.Tensor:
    """One random permutation of the batch per step, (steps, batch_size), in one draw."""
    shape = (epoch.steps, epoch.batch_size)
    return torch.rand(shape, device=epoch.gen.device, generator=epoch.gen).argsort(1)


def _mix(x: torch.Tensor, t: torch.Tensor, x2: torch.Tensor, t2: torch.Tensor, lam: float) -> Batch:
    """lam * first + (1 - lam) * second, for images and targets alike."""
    return torch.lerp(x2, x, lam), torch.lerp(t2, t, lam)


@MIXUPS.register("none")
def no_mixup(cfg: RunConfig) -> Callable[[Epoch], StepMix]:
    return lambda epoch: lambda step, x, t: (x, t)


@MIXUPS.register("mixup")
def mixup(cfg: RunConfig) -> Callable[[Epoch], StepMix]:
    """Zhang et al. 2018: mix each image with another of the batch, lam ~ Beta(alpha, alpha)."""
    alpha = need(cfg.mixup_alpha, "mixup_alpha")

    def per_epoch(epoch: Epoch) -> StepMix:
        lams, perms = betas(alpha, alpha, epoch.steps), permutations(epoch)
        return lambda s, x, t: _mix(x, t, x[perms[s]], t[perms[s]], lams[s])

    return per_epoch


@MIXUPS.register("balanced_mixup")
def balanced_mixup(cfg: RunConfig) -> Callable[[Epoch], StepMix]:
    """Galdran et al. 2021: a class-balanced batch mixed in with weight lam ~ Beta(alpha, 1)."""
    alpha = need(cfg.balanced_mixup_alpha, "balanced_mixup_alpha")

    def per_epoch(epoch: Epoch) -> StepMix:
        lams = betas(alpha, 1.0, epoch.steps)
        partners = epoch.balanced_indices(epoch.steps * epoch.batch_size).view(epoch.steps, -1)
        return lambda s, x, t: _mix(*epoch.batch(partners[s]), x, t, lams[s])

    return per_epoch


@MIXUPS.register("cutmix")
def cutmix(cfg: RunConfig) -> Callable[[Epoch], StepMix]:
    """Yun et al. 2019: paste a box of another image; targets mixed by the box's exact area."""
    alpha = need(cfg.cutmix_alpha, "cutmix_alpha")

    def per_epoch(epoch: Epoch) -> StepMix:
        cuts = [(1 - lam) ** 0.5 for lam in betas(alpha, alpha, epoch.steps)]
        centres, perms = torch.rand(epoch.steps, 2).tolist(), permutations(epoch)

        def step(s: int, x: torch.Tensor, t: torch.Tensor) -> Batch:
            h, w = x.shape[-2:]
            cy, cx = int(centres[s][0] * h), int(centres[s][1] * w)
            dy, dx = int(h * cuts[s]) // 2, int(w * cuts[s]) // 2
            y1, y2, x1, x2 = max(cy - dy, 0), min(cy + dy, h), max(cx - dx, 0), min(cx + dx, w)
            x = x.clone()
            x[:, :, y1:y2, x1:x2] = x[perms[s], :, y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
            return x, torch.lerp(t[perms[s]], t, lam)

        return step

    return per_epoch
