"""Per-epoch index draws on the device, registered under their params names.

A sampler returns the whole epoch's indices (as many as there are images) in one tensor op, so
the hot loop only slices it. All but ``instance`` are one rule, "class c has probability q_c",
differing only in q: uniform, proportional to sqrt(n_c), or moving from n_c/N to uniform.
"""

from collections.abc import Callable

import torch

from ltcifar import catalog
from ltcifar.registry import Registry

Sampler = Callable[[torch.Tensor, torch.Tensor, int, int, torch.Generator], torch.Tensor]
SAMPLERS = Registry("sampler", catalog.SAMPLERS)


def class_weighted_draw(
    labels: torch.Tensor,
    counts: torch.Tensor,
    class_weights: torch.Tensor,
    n: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Draw n indices with replacement so that class c appears with probability proportional
    to class_weights[c] (each of its images equally likely)."""
    per_image = (class_weights.double() / counts.clamp_min(1))[labels]
    return torch.multinomial(per_image, n, replacement=True, generator=gen)


def _by_class_probs(probs: Callable[[torch.Tensor, float], torch.Tensor]) -> Sampler:
    def draw(labels, counts, epoch, epochs, gen):
        q = probs(counts.double(), epoch / max(epochs - 1, 1))
        return class_weighted_draw(labels, counts, q, labels.numel(), gen)

    draw.__doc__ = probs.__doc__
    return draw


@SAMPLERS.register("instance")
def instance(labels, counts, epoch, epochs, gen) -> torch.Tensor:
    """Every image once per epoch, in a fresh random order (plain shuffling)."""
    return torch.randperm(labels.numel(), device=labels.device, generator=gen)


def class_balanced_probs(n: torch.Tensor, progress: float) -> torch.Tensor:
    """Uniform over classes."""
    return torch.ones_like(n)


def sqrt_probs(n: torch.Tensor, progress: float) -> torch.Tensor:
    """Square-root frequency: q_c proportional to sqrt(n_c)."""
    return n.sqrt()


def progressive_probs(n: torch.Tensor, progress: float) -> torch.Tensor:
    """Kang et al. 2020: q_c(t) = (1 - t/T) n_c/N + (t/T)/C, instance-balanced to class-balanced."""
    return (1 - progress) * n / n.sum() + progress / len(n)


SAMPLERS.register("class_balanced")(_by_class_probs(class_balanced_probs))
SAMPLERS.register("sqrt")(_by_class_probs(sqrt_probs))
SAMPLERS.register("progressive")(_by_class_probs(progressive_probs))


def sampler_for(cfg: dict, epoch: int) -> str:
    """The sampler of one epoch: ``sampler_mixup`` implies class-balanced batches, and deferred
    re-sampling (DRS) switches to class-balanced from epoch ``round(drs_from * epochs)``."""
    if cfg["mixup"] == "sampler_mixup":
        return "class_balanced"
    if cfg["drs_from"] < 1 and epoch >= round(cfg["drs_from"] * cfg["epochs"]):
        return "class_balanced"
    return cfg["sampler"]
