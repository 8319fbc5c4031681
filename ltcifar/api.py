"""The library as a notebook uses it: a run's config from a params file, a split, one seed
trained, a model scored, a trained model and a run's metrics loaded.

Each function is the one the stages call, with the defaults a notebook wants (the device chosen
for you, paths from the repository root); no stage imports this module, so ``dvc.yaml``'s code
dependencies stay the files the stages run. In order::

    cfg = api.run_config("candidate")             # what the train stage would read
    data = api.load_split(cfg.split)              # after `dvc repro lt_index`
    result = api.train_seed(cfg, data, seed=0)
    model, model_cfg = api.trained(result, cfg, data)
    api.evaluate(model, model_cfg, data)          # validation scores; the test set: x=, y=
    model, saved = api.load_model("models/candidate/seed0.pt")
    api.run_metrics("candidate")                  # what the report reads of metrics/
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from ltcifar.config import catalog
from ltcifar.config.params import load
from ltcifar.config.records import EvaluateConfig, RunConfig
from ltcifar.config.runs import run_config as resolved_config
from ltcifar.data import split_data
from ltcifar.data.split_data import SplitData
from ltcifar.device import select_device
from ltcifar.evaluation.inference import Scoring, load_trained, predict, trained_model
from ltcifar.evaluation.scoring import score_logits
from ltcifar.reporting.report import load_runs
from ltcifar.training.engine import TrainResult, train

# The evaluate block's defaults, the shot groups' bounds; scores made here are of no profile.
EVALUATE = EvaluateConfig(profile="", **catalog.defaults(catalog.EVALUATE))


def run_config(
    run: str = "candidate", params: str | Path = "params.yaml", profile: str | None = None
) -> RunConfig:
    """A run's resolved config under ``profile`` (default: the file's), with the off values of
    the features it does not use: what ``configs/runs/<run>.json`` gives the train stage."""
    return RunConfig(**resolved_config(load(params), run, profile))


def load_split(
    split: str,
    device: torch.device | None = None,
    root: str | Path = "data",
    draw: int | None = None,
) -> SplitData:
    """A split's training and validation images on ``device`` (default: CUDA if present)."""
    return split_data.load_split(split, device or select_device(), Path(root), draw)


def train_seed(
    cfg: RunConfig,
    data: SplitData,
    seed: int | None = None,
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    backbone: dict | None = None,
) -> TrainResult:
    """One seed of a run (default: its first), on ``data``'s device; with ``checkpoint``, a
    killed call resumes from that file. ``backbone``: the state_dict a transfer run starts from."""
    seed = cfg.seeds[0] if seed is None else seed
    ckpt = None if checkpoint is None else Path(checkpoint)
    return train(cfg, data, seed, device or data.x.device, ckpt, backbone=backbone)


def trained(
    result: TrainResult, cfg: RunConfig, data: SplitData
) -> tuple[torch.nn.Module, RunConfig]:
    """The model of a ``train_seed`` result, and its config as the train stage saves it (with
    the post-hoc tau chosen on validation images), on ``data``'s device."""
    model = trained_model(cfg, data.classes, data.in_channels, result.state_dict, data.x.device)
    return model, replace(cfg, posthoc_tau=result.posthoc_tau)


def evaluate(
    model: torch.nn.Module,
    cfg: RunConfig,
    data: SplitData,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    settings: EvaluateConfig = EVALUATE,
) -> dict[str, float]:
    """Scores of ``model`` on uint8 images ``x`` labelled ``y`` (default: the split's validation
    images), as the evaluate stage scores the test set: accuracy, macro-F1, balanced accuracy,
    shot groups by ``settings`` (default: the catalogue's ``evaluate``), minority recall, ECE."""
    if x is None or y is None:
        x, y = data.x_val, data.y_val
    logits = predict(model, x, data.mean, data.std, Scoring.of(cfg), data.counts)
    return score_logits(logits, y, data.counts.cpu().numpy(), settings)[1]


def load_model(
    path: str | Path, device: torch.device | None = None
) -> tuple[torch.nn.Module, dict]:
    """A model file of the train or second-stage stage, and everything saved with it."""
    trained = load_trained(Path(path), device or select_device())
    return trained.model, trained.saved


def run_metrics(run: str | None = None, metrics: str | Path = "metrics") -> pd.DataFrame:
    """The evaluated runs' scores (mean, std and count over seeds) and descriptions, one row a
    run, as the report reads them; ``run``: that row only."""
    return load_runs(Path(metrics), None if run is None else [run])
