"""How the registered methods compose: which sampler an epoch uses, and which combinations of
loss, sampler, mixup and schedule are refused (before any work starts) and why.

One prior correction per run. A long-tailed training set's class prior is corrected by a prior
loss (balanced_softmax, logit_adjusted: the log prior on the logits), by re-weighting
(weighted_ce, DRW), by re-sampling (a sampler other than instance, sampler_mixup,
balanced_mixup's class-balanced partner batch, DRS) or post hoc (posthoc_tau > 0). Each alone
aims at the balanced error; two correct the prior twice and over-favour the tail (Ren et al.
2020's over-balancing of Balanced Softmax with class-balanced sampling). Losses that change
what is learnt but not the prior count for none: cross_entropy, focal, and ldam, whose margins
widen the tail's decision margins (Cao et al. 2019 pair them with one re-balancing, DRW or
DRS), so LDAM-DRW is one correction. A cosine head is no correction either: it carries its
scale (``ldam_scale``), so its logits suit every loss.
"""

from ltcifar.params import ParamsError

PRIOR_LOSSES = ("balanced_softmax", "logit_adjusted")
REWEIGHTING_LOSSES = ("weighted_ce",)
# balanced_mixup: its class-balanced batch carries E[lam] = a / (a + 1) of every target (1/6)
RESAMPLING_MIXUPS = ("sampler_mixup", "balanced_mixup")


def sampler_for(cfg: dict, epoch: int) -> str:
    """The sampler of one epoch: ``sampler_mixup`` implies class-balanced batches, and deferred
    re-sampling (DRS) switches to class-balanced from epoch ``round(drs_from * epochs)``."""
    if cfg["mixup"] == "sampler_mixup":
        return "class_balanced"
    if cfg["drs_from"] < 1 and epoch >= round(cfg["drs_from"] * cfg["epochs"]):
        return "class_balanced"
    return cfg["sampler"]


def prior_corrections(cfg: dict) -> list[str]:
    """Each correction of the class prior the run makes, named by the key that makes it."""
    loss, sampler, mix = cfg["loss"], cfg["sampler"], cfg["mixup"]
    found = [
        (loss in PRIOR_LOSSES, f"loss {loss} (log prior on the logits)"),
        (loss in REWEIGHTING_LOSSES, f"loss {loss} (re-weighting)"),
        (cfg["drw_from"] < 1, "drw_from (deferred re-weighting)"),
        (sampler != "instance", f"sampler {sampler} (re-sampling)"),
        (mix in RESAMPLING_MIXUPS, f"mixup {mix} (class-balanced batches)"),
        (cfg["drs_from"] < 1, "drs_from (deferred re-sampling)"),
        (cfg["posthoc_tau"] > 0, "posthoc_tau (post-hoc logit adjustment)"),
    ]
    return [name for active, name in found if active]


def refusal(cfg: dict) -> str | None:
    """The reason a run's combination of methods makes no sense, or None.

    The one-correction rule also keeps the sampler instance wherever another method brings
    its own (sampler_mixup and DRS switch to class-balanced, balanced_mixup adds a batch)."""
    loss = cfg["loss"]
    corrections = prior_corrections(cfg)
    if len(corrections) > 1:
        return (
            f"one prior correction per run, but {' and '.join(corrections)} each correct for "
            "the class prior, so together they correct it more than once; keep one"
        )
    if loss == "ldam" and cfg["head"] != "cosine":
        return (
            "ldam's margins are on cosines, scaled by the cosine head (the LDAM-DRW code's "
            "NormedLinear); set head: cosine"
        )
    if cfg["init"] == "pretrained" and cfg["model"] != cfg["backbone_model"]:
        return "init: pretrained loads the profile's backbone; set model: backbone"
    if cfg["init"] == "scratch" and cfg["finetune"] != "full":
        return f"finetune: {cfg['finetune']} would freeze random weights; use init: pretrained"
    if cfg["label_smoothing"] > 0 and loss != "cross_entropy":
        return f"label_smoothing only applies to cross_entropy, not {loss}"
    return None


def check(cfg: dict, where: str) -> None:
    reason = refusal(cfg)
    if reason:
        raise ParamsError(
            f"{where}: {cfg['loss']} + {cfg['sampler']} sampler + {cfg['mixup']} "
            f"is refused: {reason}"
        )
