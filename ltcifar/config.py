"""params.yaml: its schema, its cross-checks, and the resolved config of every run.

The README's six concepts:
1. **candidate**: the run under study; top-level recipe keys apply to it alone (``-S loss=ldam``).
2. **recipe**: the shared training recipe and every method's settings.
3. **runs**: report runs as overrides on the recipe; ``transfer_runs`` start from a backbone.
4. **splits**: the named training subsets (long-tailed or balanced) that runs train on.
5. **profiles**: datasets, splits, ``recipe`` (defaults), ``budget`` (imposed), ``backbone``.
6. **seeds**: ``recipe.seeds``; every run trains once per seed and reports mean ± std.

The torch-free ``configs`` stage validates params.yaml and writes what each later stage reads
into ``configs/`` (``stage_configs``), so a stage depends on files, never on params keys.
"""

import math
import re
from pathlib import Path

from ltcifar import catalog
from ltcifar.methods import check
from ltcifar.params import REQUIRED, Field, MapOf, ParamsError, printable, read_yaml, validate
from ltcifar.second_config import (
    SECOND,
    check_second_stage,
    evaluated_config,
    second_config,
)

CANDIDATE = "candidate"
BACKBONE = "backbone"
RUN_GROUPS = ("runs", "transfer_runs")
# A name params.yaml may use for a pair of methods, expanded when a run is resolved, so no later
# code sees it: the seed study's "Balanced Mixup" is ordinary mixup on class-balanced batches.
MIXUP_ALIASES = {"sampler_mixup": {"sampler": "class_balanced", "mixup": "mixup"}}

RECIPE = {
    "model": Field(tuple(catalog.MODELS), "resnet32"),
    "loss": Field(tuple(catalog.LOSSES), "cross_entropy"),
    "sampler": Field(tuple(catalog.SAMPLERS), "instance"),
    "mixup": Field((*catalog.MIXUPS, *MIXUP_ALIASES), "none"),
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
    "head": Field(("auto", "linear", "cosine"), "auto"),
    "label_smoothing": Field(float, 0.0),
    "weighting": Field(("effective", "inverse"), "effective"),
    "beta": Field(float, 0.9999),
    "focal_gamma": Field(float, 1.0),
    "la_tau": Field(float, 1.0),
    "posthoc_tau": Field(float, 0.0),
    "posthoc_tau_grid": Field(float, [], list_of=True),
    "ldam_max_margin": Field(float, 0.5),
    "ldam_scale": Field(float, 30.0),
    "drw_from": Field(float, 1.0),
    "drs_from": Field(float, 1.0),
    "mixup_alpha": Field(float, 1.0),
    "balanced_mixup_alpha": Field(float, 0.2),
    "cutmix_alpha": Field(float, 1.0),
    "finetune": Field(("scratch", "linear", "bn_fc", "full"), "scratch"),
    "lr_backbone_factor": Field(float, 1.0),
    "input_size": Field(int, 0),
    "stem": Field(("imagenet", "cifar"), "imagenet"),
    "augment": Field(bool, True),
    "pad_mode": Field(("reflect", "zeros"), "zeros"),
    "checkpoint": Field(("best_val", "last"), "last"),
    "checkpoint_every": Field(int, 10),
    "precision": Field(("bf16", "fp32"), "bf16"),
    "compile": Field(("auto", "always", "never"), "auto"),
    "stack_seeds": Field(bool, False),
    "channels_last": Field(bool, True),
    "deterministic": Field(bool, False),
    "grad_clip": Field(float, 0.0),
    "eval_batch_size": Field(int, 1024),
    "processes": Field(int, 1),
    "lr_scaling": Field(("none", "linear", "sqrt"), "none"),
    "lr_base_batch": Field(int, 128),
}
RUN = {"split": Field(str), **RECIPE}

# Settings every run reads, whatever its methods; the rest come from ``settings_read``.
BASE = (
    "name", "split", "model", "loss", "sampler", "mixup", "seeds", "epochs", "batch_size",
    "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs", "augment",
    "checkpoint", "checkpoint_every", "precision", "compile", "channels_last", "deterministic",
    "eval_batch_size",
)  # fmt: skip

