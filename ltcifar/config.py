"""The params.yaml schema, its cross-checks, and the resolved config of one training run.

Layout (see README): top-level keys describe the candidate run; ``recipe`` is the shared
training recipe; ``profiles.<name>`` says which datasets, splits and transfer backbone a profile
uses and how it changes the recipe; ``runs.<name>`` and ``transfer_runs.<name>`` hold each report
run's overrides (see ``resolve_run`` for the precedence).
"""

from pathlib import Path

from ltcifar.datasets import DATASETS
from ltcifar.losses import LOSSES
from ltcifar.methods import check
from ltcifar.mixup import MIXUPS
from ltcifar.models import MODELS
from ltcifar.params import REQUIRED, Field, MapOf, ParamsError, read_yaml, validate
from ltcifar.samplers import SAMPLERS

CANDIDATE = "candidate"


def _choices(registry: dict) -> tuple:
    return tuple(sorted(registry))


MODEL_CHOICES = ("backbone", *_choices(MODELS))  # backbone: the profile's transfer backbone

RECIPE = {
    "model": Field(MODEL_CHOICES, "resnet32"),
    "epochs": Field(int, 200),
    "batch_size": Field(int, 128),
    "lr": Field(float, 0.1),
    "momentum": Field(float, 0.9),
    "nesterov": Field(bool, False),
    "weight_decay": Field(float, 2e-4),
    "schedule": Field(("multistep", "cosine"), "multistep"),
    "milestones": Field(int, [160, 180], list_of=True),
    "gamma": Field(float, 0.1),
    "warmup_epochs": Field(int, 5),
    "warmup": Field(("step", "epoch"), "step"),
    "seeds": Field(int, [0], list_of=True),
    "shortcut": Field(("A", "B"), "A"),
    "head": Field(("linear", "cosine"), "linear"),
    "label_smoothing": Field(float, 0.0),
    "weighting": Field(("effective", "inverse"), "effective"),
    "beta": Field(float, 0.9999),
    "focal_gamma": Field(float, 1.0),
    "la_tau": Field(float, 1.0),
    "posthoc_tau": Field(float, 0.0),
    "ldam_max_margin": Field(float, 0.5),
    "ldam_scale": Field(float, 30.0),
    "drw_from": Field(float, 1.0),
    "drs_from": Field(float, 1.0),
    "mixup_alpha": Field(float, 1.0),
    "balanced_mixup_alpha": Field(float, 0.2),
    "cutmix_alpha": Field(float, 1.0),
    "init": Field(("scratch", "pretrained"), "scratch"),
    "finetune": Field(("full", "bn_fc", "linear"), "full"),
    "lr_backbone_factor": Field(float, 1.0),
    "input_size": Field(int, 0),
    "stem": Field(("imagenet", "cifar"), "imagenet"),
    "augment": Field(bool, True),
    "pad_mode": Field(("reflect", "zeros"), "zeros"),
    "checkpoint": Field(("best_val", "last"), "last"),
    "checkpoint_every": Field(int, 10),
    "precision": Field(("bf16", "fp32"), "bf16"),
    "compile": Field(bool, False),
    "channels_last": Field(bool, True),
    "deterministic": Field(bool, False),
    "eval_batch_size": Field(int, 1024),
}

METHOD = {
    "split": Field(str),
    "model": Field(("auto", *MODEL_CHOICES), "auto"),
    "loss": Field(_choices(LOSSES), "cross_entropy"),
    "sampler": Field(_choices(SAMPLERS), "instance"),
    "mixup": Field(_choices(MIXUPS), "none"),
    "seeds": RECIPE["seeds"],
}

SPLIT = {
    "dataset": Field(_choices(DATASETS)),
    "profile": Field(("exp", "step", "none")),
    "n_max": Field(int, 0),
    "imbalance": Field(float, 100.0),
    "n_min": Field(int, 0),
    "k": Field(int, 1),
    "val_per_class": Field(int, 0),
    "val_policy": Field(("reserve", "exact"), "reserve"),
    "sampling": Field(("seeded", "ldam"), "seeded"),
    "seed": Field(int, 0),
}

SCHEMA = {
    "profile": Field(("full", "quick"), "full"),
    **{k: v for k, v in METHOD.items()},
    "recipe": RECIPE,
    "pretrained": MapOf({"sources": Field(str, list_of=True), "sha256": Field(str, list_of=True)}),
    "download": MapOf(
        {"sources": Field(str, list_of=True), "md5": MapOf(Field(str, list_of=True))}
    ),
    "profiles": MapOf(
        {
            "datasets": Field(_choices(DATASETS), list_of=True),
            "splits": MapOf(SPLIT),
            "recipe": Field(dict, {}),
            "force": Field(dict, {}),
            "backbone": {
                "source": Field(("imagenet", "run")),
                "arch": Field(("resnet18", "resnet50"), "resnet18"),
                "run": Field(str, ""),
            },
        }
    ),
    "evaluate": {
        "many_shot_min": Field(int, 100),
        "few_shot_max": Field(int, 20),
    },
    "runs": MapOf(Field(dict), required=False),
    "transfer_runs": MapOf(Field(dict), required=False),
}
RUN = {**RECIPE, **{k: v for k, v in METHOD.items() if k != "model"}}


