"""How the registered methods compose: which sampler an epoch uses, and which combinations of
loss, sampler, mixup and schedule are refused (before any work starts) and why."""

from ltcifar.params import ParamsError

PRIOR_LOSSES = ("balanced_softmax", "logit_adjusted")


def sampler_for(cfg: dict, epoch: int) -> str:
    """The sampler of one epoch: ``sampler_mixup`` implies class-balanced batches, and deferred
    re-sampling (DRS) switches to class-balanced from epoch ``round(drs_from * epochs)``."""
    if cfg["mixup"] == "sampler_mixup":
        return "class_balanced"
    if cfg["drs_from"] < 1 and epoch >= round(cfg["drs_from"] * cfg["epochs"]):
        return "class_balanced"
    return cfg["sampler"]


def refusal(cfg: dict) -> str | None:
    """The reason a run's combination of methods makes no sense, or None."""
    loss, sampler, mix = cfg["loss"], cfg["sampler"], cfg["mixup"]
    rebalanced = sampler != "instance" or mix == "sampler_mixup" or cfg["drs_from"] < 1
    if loss in PRIOR_LOSSES and (rebalanced or cfg["drw_from"] < 1):
        return (
            f"loss {loss} already corrects for the class prior; re-sampling or re-weighting "
            "on top corrects twice (use sampler: instance, no drs_from/drw_from)"
        )
    if loss in PRIOR_LOSSES and cfg["posthoc_tau"] > 0:
        return f"posthoc_tau adjusts the logits a second time after loss {loss}; set it to 0"
    if mix == "balanced_mixup" and sampler != "instance":
        return (
            "balanced_mixup mixes an instance-sampled batch with a class-balanced one; "
            "set sampler: instance"
        )
    if mix == "sampler_mixup" and sampler not in ("instance", "class_balanced"):
        return "sampler_mixup is mixup on class-balanced batches; it cannot use sampler " + sampler
    if cfg["drs_from"] < 1 and sampler != "instance":
        return (
            "deferred re-sampling (drs_from) switches from instance to class-balanced sampling; "
            "set sampler: instance"
        )
    if loss == "weighted_ce" and cfg["drw_from"] < 1:
        return "weighted_ce is re-weighted from the start; drw_from would weight it twice"
    if loss == "ldam" and cfg["head"] != "cosine":
        return (
            "ldam's scale assumes a cosine classifier (the LDAM-DRW code's NormedLinear); "
            "set head: cosine"
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
