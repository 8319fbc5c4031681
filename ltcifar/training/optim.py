"""The optimiser and learning-rate schedule every training loop shares (first and second stage)."""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ltcifar.config.records import RunConfig, need
from ltcifar.device import sgd_kernel
from ltcifar.methods.transfer import param_groups


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """What ``lr_factor`` reads: a run's schedule (``of``), or a second stage's own. ``warmup``
    only with warm-up epochs, ``milestones`` and ``gamma`` only for ``multistep``."""

    epochs: int
    schedule: str
    warmup_epochs: int = 0
    warmup: str | None = None
    milestones: list[int] | None = None
    gamma: float | None = None

    @classmethod
    def of(cls, cfg: RunConfig) -> "Schedule":
        return cls(
            epochs=cfg.epochs,
            schedule=cfg.schedule,
            warmup_epochs=cfg.warmup_epochs,
            warmup=cfg.warmup,
            milestones=cfg.milestones,
            gamma=cfg.gamma,
        )


def lr_factor(s: Schedule, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the base lr: linear warm-up, then multi-step or cosine decay.

    ``warmup: step`` ramps every step; ``warmup: epoch`` holds (e + 1) / warmup_epochs through
    epoch e, as LDAM-DRW's ``adjust_learning_rate``. Multi-step: gamma^(milestones passed)."""
    warm, total = s.warmup_epochs * steps_per_epoch, s.epochs * steps_per_epoch
    multistep = s.schedule == "multistep"
    milestones = need(s.milestones, "milestones") if multistep else []
    starts = [m * steps_per_epoch for m in milestones]
    by_epoch = warm > 0 and need(s.warmup, "warmup") == "epoch"
    gamma = need(s.gamma, "gamma") if multistep else 1.0

    def factor(step: int) -> float:
        if step < warm:
            if by_epoch:
                return (step // steps_per_epoch + 1) / s.warmup_epochs
            return (step + 1) / warm
        if not multistep:
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
        return gamma ** sum(step >= m for m in starts)

    return factor


def scaled_lr(cfg: RunConfig) -> float:
    """The base lr for the global batch: ``lr_scaling: linear`` scales ``lr`` by batch_size /
    lr_base_batch (Goyal et al. 2017), ``sqrt`` by its square root (Hoffer et al. 2017)."""
    if cfg.lr_scaling == "none":
        return cfg.lr
    ratio = cfg.batch_size / need(cfg.lr_base_batch, "lr_base_batch")
    return cfg.lr * (ratio if cfg.lr_scaling == "linear" else ratio**0.5)


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.SGD:
    """The run's SGD over its trainable parameters (``transfer.param_groups``) at ``scaled_lr``."""
    cfg = replace(cfg, lr=scaled_lr(cfg))
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        **sgd_kernel(device.type),
    )
