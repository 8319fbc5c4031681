"""Losses on soft targets, registered under their params names.

Every loss takes ``(logits, targets)`` with ``targets`` a (B, C) probability matrix, so mixup's
soft targets compose with every loss. Prior-based losses (Balanced Softmax) act on the logits,
never on the targets, which is what keeps them correct under mixup.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ltcifar.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = Registry("loss")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c t_c log softmax(z)_c, computed in fp32 for stability."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


@LOSSES.register("cross_entropy")
def cross_entropy(counts: torch.Tensor, cfg: dict) -> LossFn:
    eps = cfg["label_smoothing"]

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, targets * (1 - eps) + eps / targets.shape[1])

    return loss


@LOSSES.register("balanced_softmax")
def balanced_softmax(counts: torch.Tensor, cfg: dict) -> LossFn:
    """Ren et al. 2020: softmax over z + log n_c, i.e. CE on logits plus the log class prior."""
    log_prior = torch.log(counts.float() / counts.sum())

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits.float() + log_prior, targets)

    return loss
