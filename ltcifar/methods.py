"""Which combinations of loss, sampler, mixup and schedule the configs stage refuses, and why.

One prior correction per run: a prior loss, re-weighting, re-sampling or a post-hoc adjustment
(``prior_corrections`` lists them) each alone aims at the balanced error; two correct the prior
twice and over-favour the tail (Ren et al. 2020: Balanced Softmax with class-balanced sampling
over-balances). Losses that change what is learnt but not the prior count for none:
cross_entropy, focal, and ldam, whose margins widen the tail's decision margins (Cao et al. 2019
pair them with one re-balancing, DRW or DRS), so LDAM-DRW is one correction. A cosine head is
none either: it carries its scale (``ldam_scale``), so its logits suit every loss.

One measured exception: a prior loss with balanced_mixup, whose class-balanced batch carries only
E[lam] = a / (a + 1) of every target (1/6 at a = 0.2); on Fashion-MNIST's step split, 3 seeds, it
lowered Balanced Softmax's macro-F1 from 0.874 to 0.864 (README, ``step_bs_balanced_mixup``).
"""

from ltcifar.params import ParamsError

PRIOR_LOSSES = ("balanced_softmax", "logit_adjusted")
REWEIGHTING_LOSSES = ("weighted_ce",)
RESAMPLING_MIXUPS = ("balanced_mixup",)


def prior_corrections(cfg: dict) -> dict[str, str]:
    """Each correction of the class prior the run makes: the key that makes it -> a label."""
    loss, sampler, mix = cfg["loss"], cfg["sampler"], cfg["mixup"]
    found = [
        (loss in PRIOR_LOSSES, "loss", f"loss {loss} (log prior on the logits)"),
        (loss in REWEIGHTING_LOSSES, "loss", f"loss {loss} (re-weighting)"),
        (cfg["drw_from"] < 1, "drw_from", "drw_from (deferred re-weighting)"),
        (sampler != "instance", "sampler", f"sampler {sampler} (re-sampling)"),
        (mix in RESAMPLING_MIXUPS, "mixup", f"mixup {mix} (class-balanced batches)"),
        (cfg["drs_from"] < 1, "drs_from", "drs_from (deferred re-sampling)"),
        (cfg["posthoc_tau"] > 0, "posthoc_tau", "posthoc_tau (post-hoc logit adjustment)"),
        (bool(cfg["posthoc_tau_grid"]), "posthoc_tau_grid", "posthoc_tau_grid (post-hoc, tuned)"),
    ]
    return {key: label for active, key, label in found if active}


def refusal(cfg: dict) -> str | None:
    """Why a run's combination of methods makes no sense, or None. The one-correction rule also
    keeps sampler instance where DRS (class-balanced) or balanced_mixup (a batch) re-samples."""
    loss = cfg["loss"]
    corrections = prior_corrections(cfg)
    # The measured exception (module docstring): a prior loss with balanced_mixup, nothing else.
    measured = loss in PRIOR_LOSSES and cfg["mixup"] == "balanced_mixup"
    if len(corrections) > 1 and not (measured and set(corrections) == {"loss", "mixup"}):
        return (
            f"one prior correction per run, but {' and '.join(corrections.values())} each "
            "correct for the class prior, so together they correct it more than once; keep one"
        )
    if loss == "ldam" and cfg["head"] != "cosine":
        return (
            "ldam's margins are on cosines, scaled by the cosine head (the LDAM-DRW code's "
            "NormedLinear); set head: cosine (head: auto picks it for ldam)"
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
    if reason := refusal(cfg):
        raise ParamsError(
            f"{where}: {cfg['loss']} + {cfg['sampler']} sampler + {cfg['mixup']} "
            f"is refused: {reason}"
        )
