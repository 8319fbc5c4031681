"""params.yaml's ``second_stages``, checked against the run each starts from; torch-free.

A second stage re-balances a finished run's classifier (``ltcifar.training.second_stage``); its
entry
also names the run's split, so ``dvc.yaml`` can depend on exactly that file. The run needs a
linear head (the methods act on its weights) and no prior correction (a second stage is one).
"""

from ltcifar.config import catalog
from ltcifar.config.rules import prior_corrections
from ltcifar.config.schema import ParamsError, did_you_mean

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
            + did_you_mean(entry["run"], runs)
        )
    for profile, cfg in resolved.items():
        at = f"{where} (profile {profile})"
        if entry["split"] != cfg["split"]:
            raise ParamsError(
                f"{where}.split = {entry['split']!r} must be run {entry['run']!r}'s split, "
                f"{cfg['split']!r}"
            )
        if cfg["experts"] > 1:
            raise ParamsError(
                f"{at}: {entry['method']} re-balances one classifier, and run "
                f"{entry['run']!r} has {cfg['experts']} experts"
            )
        if cfg["head"] != "linear":
            raise ParamsError(
                f"{at}: {entry['method']} re-balances a linear classifier, and run "
                f"{entry['run']!r} has a {cfg['head']} head"
            )
        if "tau_grid" in catalog.SECOND_STAGES[entry["method"]].reads and not val[profile]:
            raise ParamsError(
                f"{where}: {entry['method']} chooses tau on validation images, but "
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
    keys = ("run", "split", "method", *catalog.SECOND_STAGES[entry["method"]].reads)
    fed = {k: run_cfg[k] for k in FROM_RUN if k in run_cfg}
    return {"name": name, **{k: entry[k] for k in keys}, **fed}


def evaluated_config(name: str, entry: dict, run_cfg: dict) -> dict:
    """``configs/runs/<name>.json`` for the evaluate stage: the first run's config, relabelled."""
    return {**run_cfg, "name": name, "second_stage": entry["method"], "first_stage": entry["run"]}
