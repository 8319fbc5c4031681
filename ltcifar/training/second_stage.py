"""The decoupled second stage: a finished run's classifier re-balanced, its backbone frozen.

Kang et al. 2020 ("Decoupling representation and classifier"): a network trained on the
long-tailed set learns good features and a biased classifier, and fixing the classifier alone
recovers the tail, by re-training it on class-balanced batches (``crt``), rescaling its weight
norms (``tau_norm``) or learning one scale per class (``lws``). Alshammari et al. 2022 ("weight
balancing") fine-tune it with a class-balanced loss, weight decay and a max-norm constraint
(``maxnorm``). Each method changes only the linear head, in place; the backbone runs in eval mode
under no_grad (weights and BatchNorm statistics untouched) on augmented batches drawn as the
first stage drew them. Nothing reads the test set: tau is chosen on the validation images.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ltcifar.config import catalog
from ltcifar.config.records import SecondConfig, need
from ltcifar.data.augment import Augment, batch_of
from ltcifar.data.split_data import SplitData
from ltcifar.device import sgd_kernel
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import Scoring, balanced_recall, choose_posthoc_tau, predict
from ltcifar.methods.losses import LossFn, class_weights, log_prior, mean_loss, smoothed_ce
from ltcifar.methods.models import CifarNet, TorchvisionNet
from ltcifar.methods.samplers import SAMPLERS
from ltcifar.training.optim import Schedule, lr_factor

SECOND_STAGES = catalog.Registry("second stage", catalog.SECOND_STAGES)
Logits = Callable[[torch.Tensor], torch.Tensor]


def head_owner(model: nn.Module) -> nn.Module:
    """The module whose ``fc`` is the model's head: a CIFAR net, or a torchvision net's ``net``."""
    return model if isinstance(model, CifarNet) else cast(TorchvisionNet, model).net


def classifier(model: nn.Module) -> nn.Linear:
    """The model's linear head (CIFAR nets: ``fc``; torchvision nets: ``net.fc``)."""
    head = head_owner(model).fc
    if not isinstance(head, nn.Linear):
        kind = type(head).__name__
        raise PipelineError(f"the second stage re-balances a linear classifier, not a {kind}")
    return head


