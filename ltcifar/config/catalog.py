"""The catalogue: every setting params.yaml may hold and every method name it may use.

The one place a default, a type or a range is written. A ``Setting`` carries its type (or the
allowed strings), default and ranges; a ``Method`` the settings it reads and whether it corrects
the class prior, which the one-correction rule (``rules``) reads. The schema (``params``), the
resolved run configs, the refusals and ``docs/params.md`` are derived from these tables, and the
``Registry`` of each kind of method (losses, samplers, mixups, models, datasets, second stages)
accepts only the names catalogued here. Torch-free: the ``configs`` stage needs no torch.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

REQUIRED = object()  # a setting without a default: params.yaml must give it


@dataclass(frozen=True)
class Range:
    """An allowed set of values a type cannot express; ``wording`` completes "<key> = <value>"
    (or "<key>" when ``show`` is off). NaN fails every comparison, so it is never allowed."""

    test: Callable[[Any], bool]
    wording: str
    show: bool = True


POSITIVE = Range(lambda x: x > 0, "must be > 0")
NON_NEGATIVE = Range(lambda x: x >= 0, "must be >= 0")
AT_LEAST_ONE = Range(lambda x: x >= 1, "must be >= 1")
OFF_AT_ONE = Range(lambda x: 0 <= x <= 1, "must be within [0, 1] (1 = off)")
OPEN_UNIT = Range(lambda x: 0 < x < 1, "must be within (0, 1)")
FINITE_AT_LEAST_ONE = Range(lambda x: 1 <= x < math.inf, "must be >= 1 and finite")
ALL_NON_NEGATIVE = Range(lambda xs: all(x >= 0 for x in xs), "must all be >= 0")
NOT_EMPTY = Range(bool, "is empty; give at least one value", show=False)
BIN_OF_31 = Range(lambda x: 0 <= x <= 30, "must be within [0, 30]")
DISTINCT = Range(lambda xs: len(set(xs)) == len(xs), "lists a value twice")
DRAW_SEEDS = Range(lambda xs: all(0 <= x < 2**32 for x in xs), "must all be in [0, 2**32)")


@dataclass(frozen=True)
class Setting:
    """One scalar or list setting: its type (a tuple: the allowed strings), default and ranges.
    ``off``: the value at which an optional feature is off; a resolved config omits the setting
    then, and ``runconfig.read_run_config`` puts the off value back."""

    kind: Any
    default: Any = REQUIRED
    list_of: bool = False
    ranges: tuple[Range, ...] = ()
    off: Any = REQUIRED


@dataclass(frozen=True)
class Method:
    """A method name params.yaml may use: the settings it reads, and how it corrects the class
    prior (None: it does not; a loss that only changes what is learnt, such as focal or LDAM's
    margins). Both are required, so a new method cannot forget to say it."""

    reads: tuple[str, ...]
    corrects_prior: str | None
    doc: str


LOSSES: dict[str, Method] = {
    "cross_entropy": Method(("label_smoothing",), None, "softmax cross-entropy"),
    "weighted_ce": Method(("weighting", "beta"), "re-weighting", "CE weighted per class"),
    "focal": Method(("focal_gamma",), None, "focal loss (Lin et al. 2017)"),
    "balanced_softmax": Method((), "log prior on the logits", "Ren et al. 2020"),
    "logit_adjusted": Method(("la_tau",), "log prior on the logits", "Menon et al. 2021"),
    "ldam": Method(("ldam_max_margin", "ldam_scale"), None, "LDAM margins (Cao et al. 2019)"),
    "balpoe": Method(
        ("expert_taus",), "experts' logit adjustment", "balanced product of experts (BalPoE)"
    ),
}
# Losses whose logits come from the cosine head (``head: auto`` picks it): LDAM's margins are on
# cosines; BalPoE's experts are LDAM-DRW's NormedLinear heads.
COSINE_LOSSES = ("ldam", "balpoe")

SAMPLERS: dict[str, Method] = {
    "instance": Method((), None, "every image once per epoch, shuffled"),
    "class_balanced": Method((), "re-sampling", "every class equally likely"),
    "sqrt": Method((), "re-sampling", "class c in proportion to sqrt(n_c)"),
    "progressive": Method((), "re-sampling", "instance- to class-balanced (Kang et al. 2020)"),
}

MIXUPS: dict[str, Method] = {
    "none": Method((), None, "no mixing"),
    "mixup": Method(("mixup_alpha",), None, "Zhang et al. 2018"),
    "balanced_mixup": Method(
        ("balanced_mixup_alpha",), "class-balanced batches", "Galdran et al. 2021"
    ),
    "cutmix": Method(("cutmix_alpha",), None, "Yun et al. 2019"),
}
# A name params.yaml may use for a pair of methods, expanded when a run is resolved, so no later
# code sees it: the seed study's "Balanced Mixup" is ordinary mixup on class-balanced batches.
MIXUP_ALIASES = {"sampler_mixup": {"sampler": "class_balanced", "mixup": "mixup"}}

_CIFAR = ("shortcut", "head")
_TORCHVISION = ("input_size", "stem", "head")
MODELS: dict[str, Method] = {
    **{f"resnet{d}": Method(_CIFAR, None, f"CIFAR ResNet-{d}") for d in (20, 32, 44, 56)},
    **{f"plainnet{d}": Method(_CIFAR, None, f"ResNet-{d} without skips") for d in (20, 56)},
    "tv_resnet18": Method(_TORCHVISION, None, "torchvision ResNet-18"),
    "tv_resnet50": Method(_TORCHVISION, None, "torchvision ResNet-50"),
}
CIFAR_NETS = tuple(name for name, m in MODELS.items() if m.reads == _CIFAR)  # stackable seeds

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "fashion_mnist")

_HEAD_SGD = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "bn_stats")
SECOND_STAGES: dict[str, Method] = {
    "crt": Method(_HEAD_SGD, "re-sampling", "classifier re-trained (Kang et al. 2020)"),
    "lws": Method(_HEAD_SGD, "re-sampling", "a learnt scale per class (Kang et al. 2020)"),
    "tau_norm": Method(("tau_grid",), "weight norms", "w / |w|^tau (Kang et al. 2020)"),
    "posthoc_la": Method(
        ("tau_grid",), "post-hoc logit adjustment", "z - tau log pi (Menon et al. 2021)"
    ),
    "maxnorm": Method(
        (*_HEAD_SGD, "max_norm", "beta"), "re-weighting", "weight balancing (Alshammari 2022)"
    ),
}


# The recipe every run shares: LDAM-DRW's CIFAR recipe (kaidic/LDAM-DRW, cifar_train.py) and each
# method's settings. params.yaml's `recipe` block spells these defaults out (a test keeps the two
# equal); a profile's `recipe` changes them for its runs.
RECIPE: dict[str, Setting] = {
    "model": Setting(tuple(MODELS), "resnet32"),
    "loss": Setting(tuple(LOSSES), "cross_entropy"),
    "sampler": Setting(tuple(SAMPLERS), "instance"),
    "mixup": Setting((*MIXUPS, *MIXUP_ALIASES), "none"),
    "epochs": Setting(int, 200, ranges=(POSITIVE,)),
    "seeds": Setting(int, [0, 1, 2], list_of=True, ranges=(NOT_EMPTY, DISTINCT)),
    "batch_size": Setting(int, 128, ranges=(POSITIVE,)),
    "lr": Setting(float, 0.1, ranges=(POSITIVE,)),
    "momentum": Setting(float, 0.9, ranges=(NON_NEGATIVE,)),
    "nesterov": Setting(bool, False),
    "weight_decay": Setting(float, 2e-4, ranges=(NON_NEGATIVE,)),
    "schedule": Setting(("multistep", "cosine"), "multistep"),
    "milestones": Setting(int, [160, 180], list_of=True, ranges=(ALL_NON_NEGATIVE,)),
    "gamma": Setting(float, 0.01, ranges=(POSITIVE,)),
    "warmup_epochs": Setting(int, 5, ranges=(NON_NEGATIVE,)),
    "warmup": Setting(("step", "epoch"), "epoch"),
    "shortcut": Setting(("A", "B"), "A"),
    "head": Setting(("auto", "linear", "cosine"), "auto"),
    "label_smoothing": Setting(float, 0.0, ranges=(NON_NEGATIVE,)),
    "weighting": Setting(("effective", "inverse"), "effective"),
    "beta": Setting(float, 0.9999, ranges=(OPEN_UNIT,)),
    "focal_gamma": Setting(float, 1.0, ranges=(NON_NEGATIVE,)),
    "la_tau": Setting(float, 1.0, ranges=(NON_NEGATIVE,)),
    "expert_taus": Setting(float, [0.0, 1.0, 2.0], list_of=True, ranges=(NOT_EMPTY,)),
    "ldam_max_margin": Setting(float, 0.5, ranges=(POSITIVE,)),
    "ldam_scale": Setting(float, 30.0, ranges=(POSITIVE,)),
    "mixup_alpha": Setting(float, 1.0, ranges=(POSITIVE,)),
    "balanced_mixup_alpha": Setting(float, 0.2, ranges=(POSITIVE,)),
    "cutmix_alpha": Setting(float, 1.0, ranges=(POSITIVE,)),
    "lr_backbone_factor": Setting(float, 1.0, ranges=(POSITIVE,)),
    "input_size": Setting(int, 0, ranges=(NON_NEGATIVE,)),
    "stem": Setting(("imagenet", "cifar"), "imagenet"),
    "augment": Setting(bool, True),
    # RandAugment: ops per image, and the magnitude bin of 31 (torchvision's defaults)
    "randaugment_ops": Setting(int, 2, ranges=(POSITIVE,)),
    "randaugment_magnitude": Setting(int, 9, ranges=(BIN_OF_31,)),
    "pad_mode": Setting(("reflect", "zeros"), "zeros"),
    # best_val: the epoch of the best validation macro-F1; best_val_loss: of the lowest
    # validation loss, the run's own training loss on validation images (the seed study's rule)
    "checkpoint": Setting(("best_val", "best_val_loss", "last"), "last"),
    "checkpoint_every": Setting(int, 10, ranges=(POSITIVE,)),
    # auto: bf16 autocast on CUDA, fp32 on the CPU (whose bf16 is emulated on most cores, slow)
    "precision": Setting(("auto", "bf16", "fp32"), "auto"),
    # torch.compile's default mode made these small nets' steps slower on an H200 (docs/speed.md)
    "compile": Setting(("never", "always"), "never"),
    "channels_last": Setting(bool, True),
    "deterministic": Setting(bool, False),
    "eval_batch_size": Setting(int, 1024, ranges=(POSITIVE,)),
    "lr_base_batch": Setting(int, 128, ranges=(POSITIVE,)),
    # Optional features, each off at its ``off`` value; a run config read back lists their off
    # values first, in this order, and so does every model file: keep it
    "drw_from": Setting(float, 1.0, ranges=(OFF_AT_ONE,), off=1.0),
    "drs_from": Setting(float, 1.0, ranges=(OFF_AT_ONE,), off=1.0),
    "posthoc_tau": Setting(float, 0.0, ranges=(NON_NEGATIVE,), off=0.0),
    "posthoc_tau_grid": Setting(float, [], list_of=True, ranges=(ALL_NON_NEGATIVE,), off=[]),
    "grad_clip": Setting(float, 0.0, ranges=(NON_NEGATIVE,), off=0.0),
    "stack_seeds": Setting(bool, False, off=False),
    "finetune": Setting(("scratch", "linear", "bn_fc", "full"), "scratch", off="scratch"),
    "processes": Setting(int, 1, ranges=(POSITIVE,), off=1),
    "lr_scaling": Setting(("none", "linear", "sqrt"), "none", off="none"),
    # after crop and flip: AutoAugment's CIFAR-10 policy or RandAugment; then Cutout's square
    "augment_policy": Setting(("none", "autoaugment", "randaugment"), "none", off="none"),
    "cutout": Setting(int, 0, ranges=(NON_NEGATIVE,), off=0),
    # BalPoE (loss balpoe): a CIFAR net with this many experts, one logit-adjustment tau each
    "experts": Setting(int, 1, ranges=(POSITIVE,), off=1),
    # early stopping: stop after this many epochs without a better validation score (the one
    # ``checkpoint`` selects on) and keep the best epoch's model; 0: train every epoch
    "patience": Setting(int, 0, ranges=(NON_NEGATIVE,), off=0),
    # after crop and flip, a rotation by an angle uniform in [-rotation, rotation] degrees
    # (torchvision's RandomRotation: BalPoE's CIFAR transform)
    "rotation": Setting(float, 0.0, ranges=(NON_NEGATIVE,), off=0.0),
}

# Settings that correct the class prior when on (not at their ``off`` value), as methods do.
PRIOR_SETTINGS = {
    "drw_from": "deferred re-weighting",
    "drs_from": "deferred re-sampling",
    "posthoc_tau": "post-hoc logit adjustment",
    "posthoc_tau_grid": "post-hoc logit adjustment, tuned",
}

# A named training subset of a profile (``lt_index`` builds it).
SPLIT: dict[str, Setting] = {
    "dataset": Setting(str),  # one of the profile's datasets
    "shape": Setting(("exp", "step", "none")),
    "n_max": Setting(int, 0, ranges=(NON_NEGATIVE,)),  # 0: every image of the smallest class
    "imbalance": Setting(float, 100.0, ranges=(FINITE_AT_LEAST_ONE,)),
    "n_min": Setting(int, 0, ranges=(NON_NEGATIVE,)),
    "k": Setting(int, 1, ranges=(AT_LEAST_ONE,)),
    "val_per_class": Setting(int, 0, ranges=(NON_NEGATIVE,)),
    "val_policy": Setting(("reserve", "exact", "exact_holdout"), "reserve"),
    "sampling": Setting(("seeded", "ldam"), "seeded"),
    "seed": Setting(int, 0),
    # several long-tailed draws, each the seed of one draw (LDAM-DRW's ``rand_number``): every
    # run on the split trains on each; absent, the split is the one draw of ``seed``
    "draws": Setting(int, None, list_of=True, ranges=(NOT_EMPTY, DRAW_SEEDS, DISTINCT)),
}

# A second stage: the method's settings (``SECOND_STAGES`` says which each reads).
SECOND: dict[str, Setting] = {
    "run": Setting(str),
    "split": Setting(str),
    "method": Setting(tuple(SECOND_STAGES)),
    "epochs": Setting(int, 10, ranges=(POSITIVE,)),
    "batch_size": Setting(int, 128, ranges=(POSITIVE,)),
    "lr": Setting(float, 0.05, ranges=(POSITIVE,)),
    "momentum": Setting(float, 0.9, ranges=(NON_NEGATIVE,)),
    "weight_decay": Setting(float, 5e-4, ranges=(NON_NEGATIVE,)),
    # Kang et al.'s tau_norm.py grid, np.linspace(0, 2, 21)
    "tau_grid": Setting(
        float, [i / 10 for i in range(21)], list_of=True, ranges=(NOT_EMPTY, ALL_NON_NEGATIVE)
    ),
    # frozen: the first stage's BatchNorm statistics, as is; update: re-estimated on the
    # re-balanced batches (both reference codes train the head with the network in train mode),
    # which scored lower on real CIFAR-10-LT (studies/cifar10_lt.md)
    "bn_stats": Setting(("update", "frozen"), "frozen"),
    "max_norm": Setting(float, 0.1, ranges=(Range(lambda x: 0 < x <= 1, "must be within (0, 1]"),)),
    "beta": Setting(float, 0.9999, ranges=(OPEN_UNIT,)),
}

# Where each dataset comes from: ``archives`` (a catalogued dataset, MD5-verified) or
# ``image_folder`` (any name: the user's own images, pinned by sha256).
DOWNLOAD: dict[str, Setting] = {
    "kind": Setting(("archives", "image_folder"), "archives"),
    "sources": Setting(str, list_of=True),
    "image_size": Setting(int, 0, ranges=(NON_NEGATIVE,)),
    "sha256": Setting(str, ""),
}

# A profile's transfer backbone: ImageNet weights fetched and verified, or pretrained here.
BACKBONE: dict[str, Setting] = {
    "model": Setting(tuple(MODELS)),
    "weights": Setting(("imagenet", "pretrain")),
    "sources": Setting(str, [], list_of=True),
    "sha256": Setting(str, [], list_of=True),
    "split": Setting(str, ""),
}

EVALUATE: dict[str, Setting] = {
    "many_shot_min": Setting(int, 100, ranges=(NON_NEGATIVE,)),
    "few_shot_max": Setting(int, 20, ranges=(NON_NEGATIVE,)),
}

OFF: dict[str, object] = {k: s.off for k, s in RECIPE.items() if s.off is not REQUIRED}


def defaults(table: dict[str, Setting] = RECIPE) -> dict:
    """Every default of a table (the recipe's: what a run reads when params.yaml is silent)."""
    return {k: s.default for k, s in table.items() if s.default is not REQUIRED}


class Registry(dict):
    """Named builders of one kind, filled by ``@REGISTRY.register("name")`` on import; a lookup
    error lists the valid names. A name must be catalogued above, with the settings it reads."""

    def __init__(self, kind: str, catalog: Iterable[str]) -> None:
        super().__init__()
        self.kind, self.catalog = kind, frozenset(catalog)

    def register(self, name: str) -> Callable[[Any], Any]:
        if name not in self.catalog:
            raise KeyError(f"{self.kind} {name!r} is not in ltcifar/config/catalog.py; add it")

        def deco(obj: Any) -> Any:
            if name in self:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def __missing__(self, name: str) -> Any:
        raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self))}")
