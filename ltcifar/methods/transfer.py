"""Transfer learning: torchvision backbones, their pretrained weights, and the fine-tuning modes.

Weights are data: a run loads them from ``models/backbone/backbone.pt``, never the network. The
``backbone`` stage writes ImageNet weights fetched with a hash check there, or a network it
pretrains on another split (``weights: pretrain``: the transfer path offline, with real weights).

Modes (``finetune``): ``scratch`` trains all from random weights, ``linear`` only the new head,
``bn_fc`` also BatchNorm's affine parameters, ``full`` all; frozen modes keep BatchNorm's running
statistics (eval mode).
"""

from pathlib import Path

import torch
from torch import nn

from ltcifar.config.records import RunConfig, need
from ltcifar.errors import PipelineError
from ltcifar.methods.models import TorchvisionNet

BACKBONE_FILE = Path("models/backbone/backbone.pt")


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Modules that are new in a transferred model: the classifier, and a CIFAR stem."""
    if isinstance(model, TorchvisionNet):
        stem = ("net.conv1.",) if isinstance(model.net.maxpool, nn.Identity) else ()
        return ("net.fc.", *stem)
    return ("fc.",)


def head_names(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(head_prefixes(model))}


def bn_names(model: nn.Module) -> set[str]:
    return {
        f"{mod_name}.{p}" if mod_name else p
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for p, _ in mod.named_parameters(recurse=False)
    }


def trainable_names(model: nn.Module, mode: str) -> set[str]:
    if mode in ("scratch", "full"):
        return {n for n, _ in model.named_parameters()}
    return head_names(model) | (bn_names(model) if mode == "bn_fc" else set())


def apply_mode(model: nn.Module, mode: str) -> None:
    """Freeze what the mode does not train (requires_grad=False)."""
    keep = trainable_names(model, mode)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)


def train_mode(model: nn.Module, mode: str) -> None:
    """model.train(), except that frozen modes keep BatchNorm's running statistics fixed."""
    model.train()
    if mode not in ("scratch", "full"):
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def param_groups(model: nn.Module, cfg: RunConfig) -> list[dict]:
    """Trainable parameters in two groups: backbone at lr * lr_backbone_factor, head at lr."""
    head = head_names(model) if cfg.finetune != "scratch" else set()
    backbone_lr = cfg.lr * (need(cfg.lr_backbone_factor, "lr_backbone_factor") if head else 1.0)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if n not in head], "lr": backbone_lr},
        {"params": [p for n, p in trainable if n in head], "lr": cfg.lr},
    ]
    return [g for g in groups if g["params"]]


def load_backbone(path: Path = BACKBONE_FILE) -> dict:
    """The backbone stage's weights, in this project's key space (``net.*`` for torchvision)."""
    if not path.exists():
        raise PipelineError(f"backbone weights {path} not found; run `dvc repro backbone`")
    return torch.load(path, map_location="cpu", weights_only=True)


def init_from_backbone(model: nn.Module, state: dict, where: str = str(BACKBONE_FILE)) -> None:
    """Load the backbone's weights into ``model``, all but its new head. Older torchvision files
    lack BatchNorm's ``num_batches_tracked`` (torchvision allows it): the model keeps its own."""
    heads = head_prefixes(model)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    wanted = [k for k in own if k in state or not k.endswith(".num_batches_tracked")]
    bad = [k for k in wanted if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise PipelineError(f"{where} does not fit this model: no matching {bad[0]}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