# Ranges a type cannot express, in order; each test holds for allowed values (``x > 0``): NaN fails.
RANGES = (
    (("epochs", "batch_size", "lr", "eval_batch_size", "checkpoint_every", "processes",
      "lr_base_batch", "mixup_alpha", "balanced_mixup_alpha", "cutmix_alpha"),
     lambda x: x > 0, "must be > 0"),
    (("momentum", "weight_decay", "grad_clip", "label_smoothing", "focal_gamma"),
     lambda x: x >= 0, "must be >= 0"),
    (("beta",), lambda x: 0 < x < 1, "must be within (0, 1)"),
    (("drw_from", "drs_from"), lambda x: 0 <= x <= 1, "must be within [0, 1] (1 = off)"),
    (("seeds",), bool, "is empty; give at least one seed"),
    (("warmup_epochs",), lambda x: x >= 0, "must be >= 0"),
)  # fmt: skip

SPLIT = {
    "dataset": Field(str),  # one of the profile's datasets (checked in _check_split)
    "shape": Field(("exp", "step", "none")),
    "n_max": Field(int, 0),
    "imbalance": Field(float, 100.0),
    "n_min": Field(int, 0),
    "k": Field(int, 1),
    "val_per_class": Field(int, 0),
    "val_policy": Field(("reserve", "exact"), "reserve"),
    "sampling": Field(("seeded", "ldam"), "seeded"),
    "seed": Field(int, 0),
}

# kind archives: a catalogued dataset, MD5-verified; image_folder: any name, the user's own images.
DOWNLOAD = {
    "kind": Field(("archives", "image_folder"), "archives"),
    "sources": Field(str, list_of=True),
    "md5": MapOf(Field(str, list_of=True), required=False),
    "image_size": Field(int, 0),
    "sha256": Field(str, ""),
}
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # it names data/raw/<name>/ and <name>.npz
SHA256 = re.compile(r"[0-9a-fA-F]{64}")

STRUCTURE = {
    "profile": Field(str),
    "recipe": RECIPE,
    "runs": MapOf(Field(dict), required=False),
    "transfer_runs": MapOf(Field(dict), required=False),
    "second_stages": MapOf(SECOND, required=False),
    "profiles": MapOf(
        {
            "datasets": Field(str, list_of=True),  # names declared under download
            "splits": MapOf(SPLIT),
            "recipe": Field(dict, {}),
            "budget": Field(dict, {}),
            "backbone": {
                "model": Field(tuple(catalog.MODELS)),
                "weights": Field(("imagenet", "pretrain")),
                "sources": Field(str, [], list_of=True),
                "sha256": Field(str, [], list_of=True),
                "split": Field(str, ""),
                "recipe": Field(dict, {}),
            },
        }
    ),
    "download": MapOf(DOWNLOAD),
    "evaluate": {"many_shot_min": Field(int, 100), "few_shot_max": Field(int, 20)},
}


