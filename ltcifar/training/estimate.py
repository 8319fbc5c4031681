"""What a profile costs to train, before training it: every run's images, priced in minutes at
a measured throughput (``benchmarks/train_speed.py`` measures one; ``ltcifar estimate`` and the
benchmark's ``--estimate`` print this module's table).

A run's rate is the measured one divided by its cost: its model's multiply-adds on its dataset's
image size, counted with forward hooks, over the measured model's on 32x32x3, times the share of
backward its fine-tuning mode keeps. Batch-size differences are ignored, and small nets, which
launch-bound GPUs run at more than their share, are overstated there.
"""

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ltcifar.config.catalog import defaults
from ltcifar.config.params import load
from ltcifar.config.records import PretrainBackbone, RunConfig, SplitConfig
from ltcifar.config.runconfig import backbone_record
from ltcifar.config.runs import BACKBONE, backbone_config, profile_runs, resolve_run, run_record
from ltcifar.config.schema import ParamsError, did_you_mean
from ltcifar.data.lt_index import build_index
from ltcifar.errors import PipelineError
from ltcifar.methods.models import build_model, model_options

# Classes, images per class and image shape (H, W, C) of each dataset's training set.
SHAPES = {
    "cifar10": (10, 5000, (32, 32, 3)),
    "cifar100": (100, 500, (32, 32, 3)),
    "fashion_mnist": (10, 6000, (28, 28, 1)),
    "cifar10_jpeg": (10, 5000, (32, 32, 3)),  # the JPEG copy of CIFAR-10 (studies/cifar10_lt.md)
}
# ResNet-20's img/s at batch 128 on one GPU that the full profile was sized to an hour at
# (docs/speed.md), an assumption, not a measurement: the rate when none is given.
ASSUMED_IMG_S = 25_000.0
# Training cost relative to full training at equal forward multiply-adds: backward is about
# twice the forward; a frozen backbone skips its weight gradients (bn_fc) or all backward (linear).
FINETUNE_COST = {"scratch": 1.0, "full": 1.0, "bn_fc": 2 / 3, "linear": 1 / 3}


@cache
def macs(name: str, classes: int, shape: tuple[int, int, int], options: tuple = ()) -> int:
    """Multiply-adds of one forward pass of one image, counted with hooks on convs and linears
    on one CPU image. Built on the meta device (no initialisation), then given uninitialised CPU
    storage: the heads' fp32 region (``torch.autocast(enabled=False)``) refuses the meta device,
    and only the output shapes matter here. A cosine head is no Linear and is not counted
    (features x classes, negligible)."""
    with torch.device("meta"):
        model = build_model(name, classes, shape[2], **dict(options)).eval()
    model = model.to_empty(device="cpu")
    total = [0]

    def hook(m: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(m, torch.nn.Conv2d):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total[0] += out.numel() * k
        elif isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, shape[2], shape[0], shape[1]))
    return total[0]


def base_macs(model: str) -> int:
    """The measured model's multiply-adds: the benchmark's (linear head, the recipe's options)
    on a 10-class 32x32x3 image."""
    recipe = {**defaults(), "name": "base", "split": "", "model": model, "head": "linear"}
    options = model_options(RunConfig(**recipe))
    return macs(model, 10, (32, 32, 3), tuple(options.items()))


def trained_runs(params: dict, profile: str) -> list[tuple[str, RunConfig, SplitConfig]]:
    """(name, resolved config, split spec) of everything the profile trains: the backbone when
    the profile pretrains it (``weights: pretrain``; ImageNet weights are only fetched), then
    the runs it trains (all, unless it names them), transfer runs with their resolved config
    (the backbone's model and fine-tuning recipe)."""
    prof = params["profiles"][profile]
    out = []
    if prof["backbone"] is not None:
        bb = backbone_record(backbone_config(params, profile), f"profiles.{profile}.backbone")
        if isinstance(bb, PretrainBackbone):
            out.append((BACKBONE, bb.run, bb.split_spec))
    for name in profile_runs(params, profile):
        run = run_record(resolve_run(params, name, profile))
        out.append((name, run, SplitConfig(**prof["splits"][run.split])))
    return out


def training_images(cfg: RunConfig, spec: SplitConfig) -> int:
    """Training images of one epoch on the split ``spec`` (every draw has the same counts)."""
    if spec.dataset not in SHAPES:
        raise PipelineError(
            f"the estimate knows the training sets of {', '.join(SHAPES)}, not "
            f"{spec.dataset!r} (split {cfg.split!r})"
        )
    classes, per_class, _ = SHAPES[spec.dataset]
    labels = np.repeat(np.arange(classes), per_class)
    seed = (spec.draws or [0])[0] if spec.seed is None else spec.seed
    one = replace(spec, seed=seed, draws=None)
    return build_index(cfg.split, one, labels, [str(c) for c in range(classes)])["total_train"]


def estimate(
    path: str | Path, profile: str, img_s: float, base: str = "resnet20", note: str = ""
) -> list[str]:
    """The table of minutes per run of ``profile`` in the params file ``path`` at ``img_s``
    images a second of ``base`` on 32x32x3 (``note``: how that rate was had); its last line
    ``ESTIMATE total_images=.. total_minutes=..``."""
    params = load(path)
    if profile not in params["profiles"]:
        raise ParamsError(
            f"profile {profile!r} is not in {path}; choose one of: {', '.join(params['profiles'])}"
            + did_you_mean(profile, params["profiles"])
        )
    lines = [
        f"estimate for {path} (profile {profile}) at {img_s:.0f} img/s of {base} on 32x32x3"
        f"{note}. Each run's rate is divided by its cost x = (its model's multiply-adds on its "
        f"dataset's image size, counted with forward hooks) / ({base}'s on 32x32x3), times 2/3 "
        "for finetune bn_fc and 1/3 for linear; batch-size differences are ignored. nets: seeds "
        "x long-tailed draws. Row backbone: the backbone stage's pretraining.",
        f"{'run':<22} {'split':<12} {'model':<11} {'ep':>4} {'nets':>5} {'img/ep':>7} "
        f"{'cost x':>6} {'img/s':>8} {'min':>8}",
    ]
    total_img, total_min = 0, 0.0
    for name, cfg, spec in trained_runs(params, profile):
        classes, _, shape = SHAPES[spec.dataset]
        n = training_images(cfg, spec)
        options = tuple(model_options(cfg).items())
        cost = macs(cfg.model, classes, shape, options) / base_macs(base)
        cost *= FINETUNE_COST[cfg.finetune]
        models = len(cfg.seeds) * len(spec.draws or [None])
        images = cfg.epochs * models * n
        minutes = images / (img_s / cost) / 60
        total_img, total_min = total_img + images, total_min + minutes
        lines.append(
            f"{name:<22} {cfg.split:<12} {cfg.model:<11} {cfg.epochs:>4} "
            f"{models:>5} {n:>7} {cost:>6.2f} {img_s / cost:>8.0f} {minutes:>8.1f}"
        )
    return [
        *lines,
        f"total: {total_img} training images, {total_min:.1f} min ({total_min / 60:.2f} h)",
        f"ESTIMATE total_images={total_img} total_minutes={total_min:.2f}",
    ]
