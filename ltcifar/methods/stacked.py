"""Several seeds of one run trained as one stacked model, so one step does the work of S.

A stacked CIFAR net is the ordinary net with every layer widened S times and split into S
independent groups: convolutions with ``groups=S`` over S x channels, BatchNorm over S x C
channels (its per-channel statistics are then per seed), the option-A shortcut padding each
seed's channels, and a grouped head giving (B, S, classes) logits. Seed s sees its own batch in
channel slice s; no value ever crosses seeds. Every stacked tensor is the concatenation of the
S seeds' tensors along dim 0 under the ordinary names, so stacking is ``cat`` and splitting is
``chunk``: each seed's state_dict, and so its model file, is laid out as ``engine.train``'s.
``engine.train_stacked`` trains it; the point is small nets on a large card that one run leaves
idle (a busy CPU gains nothing).
"""

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ltcifar.errors import PipelineError
from ltcifar.methods.models import (
    CifarNet,
    CosineHead,
    LinearHead,
    PadShortcut,
)


class StackedPad(nn.Module):
    """Option-A shortcut of S seeds: subsample, then zero-pad each seed's channels alone."""

    def __init__(self, seeds: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.seeds, self.out_channels, self.stride = seeds, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        b, _, h, w = x.shape
        x = x.reshape(b, self.seeds, -1, h, w)
        extra = self.out_channels - x.shape[2]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)).reshape(b, -1, h, w)


class StackedLinearHead(nn.Module):
    """S linear heads, weight (S*K, F) and bias (S*K,), in fp32: (B, S*F) -> (B, S, K)."""

    def __init__(self, seeds: int, features: int, num_classes: int) -> None:
        super().__init__()
        self.seeds = seeds
        self.weight = nn.Parameter(torch.empty(seeds * num_classes, features))
        self.bias = nn.Parameter(torch.empty(seeds * num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.seeds
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().reshape(len(x), s, -1)
            w, b = self.weight.reshape(s, -1, x.shape[2]), self.bias.reshape(s, -1)
            return torch.einsum("bsf,skf->bsk", x, w) + b


class StackedCosineHead(nn.Module):
    """S cosine heads, weight (S*F, K), each seed's features and weights normalised alone."""

    def __init__(self, seeds: int, features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.seeds, self.scale = seeds, scale
        self.weight = nn.Parameter(torch.empty(seeds * features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.seeds
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float().reshape(len(x), s, -1), dim=2)
            w = F.normalize(self.weight.reshape(s, -1, self.weight.shape[1]), dim=1)
            return self.scale * torch.einsum("bsf,sfk->bsk", x, w)


def _stacked_module(m: nn.Module, s: int) -> nn.Module | None:
    """The S-seed twin of one leaf layer (uninitialised: the state_dict fills it), else None."""
    if isinstance(m, nn.Conv2d):
        cin, cout, bias = s * m.in_channels, s * m.out_channels, m.bias is not None
        size, stride, padding = m.kernel_size, m.stride, m.padding  # a Conv2d's: pairs
        return nn.Conv2d(cin, cout, size, stride, padding, groups=s * m.groups, bias=bias)  # type: ignore[arg-type]
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(s * m.num_features, m.eps, m.momentum)
    if isinstance(m, PadShortcut):
        return StackedPad(s, m.out_channels, m.stride)
    if isinstance(m, LinearHead):
        return StackedLinearHead(s, m.in_features, m.out_features)
    if isinstance(m, CosineHead):
        features, num_classes = m.weight.shape
        return StackedCosineHead(s, features, num_classes, m.scale)
    return None


def _swap_layers(module: nn.Module, s: int) -> None:
    for name, child in module.named_children():
        twin = _stacked_module(child, s)
        if twin is None:
            _swap_layers(child, s)
        else:
            setattr(module, name, twin)


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One stacked CifarNet holding the S given CifarNets (same architecture); its layers are
    new, made on the default device: move it with ``.to``."""
    if not all(isinstance(m, CifarNet) for m in models):
        raise PipelineError("stacked seeds support the CIFAR nets only (CifarNet)")
    stacked = copy.deepcopy(models[0])
    _swap_layers(stacked, len(models))
    stacked.load_state_dict(cat_states([m.state_dict() for m in models]))
    return stacked


def cat_states(states: list) -> Any:
    """Seed state dicts (a model's or SGD's, nested) -> the stacked one: tensors concatenated
    along dim 0; 0-dim tensors (BatchNorm's num_batches_tracked) and the rest (SGD's
    param_groups) shared, since every seed counts the same steps."""
    first = states[0]
    if isinstance(first, dict):
        return {k: cat_states([st[k] for st in states]) for k in first}
    return torch.cat(states) if torch.is_tensor(first) and first.dim() else first


def split_states(state: Any, seeds: int) -> list:
    """The inverse of ``cat_states``, as copies rather than views of the stacked storage."""
    if isinstance(state, dict):
        parts = {k: split_states(v, seeds) for k, v in state.items()}
        return [{k: p[s] for k, p in parts.items()} for s in range(seeds)]
    if torch.is_tensor(state):
        return [p.clone() for p in (state.chunk(seeds) if state.dim() else [state] * seeds)]
    return [state] * seeds


def split_state(stacked: nn.Module, seeds: int) -> list[dict]:
    """The S ordinary state_dicts of a stacked model."""
    return split_states(stacked.state_dict(), seeds)