def _split_top_level(raw: object) -> tuple[dict, dict]:
    """params.yaml's structure blocks, and the candidate's own keys (any run key)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml must be a mapping of keys, got {raw!r}")
    unknown = sorted((k for k in raw if k not in STRUCTURE and k not in RUN), key=str)
    if unknown:
        raise ParamsError(
            f"unknown key {printable(unknown[0])}; top-level keys are {', '.join(STRUCTURE)}, "
            f"or any run key for the candidate: {', '.join(RUN)}"
        )
    structure = {k: v for k, v in raw.items() if k in STRUCTURE}
    return structure, {k: v for k, v in raw.items() if k in RUN}


def _check_values(cfg: dict, where: str) -> None:
    """``RANGES``, and every float finite."""
    for key, value in cfg.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamsError(f"{where}{key} = {value} must be a finite number")
    for keys, allowed, wording in RANGES:
        for key in keys:
            if key in cfg and not allowed(cfg[key]):
                shown = "" if key == "seeds" else f" = {cfg[key]}"
                raise ParamsError(f"{where}{key}{shown} {wording}")


def _check_split(key: str, split: dict, datasets: list[str]) -> None:
    if split["dataset"] not in datasets:
        raise ParamsError(
            f"{key}.dataset = {split['dataset']!r} is not in this profile's datasets; "
            f"choose one of: {', '.join(datasets)}"
        )
    if split["shape"] == "step" and split["n_min"] <= 0:
        raise ParamsError(f"{key}.n_min = {split['n_min']} must be > 0 for shape 'step'")
    if split["shape"] == "exp" and not (1 <= split["imbalance"] < math.inf):
        raise ParamsError(f"{key}.imbalance = {split['imbalance']} must be >= 1 and finite")
    if split["shape"] == "step" and split["k"] < 1:
        raise ParamsError(f"{key}.k = {split['k']} must be >= 1 for shape 'step'")
    for k in ("n_max", "n_min", "val_per_class"):
        if split[k] < 0:
            raise ParamsError(f"{key}.{k} = {split[k]} must be >= 0")


def _check_archives(name: object, entry: dict, where: str) -> None:
    """Archives exist only for the catalogued datasets (an image folder takes any other name)."""
    if name not in catalog.DATASETS:
        raise ParamsError(
            f"{where} is not a dataset with known archives ({', '.join(catalog.DATASETS)}); "
            f"for a folder of your own images set {where}.kind: image_folder"
        )
    if not entry["md5"]:
        raise ParamsError(f"missing key {where}.md5")
    for key in ("image_size", "sha256"):
        if entry[key] != DOWNLOAD[key].default:
            raise ParamsError(f"{where}.{key} applies to kind image_folder only")


def _check_image_folder(name: object, entry: dict, where: str) -> None:
    if not isinstance(name, str) or name in catalog.DATASETS or not FOLDER_NAME.fullmatch(name):
        raise ParamsError(
            f"{where}.kind = 'image_folder' needs a name of letters, digits, _ and - that is "
            f"not a built-in dataset ({', '.join(catalog.DATASETS)})"
        )
    if entry["md5"]:
        raise ParamsError(f"{where}.md5: an image folder is pinned by sha256; remove md5")
    if not entry["image_size"] > 0:
        raise ParamsError(f"{where}.image_size = {entry['image_size']} must be > 0")
    if entry["sha256"] and not SHA256.fullmatch(entry["sha256"]):
        raise ParamsError(
            f"{where}.sha256 = {entry['sha256']!r} must be the 64-digit digest the download "
            "stage prints, or empty"
        )


def _check_profile(params: dict, pname: str, prof: dict) -> None:
    where = f"profiles.{pname}."
    for block in ("recipe", "budget"):
        prof[block] = validate(prof[block], RECIPE, f"{where}{block}.", partial=True)
        _check_values(prof[block], f"{where}{block}.")
    for ds in prof["datasets"]:
        if ds not in params["download"]:
            raise ParamsError(
                f"{where}datasets names {ds!r}, which download does not declare; choose one of: "
                f"{', '.join(map(printable, params['download']))}"
            )
    for sname, split in prof["splits"].items():
        _check_split(f"{where}splits.{sname}", split, prof["datasets"])
    bb = prof["backbone"]
    bb["recipe"] = validate(bb["recipe"], RECIPE, f"{where}backbone.recipe.", partial=True)
    if "model" in bb["recipe"]:
        raise ParamsError(f"{where}backbone.recipe.model: set the model as backbone.model")
    if bb["weights"] == "imagenet" and not (bb["sources"] and bb["sha256"]):
        raise ParamsError(
            f"{where}backbone.sources and .sha256 must name the ImageNet weights' file and hash"
        )
    if bb["weights"] == "pretrain" and bb["split"] not in prof["splits"]:
        raise ParamsError(
            f"{where}backbone.split = {bb['split']!r} must name one of this profile's splits: "
            f"{', '.join(prof['splits'])}"
        )


def _check_runs(params: dict) -> None:
    for group in RUN_GROUPS:
        for name, run in params[group].items():
            params[group][name] = validate(run, RUN, f"{group}.{name}.", partial=True)
            _check_values(run, f"{group}.{name}.")
    for name, run in params["transfer_runs"].items():
        if "model" in run:
            raise ParamsError(
                f"transfer_runs.{name}.model: transfer runs use the profile's backbone model "
                "(profiles.<profile>.backbone.model); remove the key"
            )
    names = [*params["runs"], *params["transfer_runs"]]
    twice = sorted({n for n in names if names.count(n) > 1} | ({CANDIDATE, BACKBONE} & set(names)))
    if twice:
        raise ParamsError(
            f"run name {twice[0]!r} is used twice or reserved; run names must be unique and not "
            f"{CANDIDATE!r} or {BACKBONE!r}"
        )
    for name in run_names(params):
        key = "split" if name == CANDIDATE else f"{run_group(params, name)}.{name}.split"
        split = _overrides(params, name).get("split")
        if split is None:
            raise ParamsError(f"missing key {key}")
        for pname, prof in params["profiles"].items():
            if split not in prof["splits"]:
                raise ParamsError(
                    f"{key} = {split!r} is not defined in profiles.{pname}.splits; "
                    f"choose one of: {', '.join(prof['splits'])}"
                )
            tuned = resolve_run(params, name, pname)["posthoc_tau_grid"]
            if tuned and prof["splits"][split]["val_per_class"] == 0:
                raise ParamsError(
                    f"{key} = {split!r}: posthoc_tau_grid chooses tau on validation images, "
                    f"but profiles.{pname}.splits.{split}.val_per_class is 0"
                )


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml; raise ParamsError naming the first bad key. Every run's
    methods are checked under every profile: ``dvc exp run -S profile=...`` cannot fail later."""
    structure, candidate = _split_top_level(read_yaml(path))
    params = validate(structure, STRUCTURE)
    _check_values(params["recipe"], "recipe.")
    params[CANDIDATE] = validate(candidate, RUN, "", partial=True)
    _check_values(params[CANDIDATE], "")
    if params["profile"] not in params["profiles"]:
        raise ParamsError(
            f"profile = {params['profile']!r} has no block under profiles; choose one of: "
            f"{', '.join(params['profiles'])}"
        )
    for name, entry in params["download"].items():
        check_kind = _check_archives if entry["kind"] == "archives" else _check_image_folder
        check_kind(name, entry, f"download.{printable(name)}")
    for pname, prof in params["profiles"].items():
        _check_profile(params, pname, prof)
    _check_runs(params)
    for name in run_names(params):
        where = "the candidate" if name == CANDIDATE else f"{run_group(params, name)}.{name}"
        for pname in params["profiles"]:
            check(resolve_run(params, name, pname), f"{where} (profile {pname})")
    _check_second_stages(params)
    return params


