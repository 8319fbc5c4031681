"""params.yaml's ``second_stages``, checked against the run each starts from; torch-free.

A second stage re-balances a finished run's classifier (``ltcifar.second_stage``); its entry
also names the run's split, so ``dvc.yaml`` can depend on exactly that file. The run needs a
linear head (the methods act on its weights) and no prior correction (a second stage is one).
"""

from ltcifar import catalog
from ltcifar.methods import prior_corrections
from ltcifar.params import Field, ParamsError

SECOND = {
    "run": Field(str),
    "split": Field(str),
    "method": Field(tuple(catalog.SECOND_STAGES)),
    "epochs": Field(int, 10),
    "batch_size": Field(int, 128),
    "lr": Field(float, 0.05),
    "momentum": Field(float, 0.9),
    "weight_decay": Field(float, 5e-4),
    "tau_grid": Field(float, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], list_of=True),
    "max_norm": Field(float, 0.1),
    "beta": Field(float, 0.9999),
}
# What the second stage takes from the first run's config: its seeds, and how it fed images.
FROM_RUN = ("seeds", "augment", "pad_mode", "channels_last", "eval_batch_size")


def check_second_stage(
    name: str, entry: dict, runs: dict, resolved: dict[str, dict], val: dict[str, int]
) -> None:
    """By profile name: ``resolved``, the first run's config; ``val``, its split's val_per_class."""
    where = f"second_stages.{name}"
    if name in runs:
        raise ParamsError(f"{where}: the name is a run's; second stages need names of their own")
    if entry["run"] not in runs:
        raise ParamsError(
            f"{where}.run = {entry['run']!r} is not a run; choose one of: {', '.join(runs)}"
        )
    for key in ("epochs", "batch_size", "lr"):
        if not entry[key] > 0:
            raise ParamsError(f"{where}.{key} = {entry[key]} must be > 0")
    if not (0 < entry["beta"] < 1 and 0 < entry["max_norm"] <= 1 and entry["tau_grid"]):
        raise ParamsError(f"{where}: beta must be in (0, 1), max_norm in (0, 1], tau_grid set")
    for profile, cfg in resolved.items():
        at = f"{where} (profile {profile})"
        if entry["split"] != cfg["split"]:
            raise ParamsError(
                f"{where}.split = {entry['split']!r} must be run {entry['run']!r}'s split, "
                f"{cfg['split']!r}"
            )
        if cfg["head"] != "linear":
            raise ParamsError(
                f"{at}: {entry['method']} re-balances a linear classifier, and run "
                f"{entry['run']!r} has a {cfg['head']} head"
            )
        if entry["method"] == "tau_norm" and not val[profile]:
            raise ParamsError(
                f"{where}: tau_norm chooses tau on validation images, but "
                f"profiles.{profile}.splits.{entry['split']}.val_per_class is 0"
            )
        if corrections := prior_corrections(cfg):
            raise ParamsError(
                f"{at}: one prior correction per run: {entry['method']} re-balances the "
                f"classifier, and run {entry['run']!r} already corrects with "
                f"{' and '.join(corrections.values())}; start from an uncorrected run"
            )


def second_config(name: str, entry: dict, run_cfg: dict) -> dict:
    """``configs/second/<name>.json``: the method's settings and the first run's ``FROM_RUN``."""
    keys = ("run", "split", "method", *catalog.SECOND_STAGES[entry["method"]])
    fed = {k: run_cfg[k] for k in FROM_RUN if k in run_cfg}
    return {"name": name, **{k: entry[k] for k in keys}, **fed}


def evaluated_config(name: str, entry: dict, run_cfg: dict) -> dict:
    """``configs/runs/<name>.json`` for the evaluate stage: the first run's config, relabelled."""
    return {**run_cfg, "name": name, "second_stage": entry["method"], "first_stage": entry["run"]}
