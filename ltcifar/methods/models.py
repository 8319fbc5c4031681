"""CIFAR ResNets and their plain twins (He et al. 2016, Sec. 4.2).

Depth 6n+2: a 3x3 stem with 16 channels, three stages of n basic blocks at 16/32/64 channels,
global average pooling and a linear head. A PlainNet is the identical stack without the skip
connections, so comparing the two isolates the residual connection. Global pooling makes any
input of at least 28 px work (Fashion-MNIST is 28x28x1)."""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig, need

MODELS = catalog.Registry("model", catalog.MODELS)


class PadShortcut(nn.Module):
    """Option A: subsample and zero-pad channels; parameter-free, as in the paper's CIFAR nets."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, residual: bool, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or cin != cout):
            if shortcut == "A":
                self.shortcut = PadShortcut(cout, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ReLUs and the residual sum write in place, as torchvision's ResNets do: the same
        # values, without a fresh activation per op (autograd allows it: BatchNorm's backward
        # reads its input, not its output). On a CPU these memory-bound ops rival the
        # convolutions; in place, scoring 10,000 images takes about a fifth less time.
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out += self.shortcut(x)
        return F.relu_(out)


def fp32(x: torch.Tensor) -> torch.autocast:
    """Autocast off: heads run on fp32 features, so every logit is fp32 (bf16 cosines,
    quantised before the scale, tie at the argmax)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class LinearHead(nn.Linear):
    """nn.Linear computed in fp32 under autocast; same parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fp32(x):
            return super().forward(x.float())


class CosineHead(nn.Module):
    """LDAM-DRW's NormedLinear times a scale: s * cos(feature, class weight). The scale lives
    here, not in the loss, so every reader of the logits (softmax, ECE, validation loss, post-hoc
    adjustment) sees what the loss trained: cosines in [-1, 1] cap softmax confidence."""

    def __init__(self, features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        # NormedLinear's init: uniform(-1, 1), then every class column renormalised to norm 1
        w = torch.empty(features, num_classes).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        self.weight = nn.Parameter(w)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fp32(x):
            return self.scale * (F.normalize(x.float(), dim=1) @ F.normalize(self.weight, dim=0))


def make_head(
    head: str, features: int, num_classes: int, cosine_scale: float
) -> LinearHead | CosineHead:
    """The classifier of ``head: linear | cosine``, computed in fp32."""
    if head == "cosine":
        return CosineHead(features, num_classes, cosine_scale)
    return LinearHead(features, num_classes)


def _stage(cin: int, cout: int, n: int, stride: int, residual: bool, shortcut: str) -> list:
    """n basic blocks from cin to cout channels, the first with ``stride``."""
    return [
        BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, residual, shortcut)
        for j in range(n)
    ]


def _stem(in_channels: int) -> nn.Sequential:
    """The 3x3 stem to 16 channels, its ReLU in place as the blocks' are."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
    )


def _check(depth: int, shortcut: str) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2, got {depth}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    return (depth - 2) // 6


