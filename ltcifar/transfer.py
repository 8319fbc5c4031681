"""Transfer learning: torchvision backbones, their pretrained weights, and the fine-tuning modes.

Weights are data: the `download_weights` stage fetches them with a hash check into
``models/pretrained/``, and a run loads them from there, never from the network. A run can also
start from a checkpoint of this pipeline (``backbone.source: run``), which makes the whole
transfer path testable offline with real learned weights.

Modes: ``linear`` trains only the new head; ``bn_fc`` also BatchNorm's affine parameters;
``full`` everything. In the frozen modes BatchNorm keeps its running statistics (eval mode).
"""

from pathlib import Path
from urllib.parse import urlsplit

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ltcifar.errors import PipelineError
from ltcifar.models import MODELS, make_head

WEIGHTS_DIR = Path("models/pretrained")


class TorchvisionNet(nn.Module):
    """A torchvision ResNet with a new head, for 1- or 3-channel images of any size.

    ``input_size`` > 0 upsamples on the device (e.g. 32 -> 224, the pretraining resolution);
    ``stem: cifar`` swaps the 7x7/2 conv + max-pool for a new 3x3/1 conv, to keep 32 px cheap.
    The head is the run's ``head`` (linear or scaled cosine, in fp32), as for the CIFAR nets.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        input_size: int = 0,
        stem: str = "imagenet",
        head: str = "linear",
        cosine_scale: float = 30.0,
    ):
        super().__init__()
        self.net = getattr(torchvision.models, arch)(weights=None)
        if stem == "cifar":
            self.net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.net.maxpool = nn.Identity()
        self.net.fc = make_head(head, self.net.fc.in_features, num_classes, cosine_scale)
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.net(x)


def _tv_builder(arch: str):
    def build(
        num_classes: int,
        in_channels: int = 3,
        input_size: int = 0,
        stem: str = "imagenet",
        head: str = "linear",
        cosine_scale: float = 30.0,
        **_: object,
    ) -> TorchvisionNet:
        return TorchvisionNet(arch, num_classes, input_size, stem, head, cosine_scale)

    return build


for _arch in ("resnet18", "resnet50"):
    MODELS.register(f"tv_{_arch}")(_tv_builder(_arch))


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
    if mode == "full":
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
    if mode != "full":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def param_groups(model: nn.Module, cfg: dict) -> list[dict]:
    """Trainable parameters in two groups: backbone at lr * lr_backbone_factor, head at lr."""
    head = head_names(model) if cfg["init"] == "pretrained" else set()
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and n not in head],
            "lr": cfg["lr"] * (cfg["lr_backbone_factor"] if head else 1.0),
        },
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and n in head],
            "lr": cfg["lr"],
        },
    ]
    return [g for g in groups if g["params"]]


def weights_file(sources: list[str]) -> Path:
    """Where the download_weights stage puts verified weights: the official file name (the first
    source's), which carries torchvision's hash prefix."""
    if not sources:
        raise PipelineError("pretrained.<arch>.sources is empty; give the weights' URL or path")
    return WEIGHTS_DIR / urlsplit(sources[0]).path.rstrip("/").rsplit("/", 1)[-1]


def load_pretrained(model: nn.Module, cfg: dict, seed: int) -> None:
    """Load the backbone's weights into ``model`` (all but its new head)."""
    source = cfg["backbone"]
    if source["source"] == "imagenet":
        path = weights_file(source["sources"])
        if not path.exists():
            raise PipelineError(
                f"pretrained weights {path} not found (from {', '.join(source['sources'])}); "
                f"run `dvc repro download_weights`, or set pretrained.{source['arch']}.sources "
                "to a local copy"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {f"net.{k}": v for k, v in state.items()}
    else:
        path = Path("models") / source["run"] / f"seed{seed}.pt"
        if not path.exists():
            path = Path("models") / source["run"] / "seed0.pt"
        if not path.exists():
            raise PipelineError(
                f"backbone checkpoint {path} not found; train run {source['run']!r} first "
                "(profiles.<profile>.backbone.run)"
            )
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    heads = head_prefixes(model)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise PipelineError(f"{path} does not fit model {cfg['model']}: no matching {bad[0]}")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
