"""The params.yaml schema, its cross-checks, and the resolved config of one training run.

Layout (see README): top-level keys describe the candidate run; ``recipe`` is the shared
training recipe; ``profiles.<name>`` says which datasets and splits a profile uses and how it
overrides the recipe; ``runs.<name>`` holds each report run's overrides. A run's config is
``recipe`` <- ``profiles[profile].recipe`` <- the run's own keys.
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


RECIPE = {
    "model": Field(_choices(MODELS), "resnet32"),
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
    "model": Field(("auto", *_choices(MODELS)), "auto"),
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
    "download": MapOf(
        {"sources": Field(str, list_of=True), "md5": MapOf(Field(str, list_of=True))}
    ),
    "profiles": MapOf(
        {
            "datasets": Field(_choices(DATASETS), list_of=True),
            "splits": MapOf(SPLIT),
            "recipe": Field(dict, {}),
        }
    ),
    "evaluate": {
        "many_shot_min": Field(int, 100),
        "few_shot_max": Field(int, 20),
    },
    "runs": MapOf(Field(dict), required=False),
}
RUN = {**RECIPE, **{k: v for k, v in METHOD.items() if k != "model"}}


def _check(params: dict) -> dict:
    """Cross-field checks that a per-key schema cannot express."""
    for pname, prof in params["profiles"].items():
        prof["recipe"] = validate(prof["recipe"], RECIPE, f"profiles.{pname}.recipe.", partial=True)
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
    for name, run in params["runs"].items():
        params["runs"][name] = validate(run, RUN, f"runs.{name}.", partial=True)
    runs = {CANDIDATE: {k: params[k] for k in METHOD}, **params["runs"]}
    for name, run in runs.items():
        split_key = "split" if name == CANDIDATE else f"runs.{name}.split"
        if "split" not in run:
            raise ParamsError(f"missing key {split_key}")
        for pname, prof in params["profiles"].items():
            if run["split"] not in prof["splits"]:
                raise ParamsError(
                    f"{split_key} = {run['split']!r} is not defined in profiles.{pname}.splits; "
                    f"choose one of: {', '.join(prof['splits'])}"
                )
            where = "the candidate" if name == CANDIDATE else f"runs.{name}"
            check(resolve_run(params, name, pname), f"{where} (profile {pname})")
    return params


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml; raise ParamsError naming the first bad key."""
    return _check(validate(read_yaml(path), SCHEMA))


def active_profile(params: dict, profile: str | None = None) -> dict:
    return params["profiles"][profile or params["profile"]]


def run_names(params: dict) -> list[str]:
    return [CANDIDATE, *params["runs"]]


def resolve_run(params: dict, name: str, profile: str | None = None) -> dict:
    """The full config of one run: recipe <- profile recipe <- the run's own overrides."""
    if name != CANDIDATE and name not in params["runs"]:
        raise ParamsError(f"unknown run {name!r}; choose one of: {', '.join(run_names(params))}")
    overrides = {k: params[k] for k in METHOD} if name == CANDIDATE else params["runs"][name]
    overrides = {k: v for k, v in overrides.items() if not (k == "model" and v == "auto")}
    defaults = {k: f.default for k, f in METHOD.items() if f.default is not REQUIRED}
    prof = active_profile(params, profile)
    cfg = {**defaults, **params["recipe"], **prof["recipe"], **overrides, "name": name}
    cfg["split_spec"] = prof["splits"].get(cfg["split"])
    return cfg