class CifarNet(nn.Module):
    def __init__(
        self,
        depth: int,
        residual: bool,
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "A",
        head: str = "linear",
        cosine_scale: float = 30.0,
    ) -> None:
        super().__init__()
        n = _check(depth, shortcut)
        self.stem = _stem(in_channels)
        self.blocks = nn.Sequential(
            *_stage(16, 16, n, 1, residual, shortcut),
            *_stage(16, 32, n, 2, residual, shortcut),
            *_stage(32, 64, n, 2, residual, shortcut),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.fc = make_head(head, 64, num_classes, cosine_scale)
        if head == "linear":
            nn.init.kaiming_normal_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ExpertsNet(nn.Module):
    """BalPoE's CIFAR ResNet (Sanchez Aimar et al. 2023, emasa/BalPoE-CalibratedLT): the stem
    and first stage shared, each of ``experts`` its own second and third stages and head. In
    training it returns every expert's logits, (B, experts, classes), for the loss; in
    evaluation their mean, BalPoE's test-time combination."""

    def __init__(
        self,
        depth: int,
        residual: bool,
        num_classes: int,
        experts: int,
        in_channels: int = 3,
        shortcut: str = "A",
        head: str = "linear",
        cosine_scale: float = 30.0,
    ) -> None:
        super().__init__()
        n = _check(depth, shortcut)
        self.stem = _stem(in_channels)
        self.shared = nn.Sequential(*_stage(16, 16, n, 1, residual, shortcut))
        self.experts = nn.ModuleList(
            nn.Sequential(
                *_stage(16, 32, n, 2, residual, shortcut), *_stage(32, 64, n, 2, residual, shortcut)
            )
            for _ in range(experts)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.heads = nn.ModuleList(
            make_head(head, 64, num_classes, cosine_scale) for _ in range(experts)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(self.stem(x))
        z = torch.stack(
            [
                head(torch.flatten(F.adaptive_avg_pool2d(e(h), 1), 1))
                for e, head in zip(self.experts, self.heads, strict=True)
            ],
            1,
        )
        return z if self.training else z.mean(1)


def cifar_net(
    depth: int, residual: bool, num_classes: int, experts: int = 1, **options
) -> nn.Module:
    """A CIFAR ResNet or PlainNet; with ``experts`` > 1 BalPoE's (``ExpertsNet``)."""
    if experts > 1:
        return ExpertsNet(depth, residual, num_classes, experts, **options)
    return CifarNet(depth, residual, num_classes, **options)


# One registration line per model: the builder with its architecture bound.
MODELS.register("resnet20")(partial(cifar_net, 20, True))
MODELS.register("resnet32")(partial(cifar_net, 32, True))
MODELS.register("resnet44")(partial(cifar_net, 44, True))
MODELS.register("resnet56")(partial(cifar_net, 56, True))
MODELS.register("plainnet20")(partial(cifar_net, 20, False))  # He et al. 2016's plain nets
MODELS.register("plainnet56")(partial(cifar_net, 56, False))


class TorchvisionNet(nn.Module):
    """A torchvision ResNet with the run's head, for 1- or 3-channel images of any size.

    ``input_size`` > 0 upsamples on the device (e.g. 32 -> 224, the pretraining resolution);
    ``stem: cifar`` swaps the 7x7/2 conv + max-pool for a new 3x3/1 conv, to keep 32 px cheap.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int = 3,  # 1-channel images are expanded to 3 in forward
        input_size: int = 0,
        stem: str = "imagenet",
        head: str = "linear",
        cosine_scale: float = 30.0,
    ):
        super().__init__()
        import torchvision  # here, not at the top: only these models need it, and it is slow

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


MODELS.register("tv_resnet18")(partial(TorchvisionNet, "resnet18"))
MODELS.register("tv_resnet50")(partial(TorchvisionNet, "resnet50"))


def build_model(name: str, num_classes: int, in_channels: int = 3, **options: object) -> nn.Module:
    """A registered model by its params name, with the options of ``model_options``."""
    return MODELS[name](num_classes, in_channels=in_channels, **options)


def model_options(cfg: RunConfig) -> dict[str, object]:
    """The builder options of a run's config: the settings its catalogue entry reads, and the
    cosine head's scale, ``ldam_scale`` (LDAM's s, and the one scale of cosine logits whatever
    the loss)."""
    settings = {
        "shortcut": cfg.shortcut,
        "head": cfg.head,
        "input_size": cfg.input_size,
        "stem": cfg.stem,
    }
    options: dict[str, object] = {k: need(settings[k], k) for k in catalog.MODELS[cfg.model].reads}
    if cfg.head == "cosine":
        options["cosine_scale"] = need(cfg.ldam_scale, "ldam_scale")
    if cfg.experts > 1:  # BalPoE's net of experts (CIFAR nets only)
        options["experts"] = cfg.experts
    return options
