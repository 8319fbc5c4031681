"""The catalogue: every setting params.yaml may hold and every method name it may use.

The one place a default, a type or a range is written. A ``Setting`` carries its type (or the
allowed strings), default and ranges; a ``Method`` the settings it reads and whether it corrects
the class prior, which the one-correction rule (``rules``) reads. The schema (``params``), the
resolved run configs, the refusals and the reference in ``docs/params.md`` (``docs``) are
derived from these tables, and the ``Registry`` of each kind of method (losses, samplers,
mixups, models, datasets, second stages) accepts only the names catalogued here. Torch-free:
the ``configs`` stage needs no torch.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

REQUIRED = object()  # a setting without a default: params.yaml must give it


@dataclass(frozen=True)
class Range:
    """An allowed set of values a type cannot express; ``wording`` completes "<key> = <value>"
    (or "<key>" when ``show`` is off). NaN fails every comparison, so it is never allowed.
    ``rule``: how the reference states it, where the wording names the failure instead."""

    test: Callable[[Any], bool]
    wording: str
    show: bool = True
    rule: str = ""


POSITIVE = Range(lambda x: x > 0, "must be > 0")
NON_NEGATIVE = Range(lambda x: x >= 0, "must be >= 0")
AT_LEAST_ONE = Range(lambda x: x >= 1, "must be >= 1")
OFF_AT_ONE = Range(lambda x: 0 <= x <= 1, "must be within [0, 1] (1 = off)")
OPEN_UNIT = Range(lambda x: 0 < x < 1, "must be within (0, 1)")
FINITE_AT_LEAST_ONE = Range(lambda x: 1 <= x < math.inf, "must be >= 1 and finite")
ALL_NON_NEGATIVE = Range(lambda xs: all(x >= 0 for x in xs), "must all be >= 0")
NOT_EMPTY = Range(bool, "is empty; give at least one value", show=False, rule="not empty")
BIN_OF_31 = Range(lambda x: 0 <= x <= 30, "must be within [0, 30]")
DISTINCT = Range(lambda xs: len(set(xs)) == len(xs), "lists a value twice", rule="distinct")
DRAW_SEEDS = Range(lambda xs: all(0 <= x < 2**32 for x in xs), "must all be in [0, 2**32)")


@dataclass(frozen=True)
class Setting:
    """One scalar or list setting: its type (a tuple: the allowed strings), default and ranges.
    ``off``: the value at which an optional feature is off; a resolved config omits the setting
    then, and ``runconfig.read_run_config`` puts the off value back. ``doc``: what it sets, in
    one line, the reference's (docs/params.md is generated from it)."""

    kind: Any
    default: Any = REQUIRED
    list_of: bool = False
    ranges: tuple[Range, ...] = ()
    off: Any = REQUIRED
    doc: str = ""


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
# equal); a profile's `recipe` changes them for its runs. Each ``doc`` is its line in
# docs/params.md's reference (``ltcifar.config.docs``).
RECIPE: dict[str, Setting] = {
    "model": Setting(tuple(MODELS), "resnet32", doc="the network (docs/methods.md, Models)"),
    "loss": Setting(tuple(LOSSES), "cross_entropy", doc="the training loss (docs/methods.md)"),
    "sampler": Setting(tuple(SAMPLERS), "instance", doc="how an epoch draws its images"),
    "mixup": Setting(
        (*MIXUPS, *MIXUP_ALIASES),
        "none",
        doc="image mixing; sampler_mixup: mixup on class-balanced batches",
    ),
    "epochs": Setting(int, 200, ranges=(POSITIVE,), doc="training epochs"),
    "seeds": Setting(
        int,
        [0, 1, 2],
        list_of=True,
        ranges=(NOT_EMPTY, DISTINCT),
        doc="every run trains once per seed; the report shows mean ± sample std",
    ),
    "batch_size": Setting(
        int, 128, ranges=(POSITIVE,), doc="images per step (under DDP: all ranks')"
    ),
    "lr": Setting(float, 0.1, ranges=(POSITIVE,), doc="SGD's peak learning rate (see lr_scaling)"),
    "momentum": Setting(float, 0.9, ranges=(NON_NEGATIVE,), doc="SGD momentum"),
    "nesterov": Setting(bool, False, doc="Nesterov momentum"),
    "weight_decay": Setting(float, 2e-4, ranges=(NON_NEGATIVE,), doc="SGD weight decay (L2)"),
    "schedule": Setting(
        ("multistep", "cosine"),
        "multistep",
        doc="the lr after warm-up: x gamma at each milestone, or cosine to 0",
    ),
    "milestones": Setting(
        int,
        [160, 180],
        list_of=True,
        ranges=(ALL_NON_NEGATIVE,),
        doc="multistep: the epochs at which the lr is multiplied by gamma",
    ),
    "gamma": Setting(
        float, 0.01, ranges=(POSITIVE,), doc="multistep: the lr's factor at each milestone"
    ),
    "warmup_epochs": Setting(
        int, 5, ranges=(NON_NEGATIVE,), doc="epochs of linear warm-up to lr (0: none)"
    ),
    "warmup": Setting(
        ("step", "epoch"),
        "epoch",
        doc="step: ramp every step; epoch: hold (e + 1) / warmup_epochs through epoch e",
    ),
    "shortcut": Setting(
        ("A", "B"), "A", doc="CIFAR nets: A, zero-pad (parameter-free); B, 1x1 projection"
    ),
    "head": Setting(
        ("auto", "linear", "cosine"),
        "auto",
        doc="the classifier; auto: cosine (LDAM-DRW's normed) for ldam and balpoe, else linear",
    ),
    "label_smoothing": Setting(
        float, 0.0, ranges=(NON_NEGATIVE,), doc="cross_entropy: label smoothing"
    ),
    "weighting": Setting(
        ("effective", "inverse"),
        "effective",
        doc="weighted_ce and DRW: effective number (Cui et al. 2019) or inverse frequency",
    ),
    "beta": Setting(float, 0.9999, ranges=(OPEN_UNIT,), doc="effective-number weighting's beta"),
    "focal_gamma": Setting(
        float, 1.0, ranges=(NON_NEGATIVE,), doc="focal: gamma (LDAM-DRW's focal baseline: 1)"
    ),
    "la_tau": Setting(
        float, 1.0, ranges=(NON_NEGATIVE,), doc="logit_adjusted: tau (1 is balanced_softmax)"
    ),
    "expert_taus": Setting(
        float,
        [0.0, 1.0, 2.0],
        list_of=True,
        ranges=(NOT_EMPTY,),
        doc="balpoe: one logit-adjustment tau per expert (mean 1: balanced)",
    ),
    "ldam_max_margin": Setting(
        float, 0.5, ranges=(POSITIVE,), doc="ldam: the largest margin (the rarest class's)"
    ),
    "ldam_scale": Setting(
        float, 30.0, ranges=(POSITIVE,), doc="cosine head: the logits' scale s (LDAM's)"
    ),
    "mixup_alpha": Setting(
        float, 1.0, ranges=(POSITIVE,), doc="mixup, sampler_mixup: lam ~ Beta(alpha, alpha)"
    ),
    "balanced_mixup_alpha": Setting(
        float, 0.2, ranges=(POSITIVE,), doc="balanced_mixup: lam ~ Beta(alpha, 1)"
    ),
    "cutmix_alpha": Setting(
        float, 1.0, ranges=(POSITIVE,), doc="cutmix: lam ~ Beta(alpha, alpha), the box's area"
    ),
    "lr_backbone_factor": Setting(
        float,
        1.0,
        ranges=(POSITIVE,),
        doc="fine-tuning: the backbone's lr is lr x this; the new head trains at lr",
    ),
    "input_size": Setting(
        int,
        0,
        ranges=(NON_NEGATIVE,),
        doc="torchvision nets: upsample images to this size on the device (0: keep)",
    ),
    "stem": Setting(
        ("imagenet", "cifar"),
        "imagenet",
        doc="torchvision nets: imagenet (7x7/2 + max-pool) or cifar (a new 3x3/1)",
    ),
    "augment": Setting(
        bool, True, doc="random crop (pad 4) and horizontal flip, batched on the device"
    ),
    "randaugment_ops": Setting(
        int, 2, ranges=(POSITIVE,), doc="randaugment: operations per image (torchvision's 2)"
    ),
    "randaugment_magnitude": Setting(
        int, 9, ranges=(BIN_OF_31,), doc="randaugment: the magnitude bin of 31 (torchvision's 9)"
    ),
    "pad_mode": Setting(
        ("reflect", "zeros"), "zeros", doc="augment: how the crop pads, with zeros or reflected"
    ),
    "checkpoint": Setting(
        ("best_val", "best_val_loss", "last"),
        "last",
        doc="the model kept: the last epoch's, the best validation macro-F1's, or the lowest "
        "validation loss's (the run's own training loss on validation images)",
    ),
    "checkpoint_every": Setting(
        int, 10, ranges=(POSITIVE,), doc="epochs between resumable checkpoints"
    ),
    "precision": Setting(
        ("auto", "bf16", "fp32"),
        "auto",
        doc="auto: bf16 autocast on CUDA, fp32 on the CPU (which mostly emulates bf16); "
        "bf16: on every device",
    ),
    "compile": Setting(
        ("never", "always"),
        "never",
        doc="torch.compile the model (default mode made these nets slower on an H200)",
    ),
    "channels_last": Setting(bool, True, doc="channels_last memory layout of the model and images"),
    "deterministic": Setting(
        bool, False, doc="deterministic CUDA kernels (slower); the CPU always is"
    ),
    "eval_batch_size": Setting(
        int, 1024, ranges=(POSITIVE,), doc="images per forward pass when validating and scoring"
    ),
    "lr_base_batch": Setting(
        int, 128, ranges=(POSITIVE,), doc="lr_scaling: the batch size lr is meant for"
    ),
    # Optional features, each off at its ``off`` value; a run config read back lists their off
    # values first, in this order, and so does every model file: keep it
    "drw_from": Setting(
        float,
        1.0,
        ranges=(OFF_AT_ONE,),
        off=1.0,
        doc="deferred re-weighting from this fraction of training (LDAM-DRW's: 0.8)",
    ),
    "drs_from": Setting(
        float,
        1.0,
        ranges=(OFF_AT_ONE,),
        off=1.0,
        doc="deferred re-sampling (class-balanced) from this fraction of training",
    ),
    "posthoc_tau": Setting(
        float,
        0.0,
        ranges=(NON_NEGATIVE,),
        off=0.0,
        doc="post-hoc logit adjustment at prediction time: z - tau log prior",
    ),
    "posthoc_tau_grid": Setting(
        float,
        [],
        list_of=True,
        ranges=(ALL_NON_NEGATIVE,),
        off=[],
        doc="post-hoc logit adjustment, tau chosen from this grid on validation images",
    ),
    "grad_clip": Setting(
        float, 0.0, ranges=(NON_NEGATIVE,), off=0.0, doc="the gradients' largest norm"
    ),
    "stack_seeds": Setting(
        bool,
        False,
        off=False,
        doc="train the seeds together as one grouped-convolution model (docs/speed.md)",
    ),
    "finetune": Setting(
        ("scratch", "linear", "bn_fc", "full"),
        "scratch",
        off="scratch",
        doc="transfer runs: linear (head only), bn_fc (BatchNorm affine + head) or full",
    ),
    "processes": Setting(
        int, 1, ranges=(POSITIVE,), off=1, doc="DDP ranks of one run (torchrun, a GPU each)"
    ),
    "lr_scaling": Setting(
        ("none", "linear", "sqrt"),
        "none",
        off="none",
        doc="the lr for batch_size: lr x batch_size / lr_base_batch, or its square root",
    ),
    "augment_policy": Setting(
        ("none", "autoaugment", "randaugment"),
        "none",
        off="none",
        doc="after crop and flip: AutoAugment's CIFAR-10 policy or RandAugment",
    ),
    "cutout": Setting(
        int,
        0,
        ranges=(NON_NEGATIVE,),
        off=0,
        doc="Cutout: an L x L square zeroed per image, after normalisation",
    ),
    "experts": Setting(
        int,
        1,
        ranges=(POSITIVE,),
        off=1,
        doc="balpoe: a CIFAR net's experts, one expert_taus value each",
    ),
    "patience": Setting(
        int,
        0,
        ranges=(NON_NEGATIVE,),
        off=0,
        doc="early stopping: epochs without improvement of the validation score the "
        "checkpoint watches (0: off)",
    ),
    "rotation": Setting(
        float,
        0.0,
        ranges=(NON_NEGATIVE,),
        off=0.0,
        doc="after crop and flip, a rotation within +- this many degrees (torchvision's "
        "RandomRotation: BalPoE's CIFAR transform)",
    ),
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
    "dataset": Setting(str, doc="one of the profile's datasets"),
    "shape": Setting(
        ("exp", "step", "none"),
        doc="exp: n_i = floor(n_max IF^(-i/(C-1))); step: k classes n_max, the rest n_min; "
        "none: balanced",
    ),
    "n_max": Setting(
        int,
        0,
        ranges=(NON_NEGATIVE,),
        doc="training images of the largest class (0: every image of the smallest class)",
    ),
    "imbalance": Setting(
        float, 100.0, ranges=(FINITE_AT_LEAST_ONE,), doc="exp: the imbalance factor IF"
    ),
    "n_min": Setting(int, 0, ranges=(NON_NEGATIVE,), doc="step: images of each minority class"),
    "k": Setting(int, 1, ranges=(AT_LEAST_ONE,), doc="step: the majority classes"),
    "val_per_class": Setting(
        int,
        0,
        ranges=(NON_NEGATIVE,),
        doc="validation images per class, from training images the subset leaves unused",
    ),
    "val_policy": Setting(
        ("reserve", "exact", "exact_holdout"),
        "reserve",
        doc="reserve: validation first, n_max lowered; exact: from leftovers; exact_holdout: "
        "exact, but a class used whole gives val_per_class to validation",
    ),
    "sampling": Setting(
        ("seeded", "ldam"), "seeded", doc="ldam: exactly the images the LDAM-DRW code draws"
    ),
    "seed": Setting(int, 0, doc="the seed of the split's draw"),
    # several long-tailed draws, each the seed of one draw (LDAM-DRW's ``rand_number``): every
    # run on the split trains on each; absent, the split is the one draw of ``seed``
    "draws": Setting(
        int,
        None,
        list_of=True,
        ranges=(NOT_EMPTY, DRAW_SEEDS, DISTINCT),
        doc="several draws, each number one's seed; every run on the split trains each",
    ),
}