def _check_second_stages(params: dict) -> None:
    runs = all_runs(params)
    for name, entry in params["second_stages"].items():
        profiles = params["profiles"] if entry["run"] in runs else {}
        resolved = {p: resolve_run(params, entry["run"], p) for p in profiles}
        # the run's split, which every profile defines (entry["split"] is checked against it)
        val = {p: profiles[p]["splits"][c["split"]]["val_per_class"] for p, c in resolved.items()}
        check_second_stage(name, entry, runs, resolved, val)


def all_runs(params: dict) -> dict:
    """Every report run (two groups: DVC gives ``transfer_runs`` one more dependency, backbone)."""
    return {name: run for group in RUN_GROUPS for name, run in params[group].items()}


def run_group(params: dict, name: str) -> str:
    return next(g for g in RUN_GROUPS if name in params[g])


def run_names(params: dict) -> list[str]:
    return [CANDIDATE, *all_runs(params)]


def _overrides(params: dict, name: str) -> dict:
    runs = {**all_runs(params), CANDIDATE: params[CANDIDATE]}
    if name not in runs:
        raise ParamsError(f"unknown run {name!r}; choose one of: {', '.join(run_names(params))}")
    return runs[name]


def _layered(params: dict, prof: dict, name: str, *layers: dict) -> dict:
    """recipe <- profile recipe <- ``layers`` <- profile budget, with ``head: auto`` and the
    mixup aliases resolved: the one precedence of every trained config."""
    cfg = {}
    for layer in (params["recipe"], prof["recipe"], *layers, prof["budget"], {"name": name}):
        cfg.update(layer)
    if cfg["head"] == "auto":
        cfg["head"] = "cosine" if cfg["loss"] == "ldam" else "linear"
    return expand_aliases(cfg, name)


def expand_aliases(cfg: dict, where: str) -> dict:
    """``cfg`` with a mixup alias expanded; refused if it sets a sampler too (re-sampling twice)."""
    pair = MIXUP_ALIASES.get(cfg["mixup"])
    if pair is None:
        return cfg
    if cfg["sampler"] != "instance":
        raise ParamsError(
            f"{where}: mixup {cfg['mixup']} is {pair}; it sets the sampler itself, so sampler "
            f"{cfg['sampler']} is refused (one prior correction)"
        )
    return {**cfg, **pair}


def resolve_run(params: dict, name: str, profile: str | None = None) -> dict:
    """Every setting of one run (``_layered``); a transfer run layers the backbone recipe first."""
    prof = params["profiles"][profile or params["profile"]]
    bb = prof["backbone"]
    transfer = name in params["transfer_runs"]
    backbone = {**bb["recipe"], "model": bb["model"]} if transfer else {}
    cfg = _layered(params, prof, name, backbone, _overrides(params, name))
    return {**cfg, "transfer": transfer}


