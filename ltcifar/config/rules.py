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
lowered Balanced Softmax's macro-F1 from 0.874 to 0.864 (studies/fashion_step.md).
"""

from ltcifar.config import catalog
from ltcifar.config.schema import ParamsError


def prior_corrections(cfg: dict) -> dict[str, str]:
    """Each correction of the class prior the run makes: the key that makes it -> a label, read
    from the catalogue (each method's ``corrects_prior``, and the prior settings turned on)."""
    found = {}
    for key, table in (("loss", catalog.LOSSES), ("sampler", catalog.SAMPLERS)):
        if how := table[cfg[key]].corrects_prior:
            found[key] = f"{key} {cfg[key]} ({how})"
    if how := catalog.MIXUPS[cfg["mixup"]].corrects_prior:
        found["mixup"] = f"mixup {cfg['mixup']} ({how})"
    for key, how in catalog.PRIOR_SETTINGS.items():
        if cfg[key] != catalog.OFF[key]:
            found[key] = f"{key} ({how})"
    return found


def refusal(cfg: dict) -> str | None:
    """Why a run's combination of methods makes no sense, or None. The one-correction rule also
    keeps sampler instance where DRS (class-balanced) or balanced_mixup (a batch) re-samples."""
    loss = cfg["loss"]
    corrections = prior_corrections(cfg)
    # The measured exception (module docstring): a prior loss with balanced_mixup, nothing else.
    prior_loss = catalog.LOSSES[loss].corrects_prior == "log prior on the logits"
    measured = prior_loss and cfg["mixup"] == "balanced_mixup"
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
    if cfg["experts"] > 1 and cfg["model"] not in catalog.CIFAR_NETS:
        return f"experts are CIFAR nets' (BalPoE's ResNet-32); {cfg['model']} has one head"
    if (loss == "balpoe") != (cfg["experts"] > 1) or (
        loss == "balpoe" and len(cfg["expert_taus"]) != cfg["experts"]
    ):
        return (
            "balpoe trains one tau per expert and experts need its loss: set experts > 1 with "
            f"as many expert_taus (experts {cfg['experts']}, {len(cfg['expert_taus'])} taus)"
        )
    if cfg["finetune"] != "scratch" and not cfg["transfer"]:
        return (
            f"finetune: {cfg['finetune']} fine-tunes the profile's pretrained backbone; "
            "only transfer_runs have one (use finetune: scratch)"
        )
    if cfg["patience"] > 0 and cfg["checkpoint"] == "last":
        return (
            f"patience: {cfg['patience']} stops when the validation score the checkpoint "
            "selects on stops improving; set checkpoint: best_val or best_val_loss"
        )
    if cfg["patience"] > 0 and cfg["processes"] > 1:
        return "early stopping (patience) validates on rank 0 alone; train it in one process"
    if cfg["checkpoint"] == "best_val_loss" and cfg["experts"] > 1:
        return (
            "best_val_loss watches the run's own loss on validation images, and balpoe's is "
            "on each expert's logits, which validation averages; use checkpoint: best_val"
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
