"""Per-epoch index draws on the device, registered under their params names.

A sampler returns the whole epoch's indices in one tensor op, so the hot loop only slices it.
"""

import torch

from ltcifar.registry import Registry

SAMPLERS = Registry("sampler")


def class_weighted_draw(
    labels: torch.Tensor, class_probs: torch.Tensor, n: int, gen: torch.Generator
) -> torch.Tensor:
    """Draw n indices with replacement so that class c appears with probability class_probs[c]."""
    counts = torch.bincount(labels, minlength=class_probs.numel()).clamp_min(1)
    weights = (class_probs / counts)[labels]
    return torch.multinomial(weights, n, replacement=True, generator=gen)


@SAMPLERS.register("instance")
def instance(
    labels: torch.Tensor, num_classes: int, epoch: int, epochs: int, gen: torch.Generator
) -> torch.Tensor:
    """Every image once per epoch, in a fresh random order (plain shuffling)."""
    return torch.randperm(labels.numel(), device=labels.device, generator=gen)


@SAMPLERS.register("class_balanced")
def class_balanced(
    labels: torch.Tensor, num_classes: int, epoch: int, epochs: int, gen: torch.Generator
) -> torch.Tensor:
    """Each class equally likely per draw; an epoch has as many draws as images."""
    probs = torch.full((num_classes,), 1.0 / num_classes, device=labels.device)
    return class_weighted_draw(labels, probs, labels.numel(), gen)
