"""params.yaml: its structure, its cross-checks, and every refusal, before any work.

The README's six concepts:
1. **candidate**: the run under study; top-level recipe keys apply to it alone (``-S loss=ldam``).
2. **recipe**: the shared training recipe and every method's settings.
3. **runs**: report runs as overrides on the recipe; ``transfer_runs`` start from a backbone.
4. **splits**: the named training subsets (long-tailed or balanced) that runs train on.
5. **profiles**: datasets, splits, the runs it trains, ``recipe`` (defaults), ``budget``
   (imposed), ``backbone``.
6. **seeds**: ``recipe.seeds``; every run trains once per seed and reports mean ± std.

Settings, defaults and ranges are the catalogue's (``catalog``); this module composes them into
params.yaml's structure and checks what spans several keys. Every run is checked under every
profile that trains it (``runs.profile_runs``), so ``dvc exp run -S profile=...`` cannot fail
after the ``configs`` stage.
"""

import re
from pathlib import Path

from ltcifar.config import catalog
from ltcifar.config.catalog import Setting
from ltcifar.config.rules import check
from ltcifar.config.runs import (
    BACKBONE,
    CANDIDATE,
    RUN_GROUPS,
    all_runs,
    overrides,
    profile_runs,
    profile_second_stages,
    resolve_run,
    run_group,
    run_names,
    run_record,
)
from ltcifar.config.schema import (
    MapOf,
    ParamsError,
    did_you_mean,
    printable,
    read_yaml,
    validate,
)
from ltcifar.config.second import check_second_stage
from ltcifar.config.stacking import stacking_refusal

RUN = {"split": Setting(str), **catalog.RECIPE}
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # it names data/raw/<name>/ and <name>.npz
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
PROFILE_BACKBONE = {
    **catalog.BACKBONE,
    "recipe": Setting(dict, {}, doc="recipe changes of every transfer run: its fine-tuning"),
}
# A profile (``profiles.<name>``); the docs, as the catalogue's, are its reference in
# docs/params.md.
PROFILE = {
    "datasets": Setting(str, list_of=True, doc="the datasets it uses, names declared in download"),
    "splits": MapOf(catalog.SPLIT, doc="its named training subsets (Splits, below)"),
    "recipe": Setting(dict, {}, doc="recipe defaults of its runs, which a run may override"),
    "budget": Setting(dict, {}, doc="recipe keys imposed on every run it trains"),
    "runs": Setting(
        str,
        None,
        list_of=True,
        ranges=(catalog.NOT_EMPTY, catalog.DISTINCT),
        doc="the runs it trains (report, transfer, candidate); absent: every run but those "
        "another profile lists on a split this one lacks",
    ),
    "second_stages": Setting(
        str,
        None,
        list_of=True,
        ranges=(catalog.DISTINCT,),
        doc="the second stages it trains; absent: every second stage of a run it trains",
    ),
    "backbone": Setting(
        dict,
        None,
        doc="its transfer runs' backbone (Backbone, below), needed if it trains one",
    ),
}
DOWNLOAD = {
    **catalog.DOWNLOAD,
    "md5": MapOf(Setting(str, list_of=True), False, doc="archives: each file's accepted MD5s"),
}

STRUCTURE = {
    "profile": Setting(str),
    "recipe": catalog.RECIPE,
    "runs": MapOf(Setting(dict), required=False),
    "transfer_runs": MapOf(Setting(dict), required=False),
    "second_stages": MapOf(catalog.SECOND, required=False),
    "profiles": MapOf(PROFILE),
    "download": MapOf(DOWNLOAD),
    "evaluate": catalog.EVALUATE,
}


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml; raise ParamsError naming the first bad key."""
    structure, candidate = _split_top_level(read_yaml(path))
    params = validate(structure, STRUCTURE)
    params[CANDIDATE] = validate(candidate, RUN, "", partial=True)
    if params["profile"] not in params["profiles"]:
        raise ParamsError(
            f"profile = {params['profile']!r} has no block under profiles; choose one of: "
            f"{', '.join(params['profiles'])}{did_you_mean(params['profile'], params['profiles'])}"
        )
    for name, entry in params["download"].items():
        check_kind = _check_archives if entry["kind"] == "archives" else _check_image_folder
        check_kind(name, entry, f"download.{printable(name)}")
    for pname, prof in params["profiles"].items():
        _check_profile(params, pname, prof, structure["profiles"][pname]["splits"])
    _check_runs(params)
    included = {pname: profile_runs(params, pname) for pname in params["profiles"]}
    for name in run_names(params):
        where = "the candidate" if name == CANDIDATE else f"{run_group(params, name)}.{name}"
        for pname in params["profiles"]:
            if name in included[pname]:
                _check_resolved(params, name, pname, where)
    _check_second_stages(params)
    return params


def _split_top_level(raw: object) -> tuple[dict, dict]:
    """params.yaml's structure blocks, and the candidate's own keys (any run key)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml must be a mapping of keys, got {raw!r}")
    unknown = sorted((k for k in raw if k not in STRUCTURE and k not in RUN), key=str)
    if unknown:
        raise ParamsError(
            f"unknown key {printable(unknown[0])}; top-level keys are {', '.join(STRUCTURE)}, "
            f"or any run key for the candidate: {', '.join(RUN)}"
            + did_you_mean(unknown[0], [*STRUCTURE, *RUN])
        )
    structure = {k: v for k, v in raw.items() if k in STRUCTURE}
    return structure, {k: v for k, v in raw.items() if k in RUN}