# A second stage: the method's settings (``SECOND_STAGES`` says which each reads).
SECOND: dict[str, Setting] = {
    "run": Setting(str, doc="the finished run whose classifier is re-balanced"),
    "split": Setting(str, doc="that run's split"),
    "method": Setting(tuple(SECOND_STAGES), doc="the re-balancing (docs/methods.md)"),
    "epochs": Setting(int, 10, ranges=(POSITIVE,), doc="epochs the head trains"),
    "batch_size": Setting(int, 128, ranges=(POSITIVE,), doc="images per step"),
    "lr": Setting(float, 0.05, ranges=(POSITIVE,), doc="the head's learning rate, cosine to 0"),
    "momentum": Setting(float, 0.9, ranges=(NON_NEGATIVE,), doc="SGD momentum"),
    "weight_decay": Setting(float, 5e-4, ranges=(NON_NEGATIVE,), doc="SGD weight decay"),
    # Kang et al.'s tau_norm.py grid, np.linspace(0, 2, 21)
    "tau_grid": Setting(
        float,
        [i / 10 for i in range(21)],
        list_of=True,
        ranges=(NOT_EMPTY, ALL_NON_NEGATIVE),
        doc="tau_norm, posthoc_la: the taus tried on validation images (Kang et al.'s grid)",
    ),
    # frozen: the first stage's BatchNorm statistics, as is; update: re-estimated on the
    # re-balanced batches (both reference codes train the head with the network in train mode),
    # which scored lower on real CIFAR-10-LT (studies/cifar10_lt.md)
    "bn_stats": Setting(
        ("update", "frozen"),
        "frozen",
        doc="BatchNorm statistics: the first stage's, or re-estimated on re-balanced batches",
    ),
    "max_norm": Setting(
        float,
        0.1,
        ranges=(Range(lambda x: 0 < x <= 1, "must be within (0, 1]"),),
        doc="maxnorm: limit = min + max_norm x (max - min) of the starting weight norms",
    ),
    "beta": Setting(
        float, 0.9999, ranges=(OPEN_UNIT,), doc="maxnorm: its class-balanced loss's beta"
    ),
}

