"""The optimiser and learning-rate schedule every training loop shares (first and second stage)."""

import math
from collections.abc import Callable

import torch

from ltcifar.device import sgd_kernel
from ltcifar.methods.transfer import param_groups


def lr_factor(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the base lr: linear warm-up, then multi-step or cosine decay.

    ``warmup: step`` ramps every step; ``warmup: epoch`` holds (e + 1) / warmup_epochs through
    epoch e, as LDAM-DRW's ``adjust_learning_rate``. Multi-step: gamma^(milestones passed)."""
    warm, total = cfg["warmup_epochs"] * steps_per_epoch, cfg["epochs"] * steps_per_epoch
    multistep = cfg["schedule"] == "multistep"
    milestones = [m * steps_per_epoch for m in cfg["milestones"]] if multistep else []

    def factor(step: int) -> float:
        if step < warm:
            if cfg["warmup"] == "epoch":
                return (step // steps_per_epoch + 1) / cfg["warmup_epochs"]
            return (step + 1) / warm
        if not multistep:
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
        return cfg["gamma"] ** sum(step >= m for m in milestones)

    return factor


def scaled_lr(cfg: dict) -> float:
    """The base lr for the global batch: ``lr_scaling: linear`` scales ``lr`` by batch_size /
    lr_base_batch (Goyal et al. 2017), ``sqrt`` by its square root (Hoffer et al. 2017)."""
    if cfg["lr_scaling"] == "none":
        return cfg["lr"]
    ratio = cfg["batch_size"] / cfg["lr_base_batch"]
    return cfg["lr"] * (ratio if cfg["lr_scaling"] == "linear" else ratio**0.5)


def make_optimizer(model: torch.nn.Module, cfg: dict, device: torch.device) -> torch.optim.SGD:
    """The run's SGD over its trainable parameters (``transfer.param_groups``) at ``scaled_lr``."""
    cfg = {**cfg, "lr": scaled_lr(cfg)}
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nesterov"],
        weight_decay=cfg["weight_decay"],
        **sgd_kernel(device.type),
    )