def _check_split(key: str, split: dict, datasets: list[str], raw: dict) -> None:
    """One split's cross-checks; ``raw``, its keys as written (``seed`` has a default). A split
    without ``draws`` keeps no such key, so its files stay byte-identical; one with draws keeps
    no ``seed``, which they replace."""
    if split["dataset"] not in datasets:
        raise ParamsError(
            f"{key}.dataset = {split['dataset']!r} is not in this profile's datasets; "
            f"choose one of: {', '.join(datasets)}{did_you_mean(split['dataset'], datasets)}"
        )
    if split["shape"] == "step" and split["n_min"] <= 0:
        raise ParamsError(f"{key}.n_min = {split['n_min']} must be > 0 for shape 'step'")
    if split["shape"] == "step" and 0 < split["n_max"] < split["n_min"]:
        raise ParamsError(
            f"{key}.n_min = {split['n_min']} must not exceed n_max = {split['n_max']}"
        )
    if split["draws"] is None:
        del split["draws"]
    elif "seed" in raw:
        raise ParamsError(f"{key}: give seed or draws, not both (draws are the draws' seeds)")
    else:
        del split["seed"]


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
        if entry[key] != catalog.DOWNLOAD[key].default:
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


def _check_profile(params: dict, pname: str, prof: dict, raw_splits: dict) -> None:
    where = f"profiles.{pname}."
    for block in ("recipe", "budget"):
        prof[block] = validate(prof[block], catalog.RECIPE, f"{where}{block}.", partial=True)
    for ds in prof["datasets"]:
        if ds not in params["download"]:
            raise ParamsError(
                f"{where}datasets names {ds!r}, which download does not declare; choose one of: "
                f"{', '.join(map(printable, params['download']))}"
                + did_you_mean(ds, params["download"])
            )
    for sname, split in prof["splits"].items():
        _check_split(f"{where}splits.{sname}", split, prof["datasets"], raw_splits[sname])
    if prof["backbone"] is not None:
        prof["backbone"] = _check_backbone(prof["backbone"], prof, where)


def _check_backbone(raw: dict, prof: dict, where: str) -> dict:
    bb = validate(raw, PROFILE_BACKBONE, f"{where}backbone.")
    bb["recipe"] = validate(bb["recipe"], catalog.RECIPE, f"{where}backbone.recipe.", partial=True)
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
    if bb["weights"] == "pretrain" and "draws" in prof["splits"][bb["split"]]:
        raise ParamsError(
            f"{where}backbone.split = {bb['split']!r} has draws; the backbone pretrains on "
            "one: name a split without draws"
        )
    return bb


def _check_runs(params: dict) -> None:
    for group in RUN_GROUPS:
        for name, run in params[group].items():
            params[group][name] = validate(run, RUN, f"{group}.{name}.", partial=True)
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
    keys = {
        n: "split" if n == CANDIDATE else f"{run_group(params, n)}.{n}.split"
        for n in run_names(params)
    }
    for name in run_names(params):
        if overrides(params, name).get("split") is None:
            raise ParamsError(f"missing key {keys[name]}")
    for pname, prof in params["profiles"].items():
        _check_profile_runs(params, pname, prof, keys)


