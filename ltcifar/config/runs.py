"""Run resolution: every setting of each run, and what each later stage reads (``configs/``).

A run's settings layer up in one order: the recipe, the profile's recipe, (a transfer run's
backbone recipe), the run's own overrides, the profile's budget. Its resolved config holds only
the settings its methods read (``settings_read``), so a change to one method's setting reruns
only the runs that use it.

The active profile trains its runs and second stages (``profile_runs``); every other one gets a
``skipped`` config of its name alone, so its stages write placeholders, and nothing that another
profile changes reaches it.
"""

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig
from ltcifar.config.runconfig import OUTSIDE, SKIPPED
from ltcifar.config.schema import ParamsError, did_you_mean
from ltcifar.config.second import evaluated_config, second_config

CANDIDATE = "candidate"
BACKBONE = "backbone"
RUN_GROUPS = ("runs", "transfer_runs")

# Settings every run reads, whatever its methods; the rest come from ``settings_read``.
BASE = (
    "name", "split", "model", "loss", "sampler", "mixup", "seeds", "epochs", "batch_size",
    "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs", "augment",
    "checkpoint", "checkpoint_every", "precision", "compile", "channels_last", "deterministic",
    "eval_batch_size",
)  # fmt: skip


def all_runs(params: dict) -> dict:
    """Every report run (two groups: DVC gives ``transfer_runs`` one more dependency, backbone)."""
    return {name: run for group in RUN_GROUPS for name, run in params[group].items()}


def run_group(params: dict, name: str) -> str:
    return next(g for g in RUN_GROUPS if name in params[g])


def run_names(params: dict) -> list[str]:
    return [CANDIDATE, *all_runs(params)]


def profile_runs(params: dict, profile: str | None = None) -> list[str]:
    """The runs a profile trains, in ``run_names`` order: those its ``runs`` names; without
    that key, every run but those another profile names on a split this one does not define."""
    prof = params["profiles"][profile or params["profile"]]
    if prof["runs"] is not None:
        return [n for n in run_names(params) if n in prof["runs"]]
    named = {n for p in params["profiles"].values() for n in p["runs"] or ()}
    return [
        n
        for n in run_names(params)
        if n not in named or overrides(params, n).get("split") in prof["splits"]
    ]


def profile_second_stages(params: dict, profile: str | None = None) -> list[str]:
    """The second stages a profile trains: those its ``second_stages`` names; without that key,
    every second stage of a run it trains."""
    pname = profile or params["profile"]
    listed = params["profiles"][pname]["second_stages"]
    if listed is not None:
        return [s for s in params["second_stages"] if s in listed]
    runs = profile_runs(params, pname)
    return [s for s, entry in params["second_stages"].items() if entry["run"] in runs]


def overrides(params: dict, name: str) -> dict:
    """A run's own keys (the candidate's: params.yaml's top-level run keys)."""
    runs = {**all_runs(params), CANDIDATE: params[CANDIDATE]}
    if name not in runs:
        names = run_names(params)
        raise ParamsError(
            f"unknown run {name!r}; choose one of: {', '.join(names)}{did_you_mean(name, names)}"
        )
    return runs[name]


def _layered(params: dict, prof: dict, name: str, *layers: dict) -> dict:
    """recipe <- profile recipe <- ``layers`` <- profile budget, with ``head: auto`` and the
    mixup aliases resolved: the one precedence of every trained config."""
    cfg = {}
    for layer in (params["recipe"], prof["recipe"], *layers, prof["budget"], {"name": name}):
        cfg.update(layer)
    if cfg["head"] == "auto":
        cfg["head"] = "cosine" if cfg["loss"] in catalog.COSINE_LOSSES else "linear"
    return expand_aliases(cfg, name)


def expand_aliases(cfg: dict, where: str) -> dict:
    """``cfg`` with a mixup alias expanded; refused if it sets a sampler too (re-sampling twice)."""
    pair = catalog.MIXUP_ALIASES.get(cfg["mixup"])
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
    backbone = {**bb["recipe"], "model": bb["model"]} if transfer and bb else {}
    cfg = _layered(params, prof, name, backbone, overrides(params, name))
    return {**cfg, "transfer": transfer}


def run_record(resolved: dict) -> RunConfig:
    """A resolved run (``resolve_run``) as the record its readers take, every setting carried;
    ``transfer`` stays behind (its config file says it as the run's ``group``)."""
    return RunConfig(**{k: v for k, v in resolved.items() if k != "transfer"})


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
        (cfg["augment_policy"] != "none", ("augment_policy",)),
        (cfg["augment_policy"] == "randaugment", ("randaugment_ops", "randaugment_magnitude")),
        (cfg["cutout"] > 0, ("cutout",)),
        (cfg["experts"] > 1, ("experts",)),
        (cfg["patience"] > 0, ("patience",)),
        (cfg["rotation"] > 0, ("rotation",)),
    ]
    keys = [
        *BASE,
        *catalog.MODELS[cfg["model"]].reads,
        *catalog.LOSSES[cfg["loss"]].reads,
        *catalog.SAMPLERS[cfg["sampler"]].reads,
        *catalog.MIXUPS[cfg["mixup"]].reads,
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
    """Every file the ``configs`` stage writes for the active profile, by path in ``configs/``:
    what its stages read, and a ``skipped`` config for each stage outside it."""
    prof = params["profiles"][params["profile"]]
    runs, seconds = profile_runs(params), profile_second_stages(params)
    files = {
        f"runs/{name}.json": run_config(params, name) if name in runs else _skip("run", name)
        for name in run_names(params)
    }
    files["download.json"] = {d: download_config(params["download"][d]) for d in prof["datasets"]}
    files["splits.json"] = {**prof["splits"], **_placeholder_splits(params, prof)}
    transfer = any(name in params["transfer_runs"] for name in runs)
    files["backbone.json"] = backbone_config(params) if transfer else _skip("backbone")
    files["evaluate.json"] = {"profile": params["profile"], **params["evaluate"]}
    for name, entry in params["second_stages"].items():
        if name not in seconds:
            files[f"second/{name}.json"] = files[f"runs/{name}.json"] = _skip("second", name)
            continue
        first = run_config(params, entry["run"])
        files[f"second/{name}.json"] = second_config(name, entry, first)
        files[f"runs/{name}.json"] = evaluated_config(name, entry, first)
    return files


def _skip(kind: str, name: str | None = None) -> dict:
    """The config of a stage outside the active profile: its name and why, nothing that any
    profile changes, so switching between profiles that both leave it out does not rerun it."""
    return {**({"name": name} if name else {}), SKIPPED: OUTSIDE[kind]}


def _placeholder_splits(params: dict, prof: dict) -> dict[str, dict]:
    """The splits that runs and second stages name and the profile does not define: their
    stages depend on ``data/splits/<split>.json``, so lt_index writes a placeholder there."""
    named = [overrides(params, n)["split"] for n in run_names(params)]
    named += [entry["split"] for entry in params["second_stages"].values()]
    return {s: _skip("split") for s in dict.fromkeys(named) if s not in prof["splits"]}
