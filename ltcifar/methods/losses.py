"""Losses on soft targets, registered under their params names.

Every loss maps ``(logits, targets)`` to per-sample losses, with ``targets`` a (B, C) probability
matrix, so mixup's soft targets compose with every loss. Prior-based losses (Balanced Softmax,
logit adjustment, LDAM's margins) act on the logits, never on the targets: that is what keeps
them correct under mixup. Class re-weighting (weighted CE, DRW) weights sample i by t_i . w.

A re-weighted loss is sum_i w_i l_i / sum_i w_i over the step's batch. Under DDP (N ranks, each
with its shard of the global batch, gradients averaged) the denominator is the global batch's
weight sum, all-reduced without gradient: each rank returns N sum_rank w l / sum_global w, so the
averaged gradient, and the mean of the ranks' losses, are one process's. In one process the
loss is the same expression as without DDP, so its values are unchanged to the bit.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig, need

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
LOSSES = catalog.Registry("loss", catalog.LOSSES)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample -sum_c t_c log softmax(z)_c, in fp32 for stability under bf16 autocast."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1)


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    return torch.log(counts.float() / counts.sum())


def ranks() -> int:
    """The number of DDP ranks this process trains with (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` (detached) summed over every rank; a collective: every rank must call it."""
    total = x.detach().clone()
    dist.all_reduce(total)
    return total


def class_weights(counts: torch.Tensor, scheme: str, beta: float) -> torch.Tensor:
    """Per-class weights summing to C: inverse frequency, or Cui et al. 2019's effective number
    (1 - beta) / (1 - beta^n), the weights of LDAM-DRW's deferred re-weighting (beta 0.9999)."""
    n = counts.double().clamp_min(1)
    w = 1.0 / n if scheme == "inverse" else (1 - beta) / (1 - beta**n)
    return (w / w.sum() * len(n)).float()


def smoothed_ce(eps: float) -> PerSample:
    """CE on targets smoothed by ``eps`` (0: plain CE on the targets)."""
    return lambda z, t: soft_cross_entropy(z, t * (1 - eps) + eps / t.shape[1])


@LOSSES.register("cross_entropy")
def cross_entropy(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    return smoothed_ce(need(cfg.label_smoothing, "label_smoothing"))


@LOSSES.register("weighted_ce")
def weighted_ce(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    """CE re-weighted from the first epoch (inverse frequency or effective number)."""
    scheme, beta = need(cfg.weighting, "weighting"), need(cfg.beta, "beta")
    w = class_weights(counts, scheme, beta).to(counts.device)

    def loss(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        wi, n = t @ w, ranks()
        mean = wi.mean() if n == 1 else global_sum(wi.sum()) / (len(wi) * n)  # global batch's
        return soft_cross_entropy(z, t) * wi / mean

    return loss


@LOSSES.register("focal")
def focal(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    """Lin et al. 2017: -sum_c t_c (1 - p_c)^gamma log p_c; gamma = 0 is CE. 1 - p is
    -expm1(log p), floored at the smallest normal float: at p = 1 the factor's derivative
    gamma (1 - p)^(gamma - 1) is infinite for gamma < 1, and 0 x inf would make the gradient
    NaN (LDAM-DRW's and torchvision's focal losses do; the floor changes the loss by < 1e-19)."""
    gamma = need(cfg.focal_gamma, "focal_gamma")
    tiny = torch.finfo(torch.float32).tiny

    def loss(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(z.float(), dim=1)
        return -(t * (-torch.expm1(logp)).clamp_min(tiny).pow(gamma) * logp).sum(1)

    return loss


@LOSSES.register("balanced_softmax")
def balanced_softmax(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    """Ren et al. 2020: softmax over z + log n_c, i.e. logit adjustment with tau = 1."""
    return prior_adjusted(counts, 1)


@LOSSES.register("logit_adjusted")
def logit_adjusted(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    return prior_adjusted(counts, need(cfg.la_tau, "la_tau"))


def prior_adjusted(counts: torch.Tensor, tau: float) -> PerSample:
    """Menon et al. 2021: CE on z + tau log pi; tau = 1 is Balanced Softmax."""
    prior = tau * log_prior(counts)
    return lambda z, t: soft_cross_entropy(z.float() + prior, t)


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    """Cao et al. 2019: m_c proportional to n_c^(-1/4), the largest equal to ``max_margin``."""
    m = counts.double().clamp_min(1) ** -0.25
    return (m * (max_margin / m.max())).float()


@LOSSES.register("ldam")
def ldam(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    """LDAM-DRW's CE on s (cos(theta) - m_y e_y): the cosine head (``head: cosine``) already
    gives z = s cos(theta) with s = ``ldam_scale``, so the margin enters as s * m. Soft targets
    subtract it in proportion to each class's target mass."""
    m = ldam_margins(counts, need(cfg.ldam_max_margin, "ldam_max_margin"))
    s = need(cfg.ldam_scale, "ldam_scale")
    return lambda z, t: soft_cross_entropy(z.float() - s * t * m, t)


@LOSSES.register("balpoe")
def balpoe(counts: torch.Tensor, cfg: RunConfig) -> PerSample:
    """Sanchez Aimar et al. 2023 (BalPoE): expert e's logits z_e (B, E, C) trained with logit
    adjustment at its own tau_e, CE(z_e + tau_e log pi), averaged over the experts; the model
    predicts with the experts' mean logits, which are consistent for the balanced error when
    the taus average to 1 (emasa/BalPoE-CalibratedLT: tau 0, 1, 2)."""
    taus = torch.tensor(need(cfg.expert_taus, "expert_taus"), device=counts.device)[None, :, None]
    prior = log_prior(counts)

    def loss(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        adjusted = z.float() + taus * prior
        return -(t[:, None] * F.log_softmax(adjusted, dim=2)).sum(2).mean(1)

    return loss


def mean_loss(per_sample: PerSample) -> LossFn:
    """A per-sample loss as ``loss(logits, targets, epoch)``, averaged over the batch."""
    return lambda logits, targets, epoch: per_sample(logits, targets).mean()


def build_loss(cfg: RunConfig, counts: torch.Tensor) -> LossFn:
    """The run's loss as ``loss(logits, targets, epoch)``, mean-reduced, with deferred
    re-weighting (DRW) from epoch ``round(drw_from * epochs)`` when ``drw_from < 1``."""
    per_sample = LOSSES[cfg.loss](counts, cfg)
    if cfg.drw_from >= 1:
        return mean_loss(per_sample)
    drw_epoch = round(cfg.drw_from * cfg.epochs)
    scheme, beta = need(cfg.weighting, "weighting"), need(cfg.beta, "beta")
    weights = class_weights(counts, scheme, beta).to(counts.device)

    def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
        losses = per_sample(logits, targets)
        if epoch < drw_epoch:
            return losses.mean()
        w = targets @ weights  # sum_i w_i l_i / sum_i w_i, as F.cross_entropy(weight=...)
        n = ranks()
        total = w.sum() if n == 1 else global_sum(w.sum()) / n  # the global sum, per rank
        return (w * losses).sum() / total

    return loss
