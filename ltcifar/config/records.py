"""The configs every later stage reads (``configs/``), as typed records: ``cfg.lr``, never
``cfg["lr"]``, so a type checker proves each read names a field the config has.

A record's fields are its catalogue table's keys (``catalog``) and what resolution adds (a run's
``name``, ``split``, ``group``; a second stage's first-run settings); ``tests/test_records.py``
keeps both in step, types included. The JSON files keep their exact bytes: the ``configs`` stage
writes plain dicts (``runs``), and ``parse`` turns what a stage reads into a record, refusing an
unknown or missing key in one line. Torch-free, like the whole config layer.
"""

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from ltcifar.errors import PipelineError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")

RERUN_CONFIGS = "run `dvc repro configs`"


def need(value: T | None, setting: str) -> T:
    """A setting a config does not always carry, where the code needs it. None means the
    config lacks it: whoever reads it must be listed as reading it in the catalogue (a method's
    ``reads``, ``runs.settings_read``), so a run only changes when a setting it reads does."""
    if value is None:
        raise PipelineError(
            f"{setting} is not in this config, but the code reads it: ltcifar/config/catalog.py "
            "(or runs.settings_read) must list it as read by what reads it; then " + RERUN_CONFIGS
        )
    return value


def parse(cls: type[R], raw: object, where: str, fix: str = RERUN_CONFIGS) -> R:
    """``raw`` (a JSON object) as a ``cls`` record; one line naming ``where`` and ``fix`` if a
    key is unknown or a field without a default is missing."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{where} is not a JSON object; {fix}")
    known = {f.name for f in fields(cls)}
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    if unknown := sorted(set(raw) - known):
        raise PipelineError(f"{where} has the unknown key {unknown[0]!r}; {fix}")
    if missing := sorted(required - set(raw)):
        raise PipelineError(f"{where} lacks the key {missing[0]!r}; {fix}")
    return cls(**raw)


def as_dict(record: "DataclassInstance") -> dict[str, Any]:
    """A record as the dict its file (and, for a run, the off values) gave: the fields it
    carries, None ones left out. Checkpoint fingerprints and model files hold this."""
    return {k: v for k, v in asdict(record).items() if v is not None}


@dataclass(frozen=True)
class Skipped:
    """The config of a stage outside the active profile (``runconfig.OUTSIDE`` says why): the
    stage writes placeholders and returns before importing torch."""

    skipped: str
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """``configs/runs/<run>.json``: one run's settings (``catalog.RECIPE``) and its ``name``,
    ``split`` and report ``group``; a second stage's evaluated run adds ``second_stage`` and
    ``first_stage``; the backbone's pretraining run has no group.

    A run config carries only the settings its methods read (``runs.settings_read``), so a
    setting that some runs lack is ``T | None``, None where the run does not carry it: the type
    checker makes every reader narrow it with ``need``, which raises a one-line error naming
    the setting. A catalogue default in its place would let a method read a setting it does not
    declare and silently get the default, which its config does not record: editing it in
    params.yaml would then change that run without rerunning it. The optional features
    (``catalog.OFF``) default to their off values, as a config that leaves them off means.
    """

    name: str
    split: str
    model: str
    loss: str
    sampler: str
    mixup: str
    epochs: int
    seeds: list[int]
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    milestones: list[int] | None = None
    gamma: float | None = None
    warmup_epochs: int
    warmup: str | None = None
    shortcut: str | None = None
    head: str
    label_smoothing: float | None = None
    weighting: str | None = None
    beta: float | None = None
    focal_gamma: float | None = None
    la_tau: float | None = None
    expert_taus: list[float] | None = None
    ldam_max_margin: float | None = None
    ldam_scale: float | None = None
    mixup_alpha: float | None = None
    balanced_mixup_alpha: float | None = None
    cutmix_alpha: float | None = None
    lr_backbone_factor: float | None = None
    input_size: int | None = None
    stem: str | None = None
    augment: bool
    randaugment_ops: int | None = None
    randaugment_magnitude: int | None = None
    pad_mode: str | None = None
    checkpoint: str
    checkpoint_every: int
    precision: str
    compile: str
    channels_last: bool
    deterministic: bool
    eval_batch_size: int
    lr_base_batch: int | None = None
    drw_from: float = 1.0
    drs_from: float = 1.0
    posthoc_tau: float = 0.0
    posthoc_tau_grid: list[float] = field(default_factory=list)
    grad_clip: float = 0.0
    stack_seeds: bool = False
    finetune: str = "scratch"
    processes: int = 1
    lr_scaling: str = "none"
    augment_policy: str = "none"
    cutout: int = 0
    experts: int = 1
    patience: int = 0
    rotation: float = 0.0
    group: str | None = None
    second_stage: str | None = None
    first_stage: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrainedConfig(RunConfig):
    """The ``config`` a model file holds: its run's, with the post-hoc tau training chose, and
    after a second stage what that chose (``training.second_stage``: tau, LWS's scales,
    MaxNorm's limit), each None where nothing chose it."""

    tau: float | None = None
    lws_scale_min: float | None = None
    lws_scale_max: float | None = None
    max_norm_limit: float | None = None


@dataclass(frozen=True, kw_only=True)
class SecondConfig:
    """``configs/second/<name>.json``: a second stage's method (``catalog.SECOND``) with only
    the settings it reads (``catalog.SECOND_STAGES``; the others None, as in ``RunConfig``),
    and what it takes from its first run (``second.FROM_RUN``; ``pad_mode`` only if it
    augments)."""

    name: str
    run: str
    split: str
    method: str
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    tau_grid: list[float] | None = None
    bn_stats: str | None = None
    max_norm: float | None = None
    beta: float | None = None
    seeds: list[int]
    augment: bool
    pad_mode: str | None = None
    channels_last: bool
    eval_batch_size: int


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """One split of ``configs/splits.json`` (``catalog.SPLIT``): the one draw of ``seed``, or
    several, one of each seed in ``draws`` (then ``seed`` is None: the draws replace it)."""

    dataset: str
    shape: str
    n_max: int
    imbalance: float
    n_min: int
    k: int
    val_per_class: int
    val_policy: str
    sampling: str
    seed: int | None = None
    draws: list[int] | None = None


@dataclass(frozen=True, kw_only=True)
class ArchiveSource:
    """A catalogued dataset in ``configs/download.json``: its archives' sources and MD5s."""

    sources: list[str]
    md5: dict[str, list[str]]


@dataclass(frozen=True, kw_only=True)
class ImageFolderSource:
    """An image folder in ``configs/download.json`` (``catalog.DOWNLOAD``)."""

    kind: str
    sources: list[str]
    image_size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class ImagenetBackbone:
    """``configs/backbone.json`` with ``weights: imagenet``: where the verified file comes from."""

    model: str
    weights: str
    sources: list[str]
    sha256: list[str]


@dataclass(frozen=True, kw_only=True)
class PretrainBackbone:
    """``configs/backbone.json`` with ``weights: pretrain``: the split (its spec, so no split
    file is needed) and the run that pretrains the backbone here."""

    model: str
    weights: str
    split: str
    split_spec: SplitConfig
    run: RunConfig


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """``configs/evaluate.json``: the active profile and the shot groups' bounds."""

    profile: str
    many_shot_min: int
    few_shot_max: int