def _check_profiles(params: dict) -> None:
    for pname, prof in params["profiles"].items():
        for block in ("recipe", "force"):
            prof[block] = validate(prof[block], RECIPE, f"profiles.{pname}.{block}.", partial=True)
        for sname, split in prof["splits"].items():
            key = f"profiles.{pname}.splits.{sname}"
            if split["dataset"] not in prof["datasets"]:
                raise ParamsError(
                    f"{key}.dataset = {split['dataset']!r} is not in profiles.{pname}.datasets"
                )
            if split["profile"] == "step" and split["n_min"] <= 0:
                raise ParamsError(f"{key}.n_min must be > 0 for profile 'step'")
            if split["profile"] == "exp" and split["imbalance"] < 1:
                raise ParamsError(f"{key}.imbalance = {split['imbalance']} must be >= 1")
        for ds in prof["datasets"]:
            if ds not in params["download"]:
                raise ParamsError(
                    f"profiles.{pname}.datasets names {ds!r} but download.{ds} is missing"
                )
    if params["profile"] not in params["profiles"]:
        raise ParamsError(
            f"profile = {params['profile']!r} has no block profiles.{params['profile']}"
        )


def _check_runs(params: dict) -> None:
    for group in RUN_GROUPS:
        for name, run in params[group].items():
            params[group][name] = validate(run, RUN, f"{group}.{name}.", partial=True)
    clash = set(params["runs"]) & set(params["transfer_runs"]) | {CANDIDATE} & set(all_runs(params))
    if clash:
        raise ParamsError(f"run name {sorted(clash)[0]!r} is used twice; run names must be unique")
    for name, run in {CANDIDATE: {k: params[k] for k in METHOD}, **all_runs(params)}.items():
        where = "the candidate" if name == CANDIDATE else f"{run_group(params, name)}.{name}"
        split_key = "split" if name == CANDIDATE else f"{where}.split"
        if "split" not in run:
            raise ParamsError(f"missing key {split_key}")
        for pname, prof in params["profiles"].items():
            if run["split"] not in prof["splits"]:
                raise ParamsError(
                    f"{split_key} = {run['split']!r} is not defined in profiles.{pname}.splits; "
                    f"choose one of: {', '.join(prof['splits'])}"
                )


def _check_backbones(params: dict) -> None:
    for pname, prof in params["profiles"].items():
        backbone = prof["backbone"]
        if backbone["source"] == "run" and backbone["run"] not in params["runs"]:
            raise ParamsError(
                f"profiles.{pname}.backbone.run = {backbone['run']!r} must name one of runs: "
                f"{', '.join(params['runs'])}"
            )
        if backbone["source"] == "imagenet" and backbone["arch"] not in params["pretrained"]:
            raise ParamsError(
                f"profiles.{pname}.backbone.arch = {backbone['arch']!r} has no "
                f"pretrained.{backbone['arch']} block"
            )


def _check(params: dict) -> dict:
    """Cross-field checks that a per-key schema cannot express, then every run's combination
    of methods under every profile (so `dvc exp run -S profile=...` cannot hit one later)."""
    _check_profiles(params)
    _check_runs(params)
    _check_backbones(params)
    for name in all_runs(params) | {CANDIDATE: None}:
        where = "the candidate" if name == CANDIDATE else f"{run_group(params, name)}.{name}"
        for pname in params["profiles"]:
            check(resolve_run(params, name, pname), f"{where} (profile {pname})")
    return params


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml; raise ParamsError naming the first bad key."""
    return _check(validate(read_yaml(path), SCHEMA))


def active_profile(params: dict, profile: str | None = None) -> dict:
    return params["profiles"][profile or params["profile"]]


RUN_GROUPS = ("runs", "transfer_runs")


def all_runs(params: dict) -> dict:
    """Every report run: ``runs`` and ``transfer_runs`` (separate only so that DVC can order
    transfer runs after the run whose checkpoint they start from)."""
    return {name: run for group in RUN_GROUPS for name, run in params[group].items()}


def run_group(params: dict, name: str) -> str:
    return next(g for g in RUN_GROUPS if name in params[g])


def run_names(params: dict) -> list[str]:
    return [CANDIDATE, *all_runs(params)]


def resolve_run(params: dict, name: str, profile: str | None = None) -> dict:
    """The full config of one run: recipe <- profile recipe <- the run's own keys <- profile force.

    A profile's ``recipe`` holds defaults that runs may override (quick's smaller model); its
    ``force`` holds what it imposes on every run (quick's few epochs and one seed).

    ``model: backbone`` becomes the profile's backbone architecture (a torchvision ResNet for
    ImageNet weights, or the model of the run whose checkpoint is the backbone).
    """
    if name != CANDIDATE and name not in all_runs(params):
        raise ParamsError(f"unknown run {name!r}; choose one of: {', '.join(run_names(params))}")
    overrides = {k: params[k] for k in METHOD} if name == CANDIDATE else all_runs(params)[name]
    overrides = {k: v for k, v in overrides.items() if not (k == "model" and v == "auto")}
    defaults = {k: f.default for k, f in METHOD.items() if f.default is not REQUIRED}
    prof = active_profile(params, profile)
    cfg = {**defaults, **params["recipe"], **prof["recipe"], **overrides, **prof["force"]}
    cfg["name"] = name
    cfg["split_spec"] = prof["splits"].get(cfg["split"])
    backbone, arch = dict(prof["backbone"]), None
    if backbone["source"] == "imagenet":
        backbone["sources"] = params["pretrained"][backbone["arch"]]["sources"]
        arch = f"tv_{backbone['arch']}"
    elif cfg["model"] == "backbone" or cfg["init"] == "pretrained":
        arch = resolve_run(params, backbone["run"], profile)["model"]
    cfg["backbone"], cfg["backbone_model"] = backbone, arch
    if cfg["model"] == "backbone":
        cfg["model"] = arch
    return cfg
