"""Scoring a finished run on the untouched test set, and what the evaluate stage writes of it.

``metrics/<run>.json`` holds the scores only (means over seeds), whose macro-F1 the report stage
gathers into DVC's one metrics file; ``metrics/<run>/details.json`` holds the spread (over seeds,
and over draws on a split with draws), every model's scores and the run's description (what the
report reads); ``per_class.csv`` and
``confusion.csv`` feed `dvc plots`. Only finished models are scored: nothing here trains.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltcifar.config.records import EvaluateConfig, RunConfig, need
from ltcifar.data.lt_index import member
from ltcifar.data.split_data import channel_stats
from ltcifar.device import out_of_memory_hint
from ltcifar.evaluation.inference import Scoring, load_trained, predict
from ltcifar.evaluation.metrics import (
    confusion,
    draw_summary,
    expected_calibration_error,
    minority_recall,
    per_class,
    seed_summary,
    shot_accuracy,
    shot_groups,
    summarize,
    top_k_accuracy,
)
from ltcifar.files import write_text_atomic
from ltcifar.methods.transfer import trainable_names


@dataclass
class TestSet:
    """The test images on the device, and what scoring needs of the split and the dataset."""

    x: torch.Tensor
    y: torch.Tensor
    prepared: np.lib.npyio.NpzFile
    index: dict  # the run's split index: its training counts define the shot groups

    @property
    def counts(self) -> np.ndarray:
        return np.array(self.index["counts"])


@dataclass
class SeedScore:
    conf: np.ndarray
    scores: dict[str, float]
    device: str
    params: int
    trainable_params: int


def score_logits(
    logits: torch.Tensor, y: torch.Tensor, counts: np.ndarray, settings: EvaluateConfig
) -> tuple[np.ndarray, dict[str, float]]:
    """The confusion matrix and scores of predictions ``logits`` of images labelled ``y``, of a
    model trained on ``counts`` images per class: accuracy, F1s, balanced accuracy, shot groups
    (``settings``: the evaluate block's thresholds), minority recall, calibration."""
    conf = confusion(y, logits.argmax(1), len(counts)).cpu().numpy()
    probs, labels = logits.softmax(1).cpu().numpy(), y.cpu().numpy()
    groups = shot_groups(counts, settings.many_shot_min, settings.few_shot_max)
    scores = {
        **summarize(conf),
        **shot_accuracy(conf, groups),
        **minority_recall(conf, counts),
        "ece": expected_calibration_error(probs, labels, 15),
    }
    return conf, scores


def score_seed(path: Path, test: TestSet, settings: EvaluateConfig) -> SeedScore:
    """One saved model's test confusion matrix and scores (``score_logits``; post-hoc adjusted
    if its config says so), with the tau it was chosen with and top-5 on 20+ classes."""
    trained = load_trained(path, test.x.device)
    model, cfg = trained.model, trained.config
    mean, std = channel_stats(test.prepared, test.x.device)
    counts = torch.tensor(test.index["counts"])
    logits = predict(model, test.x, mean, std, Scoring.of(cfg), counts)
    num_classes = len(trained.saved["classes"])
    conf, scores = score_logits(logits, test.y, test.counts, settings)
    if cfg.posthoc_tau_grid:  # the tau chosen on validation images
        scores["posthoc_tau"] = cfg.posthoc_tau
    if cfg.tau is not None:  # tau-norm's, chosen on validation images by the second stage
        scores["tau"] = cfg.tau
    if num_classes >= 20:
        probs = logits.softmax(1).cpu().numpy()
        scores["top5_accuracy"] = top_k_accuracy(probs, test.y.cpu().numpy(), 5)
    sizes = dict(model.named_parameters())
    trainable = trainable_names(model, cfg.finetune)
    return SeedScore(
        conf=conf,
        scores=scores,
        device=trained.saved.get("device", "unknown"),
        params=sum(p.numel() for p in sizes.values()),
        trainable_params=sum(sizes[n].numel() for n in trainable),
    )


def score_run(
    run: str, cfg: RunConfig, test: TestSet, settings: EvaluateConfig, draw: int | None = None
) -> list[SeedScore]:
    """Every seed of a run (on one draw of its split), from ``models/<run>/<member>.pt``."""
    scored = []
    for seed in cfg.seeds:
        path = Path("models") / run / f"{member(seed, draw)}.pt"
        with out_of_memory_hint(f"evaluating run {run!r}"):
            scored.append(score_seed(path, test, settings))
    return scored


def describe(
    cfg: RunConfig, test: TestSet, settings: EvaluateConfig, scored: list[SeedScore]
) -> dict:
    """What the report reads of a run: where its numbers come from and what it trained."""
    index = test.index
    return {
        "dataset": index["dataset"],
        "split": cfg.split,
        "profile": settings.profile,
        "model": cfg.model,
        "loss": cfg.loss,
        "sampler": cfg.sampler,
        "mixup": cfg.mixup,
        "seeds": len(cfg.seeds),
        "test_images": int(len(test.y)),
        "train_images": index["total_train"],
        "device": ", ".join(sorted({s.device for s in scored})),
        "mode": cfg.finetune,
        "params": scored[-1].params,
        "trainable_params": scored[-1].trainable_params,
        "posthoc": bool(cfg.posthoc_tau_grid) or cfg.posthoc_tau > 0,
        "group": need(cfg.group, "group"),
        "split_shape": index["params"]["shape"],
        **{k: index["params"][k] for k in ("n_max", "n_min", "k", "imbalance")},
        "second_stage": cfg.second_stage,
        "first_stage": cfg.first_stage,
    }


def spread(cfg: RunConfig, by_draw: dict[int | None, list[SeedScore]]) -> dict:
    """The headline means and the spread (``details.json``) of every model of a run, by draw
    (``None``: its split's only draw). With several draws, ``std`` is over training seeds at
    each draw, averaged, and ``draw_std`` over the per-draw means (``metrics.draw_summary``);
    ``draws`` names each draw's models in ``per_seed``."""
    tables = {
        draw: pd.DataFrame(
            {member(seed, draw): s.scores for seed, s in zip(cfg.seeds, scored, strict=True)}
        ).T
        for draw, scored in by_draw.items()
    }
    table = pd.concat(tables.values())
    if list(by_draw) == [None]:
        mean, std = seed_summary(table)  # std: sample std over seeds (ddof=1), 0.0 for one seed
        return {"mean": mean, "std": std, "per_seed": table.round(6).to_dict(orient="index")}
    mean, std, draw_std = draw_summary(list(tables.values()))
    return {
        "mean": mean,
        "std": std,
        "draw_std": draw_std,
        "draws": {str(d): list(t.index) for d, t in tables.items()},
        "per_seed": table.round(6).to_dict(orient="index"),
    }


def write_metrics(
    run: str,
    cfg: RunConfig,
    tests: dict[int | None, TestSet],
    settings: EvaluateConfig,
    by_draw: dict[int | None, list[SeedScore]],
) -> dict:
    """Write the run's metrics, details and plot files under ``metrics/`` from every model,
    by draw (``spread``); the headline. A split's draws share their per-class counts, so its
    first draw's index describes the run and labels the plots."""
    test = next(iter(tests.values()))
    scored = [s for draw_scores in by_draw.values() for s in draw_scores]
    summary = spread(cfg, by_draw)
    mean = summary.pop("mean")
    details = {"run": describe(cfg, test, settings, scored), **summary}
    out = Path("metrics") / run
    classes = test.index["classes"]
    pcs = [per_class(s.conf) for s in scored]
    per_class_table = pd.DataFrame(
        {
            "class": classes,
            "train_count": test.index["counts"],
            **{k: np.mean([p[k] for p in pcs], 0).round(6) for k in ("precision", "recall", "f1")},
        }
    )
    conf = scored[0].conf
    pairs = [(a, p) for a in range(len(classes)) for p in range(len(classes))]
    rows = [(classes[a], classes[p]) for a, p in pairs for _ in range(int(conf[a, p]))]
    write_text_atomic(out / "per_class.csv", per_class_table.to_csv(index=False))
    write_text_atomic(
        out / "confusion.csv",
        pd.DataFrame(rows, columns=["actual", "predicted"]).to_csv(index=False),
    )
    write_text_atomic(out / "details.json", json.dumps(details, indent=2) + "\n")
    write_text_atomic(Path("metrics", f"{run}.json"), json.dumps(mean, indent=2) + "\n")
    return mean
