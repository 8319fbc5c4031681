"""Input mixing, registered under params names; each returns mixed images and soft targets."""

from collections.abc import Callable

import torch

from ltcifar.registry import Registry

MIXUPS = Registry("mixup")
MixFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@MIXUPS.register("none")
def no_mixup(cfg: dict) -> MixFn:
    def mix(
        x: torch.Tensor, targets: torch.Tensor, **_: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, targets

    return mix
