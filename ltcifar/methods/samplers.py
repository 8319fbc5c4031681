"""Per-epoch index draws on the device, registered under their params names.

A sampler returns the whole epoch's indices (as many as there are images) in one tensor op, so
the hot loop only slices it. All but ``instance`` are one rule, "class c has probability q_c",
differing only in q: uniform, proportional to sqrt(n_c), or moving from n_c/N to uniform.
"""

import torch

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig

SAMPLERS = catalog.Registry("sampler", catalog.SAMPLERS)


def class_weighted_draw(
    labels: torch.Tensor, counts: torch.Tensor, class_weights: torch.Tensor, n: int, gen
) -> torch.Tensor:
    """n indices with replacement: class c in proportion to class_weights[c], images uniformly."""
    per_image = (class_weights.double() / counts.clamp_min(1))[labels]
    return torch.multinomial(per_image, n, replacement=True, generator=gen)


@SAMPLERS.register("instance")
def instance(labels, counts, epoch, epochs, gen) -> torch.Tensor:
    """Every image once per epoch, in a fresh random order (plain shuffling)."""
    return torch.randperm(labels.numel(), device=labels.device, generator=gen)


def balanced_draw(labels: torch.Tensor, counts: torch.Tensor, n: int, gen) -> torch.Tensor:
    """n indices with every class equally likely (also Balanced-MixUp's partner batches)."""
    return class_weighted_draw(labels, counts, torch.ones_like(counts), n, gen)


@SAMPLERS.register("class_balanced")
def class_balanced(labels, counts, epoch, epochs, gen) -> torch.Tensor:
    """Uniform over classes."""
    return balanced_draw(labels, counts, labels.numel(), gen)


@SAMPLERS.register("sqrt")
def sqrt(labels, counts, epoch, epochs, gen) -> torch.Tensor:
    """Square-root frequency: q_c proportional to sqrt(n_c)."""
    return class_weighted_draw(labels, counts, counts.double().sqrt(), labels.numel(), gen)


@SAMPLERS.register("progressive")
def progressive(labels, counts, epoch, epochs, gen) -> torch.Tensor:
    """Kang et al. 2020: q_c = (1 - t) n_c/N + t/C with t = epoch/(T - 1), instance-balanced
    in the first epoch and class-balanced in the last, as their ClassPrioritySampler's
    ``np.linspace(0, 1, epochs)[epoch]`` (and Balanced-MixUp's ``ep / (n_eps - 1)``)."""
    n, t = counts.double(), epoch / max(epochs - 1, 1)
    q = (1 - t) * n / n.sum() + t / len(n)
    return class_weighted_draw(labels, counts, q, labels.numel(), gen)


def sampler_for(cfg: RunConfig, epoch: int) -> str:
    """Deferred re-sampling (DRS): class-balanced from epoch ``round(drs_from * epochs)`` on."""
    if cfg.drs_from < 1 and epoch >= round(cfg.drs_from * cfg.epochs):
        return "class_balanced"
    return cfg.sampler
