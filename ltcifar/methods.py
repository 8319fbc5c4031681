"""How the registered methods compose: which combinations of loss, sampler, mixup and schedule
are refused (by the configs stage, before any work starts) and why."""

from ltcifar.params import ParamsError

PRIOR_LOSSES = ("balanced_softmax", "logit_adjusted")


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
    if loss == "ldam" and (cfg["head"] != "cosine" or cfg["model"].startswith("tv_")):
        return (
            "ldam's scale assumes a cosine classifier (the LDAM-DRW code's NormedLinear); "
            "use a CIFAR model with head: cosine (head: auto picks it for ldam)"
        )
    if cfg["finetune"] != "scratch" and not cfg["transfer"]:
        return (
            f"finetune: {cfg['finetune']} fine-tunes the profile's pretrained backbone; "
            "only transfer_runs have one (use finetune: scratch)"
        )
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