@contextmanager
def headless(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its head swapped for the identity, so it returns the head's input."""
    owner = head_owner(model)
    head = owner.fc
    owner.fc = nn.Identity()
    try:
        yield model
    finally:
        owner.fc = head


def fp32_outputs(
    model: nn.Module, x: torch.Tensor, data: SplitData, cfg: SecondConfig
) -> torch.Tensor:
    """The model's fp32 outputs of uint8 images (no augmentation, no post-hoc adjustment): a
    second stage fits or tunes on them, so they are computed in full precision on any device."""
    how = Scoring(cfg.eval_batch_size, cfg.channels_last, precision="fp32")
    return predict(model, x, data.mean, data.std, how)


def features(model: nn.Module, x: torch.Tensor, data: SplitData, cfg: SecondConfig) -> torch.Tensor:
    """fp32 features of uint8 images: what the head reads."""
    with headless(model) as net:
        return fp32_outputs(net, x, data, cfg)


def fit(
    model: nn.Module,
    data: SplitData,
    cfg: SecondConfig,
    params: list[torch.Tensor],
    logits: Logits,
    gen: torch.Generator,
    after_epoch: Callable[[], None] = lambda: None,
) -> None:
    """SGD on ``params`` alone with the method's sampler and loss (``METHOD_SAMPLERS``,
    ``METHOD_LOSSES``): ``logits`` of the frozen
    backbone's features of batches augmented as in the first stage; per-step cosine lr to 0.
    ``bn_stats: update`` runs the backbone in train mode, as both reference codes do, so
    BatchNorm normalises with the re-balanced batches' statistics and re-estimates its running
    ones (its weights stay frozen); ``frozen`` keeps eval mode: the backbone is bit-identical."""
    model.train(need(cfg.bn_stats, "bn_stats") == "update")
    bs = min(need(cfg.batch_size, "batch_size"), len(data.y))
    pad_mode = need(cfg.pad_mode, "pad_mode") if cfg.augment else None
    plain = Augment(pad_mode=pad_mode, channels_last=cfg.channels_last)  # crop and flip only
    steps, batch = len(data.y) // bs, batch_of(data, plain, gen)
    opt = torch.optim.SGD(
        params,
        lr=need(cfg.lr, "lr"),
        momentum=need(cfg.momentum, "momentum"),
        weight_decay=need(cfg.weight_decay, "weight_decay"),
        **sgd_kernel(data.y.device.type),
    )
    epochs = need(cfg.epochs, "epochs")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_factor(Schedule(epochs=epochs, schedule="cosine"), steps)
    )
    loss_fn, sampler = METHOD_LOSSES[cfg.method](cfg, data.counts), METHOD_SAMPLERS[cfg.method]
    with headless(model) as net:  # ``logits`` holds the head itself
        for epoch in range(epochs):
            order = SAMPLERS[sampler](data.y, data.counts, epoch, epochs, gen)
            for s in range(steps):
                x, targets = batch(order[s * bs : (s + 1) * bs])
                with torch.no_grad():
                    f = net(x).float()
                loss = loss_fn(logits(f), targets, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            after_epoch()
    model.eval()


@SECOND_STAGES.register("crt")
def crt(model: nn.Module, data: SplitData, cfg: SecondConfig, gen: torch.Generator) -> dict:
    """Classifier re-training: the head re-initialised, trained with CE on balanced batches."""
    head = classifier(model)
    head.reset_parameters()
    fit(model, data, cfg, [head.weight, head.bias], head, gen)
    return {}


@SECOND_STAGES.register("lws")
def lws(model: nn.Module, data: SplitData, cfg: SecondConfig, gen: torch.Generator) -> dict:
    """Learnable weight scaling: one scale per class on the logits, trained on class-balanced
    batches with the head fixed, then folded into the head (f_c (w_c x + b_c))."""
    head = classifier(model)
    scales = torch.ones(data.num_classes, device=head.weight.device, requires_grad=True)
    head.requires_grad_(False)
    fit(model, data, cfg, [scales], lambda f: head(f) * scales, gen)
    with torch.no_grad():
        head.weight.mul_(scales[:, None])
        head.bias.mul_(scales)
    head.requires_grad_(True)
    scales = scales.detach()
    return {"lws_scale_min": float(scales.min()), "lws_scale_max": float(scales.max())}


def tau_normalised(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """w_c / ||w_c||^tau for every class c (tau = 0: unchanged, 1: unit norms)."""
    return weight / weight.norm(dim=1, keepdim=True) ** tau


@SECOND_STAGES.register("tau_norm")
def tau_norm(model: nn.Module, data: SplitData, cfg: SecondConfig, gen: torch.Generator) -> dict:
    """tau-normalisation: scores f . w_c / ||w_c||^tau with no bias, as Kang et al.'s
    ``tau_norm.py`` scores them (it loads the first stage's bias and never adds it: kept, the
    bias's head-class favour would outweigh the shrunken weights). tau from ``tau_grid`` by the
    best mean per-class recall on the validation images; the first in grid order on ties."""
    if len(data.y_val) == 0:
        raise PipelineError("tau_norm chooses tau on validation images; the split has none")
    head = classifier(model)
    feats, weight = features(model, data.x_val, data, cfg), head.weight.detach().clone()

    def score(tau: float) -> float:
        pred = (feats @ tau_normalised(weight, tau).T).argmax(1)
        return balanced_recall(pred, data.y_val)

    best = max(need(cfg.tau_grid, "tau_grid"), key=score)  # the first in grid order on ties
    with torch.no_grad():
        head.weight.copy_(tau_normalised(weight, best))
        head.bias.zero_()
    return {"tau": best}


@SECOND_STAGES.register("posthoc_la")
def posthoc_la(model: nn.Module, data: SplitData, cfg: SecondConfig, gen: torch.Generator) -> dict:
    """Menon et al. 2021's post-hoc logit adjustment, z - tau log pi, folded into the linear
    head's bias (b_c - tau log pi_c): the model then predicts the adjusted scores itself. tau
    from ``tau_grid`` by the best mean per-class recall on the validation images. The same as
    a run's ``posthoc_tau_grid``, without training the network again."""
    if len(data.y_val) == 0:
        raise PipelineError("posthoc_la chooses tau on validation images; the split has none")
    head = classifier(model)
    raw = fp32_outputs(model, data.x_val, data, cfg)
    best = choose_posthoc_tau(raw, data.y_val, data.counts, need(cfg.tau_grid, "tau_grid"))
    with torch.no_grad():
        head.bias.sub_(best * log_prior(data.counts).to(head.bias.device))
    return {"tau": best}


def max_norm_threshold(weight: torch.Tensor, thresh: float) -> float:
    """Weight balancing's threshold: min + thresh x (max - min) of the class weights' norms."""
    norms = weight.norm(dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


def project_max_norm(weight: torch.Tensor, limit: float) -> None:
    """Projected gradient descent: every class weight whose norm exceeds ``limit`` scaled back."""
    with torch.no_grad():
        weight.mul_((limit / weight.norm(dim=1, keepdim=True)).clamp(max=1.0))


@SECOND_STAGES.register("maxnorm")
def maxnorm(model: nn.Module, data: SplitData, cfg: SecondConfig, gen: torch.Generator) -> dict:
    """Weight balancing's second stage as its authors ran it (LTR-weight-balancing, demo 2):
    the head (kept, not re-initialised) fine-tuned on instance-sampled batches with their
    class-balanced loss (``cb_softmax_bce``), weight decay and a max-norm constraint on each
    class weight, projected once per epoch after its steps (their ``pgdFunc.PGD`` call); the
    limit, min + max_norm x (max - min) of the starting class-weight norms, is set before."""
    head = classifier(model)
    limit = max_norm_threshold(head.weight.detach(), need(cfg.max_norm, "max_norm"))
    project = lambda: project_max_norm(head.weight, limit)  # noqa: E731
    fit(model, data, cfg, [head.weight, head.bias], head, gen, project)
    return {"max_norm_limit": limit}


def cb_softmax_bce(cfg: SecondConfig, counts: torch.Tensor) -> LossFn:
    """The weight-balancing code's class-balanced loss (``CB_loss``, ``loss_type='softmax'``):
    binary cross-entropy of softmax probabilities against one-hot targets, each sample weighted
    by its class's effective-number weight (Cui et al. 2019; the weights sum to C), averaged
    over batch x classes. Its gradient is about C times smaller than a weighted softmax CE's,
    which sets its balance against weight decay 0.1. Soft targets weight by t . w."""
    w = class_weights(counts, "effective", need(cfg.beta, "beta")).to(counts.device)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        p = logits.float().softmax(1)
        per_sample = (targets @ w)[:, None].expand_as(p)
        return F.binary_cross_entropy(p, targets, weight=per_sample)

    return loss


def _balanced_ce(cfg: SecondConfig, counts: torch.Tensor) -> LossFn:
    """cRT's and LWS's loss: cross-entropy (their batches are class-balanced)."""
    return mean_loss(smoothed_ce(0.0))


# Each trained method's loss and sampler: cRT and LWS train with CE on class-balanced batches
# (Kang et al.'s ClassAwareSampler), MaxNorm with the CB loss on instance batches.
METHOD_LOSSES = {"crt": _balanced_ce, "lws": _balanced_ce, "maxnorm": cb_softmax_bce}
METHOD_SAMPLERS = {"crt": "class_balanced", "lws": "class_balanced", "maxnorm": "instance"}


def run_second_stage(model: nn.Module, data: SplitData, cfg: SecondConfig, seed: int) -> dict:
    """Apply the method of ``cfg`` to a trained model in place; what it chose (tau, scales:
    fields of the model file's config, ``records.TrainedConfig``)."""
    torch.manual_seed(seed)
    gen = torch.Generator(data.y.device).manual_seed(seed)
    return SECOND_STAGES[cfg.method](model, data, cfg, gen)