def _check_profile_runs(params: dict, pname: str, prof: dict, keys: dict[str, str]) -> None:
    """The runs a profile trains: named runs that exist, each on one of its splits, at least
    one, and a backbone for its transfer runs."""
    where = f"profiles.{pname}"
    for name in prof["runs"] or ():
        if name not in keys:
            raise ParamsError(
                f"{where}.runs names {name!r}, which is not a run; choose one of: "
                f"{', '.join(run_names(params))}{did_you_mean(name, run_names(params))}"
            )
    included = profile_runs(params, pname)
    for name in included:
        split = overrides(params, name)["split"]
        if split not in prof["splits"]:
            listed = "" if prof["runs"] else f" ({where} trains every run no profile lists)"
            raise ParamsError(
                f"{keys[name]} = {split!r} is not defined in {where}.splits; "
                f"choose one of: {', '.join(prof['splits'])}{listed}"
                + did_you_mean(split, prof["splits"])
            )
    if not included:
        raise ParamsError(f"{where} trains no run: name the runs it trains in {where}.runs")
    transfer = [n for n in included if n in params["transfer_runs"]]
    if transfer and prof["backbone"] is None:
        raise ParamsError(
            f"missing key {where}.backbone: its transfer runs start from it ({', '.join(transfer)})"
        )


def _check_resolved(params: dict, name: str, pname: str, where: str) -> None:
    """What only a run's resolved settings show: its methods' combination (``rules``), what
    needs validation images, the warm-up's length, and what stacked seeds and DDP rule out."""
    resolved = resolve_run(params, name, pname)
    at = f"{where} (profile {pname})"
    check(resolved, at)
    cfg = run_record(resolved)
    split = params["profiles"][pname]["splits"][cfg.split]
    needs_val = [
        (cfg.posthoc_tau_grid, "posthoc_tau_grid chooses tau on validation images"),
        (
            cfg.checkpoint != "last",
            f"checkpoint: {cfg.checkpoint} selects on validation images",
        ),
    ]
    for on, why in needs_val:
        if on and split["val_per_class"] == 0:
            raise ParamsError(
                f"{at}: {why}, but profiles.{pname}.splits.{cfg.split}.val_per_class is 0"
            )
    if cfg.warmup_epochs > cfg.epochs:
        raise ParamsError(
            f"{at}: warmup_epochs = {cfg.warmup_epochs} is longer than the run "
            f"(epochs = {cfg.epochs})"
        )
    if cfg.batch_size % cfg.processes:
        raise ParamsError(
            f"{at}: batch_size = {cfg.batch_size} (the global batch) must be a multiple of "
            f"processes = {cfg.processes}"
        )
    if cfg.stack_seeds and len(cfg.seeds) > 1 and (refused := stacking_refusal(cfg)):
        raise ParamsError(f"{at}: stack_seeds cannot be used: {refused}")


def _check_second_stages(params: dict) -> None:
    """Each second stage against its run, under every profile that trains it; a profile's
    ``second_stages`` must name second stages of runs it trains."""
    runs = all_runs(params)
    for pname, prof in params["profiles"].items():
        trained = profile_runs(params, pname)
        for name in prof["second_stages"] or ():
            entry = params["second_stages"].get(name)
            if entry is None:
                raise ParamsError(
                    f"profiles.{pname}.second_stages names {name!r}, which is not a second "
                    f"stage; choose one of: {', '.join(params['second_stages'])}"
                    + did_you_mean(name, params["second_stages"])
                )
            if entry["run"] in runs and entry["run"] not in trained:
                raise ParamsError(
                    f"profiles.{pname}.second_stages names {name!r}, whose run "
                    f"{entry['run']!r} is not one of its runs; add it to profiles.{pname}.runs"
                )
    included = {p: profile_second_stages(params, p) for p in params["profiles"]}
    for name, entry in params["second_stages"].items():
        if entry["run"] in runs and entry["split"] != overrides(params, entry["run"])["split"]:
            raise ParamsError(
                f"second_stages.{name}.split = {entry['split']!r} must be run "
                f"{entry['run']!r}'s split, {overrides(params, entry['run'])['split']!r}"
            )
        profiles = {p: prof for p, prof in params["profiles"].items() if name in included[p]}
        drawn = [p for p, prof in profiles.items() if "draws" in prof["splits"][entry["split"]]]
        if drawn:
            raise ParamsError(
                f"second_stages.{name}: split {entry['split']!r} has draws under profile "
                f"{drawn[0]}; second stages re-balance one draw's models: use a split without draws"
            )
        resolved = {p: resolve_run(params, entry["run"], p) for p in profiles}
        # the run's split, which every profile that trains the second stage defines
        val = {p: profiles[p]["splits"][c["split"]]["val_per_class"] for p, c in resolved.items()}
        check_second_stage(name, entry, runs, resolved, val)