def settings_read(cfg: dict) -> list[str]:
    """What a run reads: ``BASE``, its methods' settings (``catalog``) and those of its features."""
    features = [
        (cfg["schedule"] == "multistep", ("milestones", "gamma")),
        (cfg["augment"], ("pad_mode",)),
        (cfg["head"] == "cosine", ("ldam_scale",)),
        (cfg["warmup_epochs"] > 0, ("warmup",)),
        (cfg["drw_from"] < 1, ("drw_from", "weighting", "beta")),
        (cfg["drs_from"] < 1, ("drs_from",)),
        (cfg["posthoc_tau"] > 0, ("posthoc_tau",)),
        (cfg["posthoc_tau_grid"], ("posthoc_tau_grid",)),
        (cfg["grad_clip"] > 0, ("grad_clip",)),
        (cfg["stack_seeds"], ("stack_seeds",)),
        (cfg["finetune"] != "scratch", ("finetune", "lr_backbone_factor")),
        (cfg["processes"] > 1, ("processes",)),
        (cfg["lr_scaling"] != "none", ("lr_scaling", "lr_base_batch")),
    ]
    keys = [
        *BASE,
        *catalog.MODELS[cfg["model"]],
        *catalog.LOSSES[cfg["loss"]],
        *catalog.SAMPLERS[cfg["sampler"]],
        *catalog.MIXUPS[cfg["mixup"]],
        *(key for on, extra in features if on for key in extra),
    ]
    return list(dict.fromkeys(keys))


def run_config(params: dict, name: str, profile: str | None = None) -> dict:
    """What ``configs/runs/<name>.json`` holds: the settings the run reads, and its report
    group (transfer, or imbalance / balanced by its split's shape), so no stage guesses it."""
    cfg = resolve_run(params, name, profile)
    shape = params["profiles"][profile or params["profile"]]["splits"][cfg["split"]]["shape"]
    group = "transfer" if cfg["transfer"] else "balanced" if shape == "none" else "imbalance"
    return {**{k: cfg[k] for k in settings_read(cfg)}, "group": group}


def backbone_config(params: dict, profile: str | None = None) -> dict:
    """What the ``backbone`` stage reads: the verified ImageNet weights' sources, or the
    split spec and training config of the backbone this pipeline pretrains itself."""
    prof = params["profiles"][profile or params["profile"]]
    bb = prof["backbone"]
    if bb["weights"] == "imagenet":
        return {k: bb[k] for k in ("model", "weights", "sources", "sha256")}
    cfg = _layered(params, prof, BACKBONE, {"model": bb["model"], "split": bb["split"]})
    cfg["seeds"] = cfg["seeds"][:1]
    return {
        "model": bb["model"],
        "weights": "pretrain",
        "split": bb["split"],
        "split_spec": prof["splits"][bb["split"]],
        "run": {k: cfg[k] for k in settings_read(cfg)},
    }


def download_config(entry: dict) -> dict:
    """What the download stage reads of one dataset: an archive's sources and MD5s (the same
    file as before image folders existed, so no download reruns), or an image folder's keys."""
    if entry["kind"] == "archives":
        return {"sources": entry["sources"], "md5": entry["md5"]}
    return {k: entry[k] for k in ("kind", "sources", "image_size", "sha256")}


def stage_configs(params: dict) -> dict[str, dict]:
    """Every file the ``configs`` stage writes for the active profile, by path in ``configs/``."""
    prof = params["profiles"][params["profile"]]
    files = {f"runs/{name}.json": run_config(params, name) for name in run_names(params)}
    files["download.json"] = {d: download_config(params["download"][d]) for d in prof["datasets"]}
    files["splits.json"] = prof["splits"]
    files["backbone.json"] = backbone_config(params)
    files["evaluate.json"] = {"profile": params["profile"], **params["evaluate"]}
    for name, entry in params["second_stages"].items():
        first = run_config(params, entry["run"])
        files[f"second/{name}.json"] = second_config(name, entry, first)
        files[f"runs/{name}.json"] = evaluated_config(name, entry, first)
    return files


def defaults() -> dict:
    """The recipe's defaults (for tests and benchmarks that build a config by hand)."""
    return {k: f.default for k, f in RECIPE.items() if f.default is not REQUIRED}