# Where each dataset comes from: ``archives`` (a catalogued dataset, MD5-verified) or
# ``image_folder`` (any name: the user's own images, pinned by sha256).
DOWNLOAD: dict[str, Setting] = {
    "kind": Setting(
        ("archives", "image_folder"),
        "archives",
        doc="a catalogued dataset's archives, or a folder of your own images",
    ),
    "sources": Setting(str, list_of=True, doc="URLs or local folders, tried in order"),
    "image_size": Setting(
        int, 0, ranges=(NON_NEGATIVE,), doc="image_folder: every image resized to this square"
    ),
    "sha256": Setting(
        str, "", doc="image_folder: the digest the download stage prints (empty: not pinned)"
    ),
}

# A profile's transfer backbone: ImageNet weights fetched and verified, or pretrained here.
BACKBONE: dict[str, Setting] = {
    "model": Setting(tuple(MODELS), doc="the backbone's network, every transfer run's model"),
    "weights": Setting(
        ("imagenet", "pretrain"),
        doc="torchvision's ImageNet file, verified, or a network pretrained here on split",
    ),
    "sources": Setting(str, [], list_of=True, doc="imagenet: where the weights file is fetched"),
    "sha256": Setting(str, [], list_of=True, doc="imagenet: the file's accepted sha256 digests"),
    "split": Setting(str, "", doc="pretrain: the profile's split the backbone trains on"),
}

EVALUATE: dict[str, Setting] = {
    "many_shot_min": Setting(
        int, 100, ranges=(NON_NEGATIVE,), doc="many-shot classes: more training images than this"
    ),
    "few_shot_max": Setting(
        int, 20, ranges=(NON_NEGATIVE,), doc="few-shot classes: fewer training images than this"
    ),
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
