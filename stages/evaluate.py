"""DVC stage `evaluate` / `evaluate_runs@<run>`: score every seed of a run on the test set.

Usage: python -m stages.evaluate <run>
Reads configs/runs/<run>.json, configs/evaluate.json, the run's models and the test set (a
second stage's models too: `evaluate_second@<name>`).
Writes metrics/<run>.json (compact: mean, std and per-seed values, for `dvc metrics diff`),
metrics/<run>/per_class.csv and metrics/<run>/confusion.csv (for `dvc plots`).
This is the only stage that reads test images, and it only ever scores finished models.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltcifar.data import channel_stats
from ltcifar.datasets import load_prepared
from ltcifar.device import out_of_memory_hint, select_device
from ltcifar.errors import run_stage
from ltcifar.files import write_text_atomic
from ltcifar.inference import load_trained, predict
from ltcifar.lt_index import read_index
from ltcifar.metrics import (
    confusion,
    expected_calibration_error,
    minority_recall,
    per_class,
    seed_summary,
    shot_accuracy,
    shot_groups,
    summarize,
    top_k_accuracy,
)
from ltcifar.runconfig import read_config, read_run_config
from ltcifar.transfer import trainable_names


def score_seed(path: Path, x: torch.Tensor, y: torch.Tensor, prepared, counts: list[int]):
    """Test confusion matrix, calibration/top-k scores and training device of one saved model
    (post-hoc adjusted if its config says so)."""
    model, saved = load_trained(path, x.device)
    mean, std = channel_stats(prepared, x.device)
    logits = predict(model, x, mean, std, saved["config"], torch.tensor(counts))
    num_classes = len(saved["classes"])
    conf = confusion(y, logits.argmax(1), num_classes).cpu().numpy()
    probs, labels = logits.softmax(1).cpu().numpy(), y.cpu().numpy()
    extra = {"ece": expected_calibration_error(probs, labels, 15)}
    if saved["config"]["posthoc_tau_grid"]:  # the tau chosen on validation images
        extra["posthoc_tau"] = saved["config"]["posthoc_tau"]
    if num_classes >= 20:
        extra["top5_accuracy"] = top_k_accuracy(probs, labels, 5)
    sizes = dict(model.named_parameters())
    trainable = trainable_names(model, saved["config"]["finetune"])
    info = {
        "device": saved.get("device", "unknown"),
        "params": sum(p.numel() for p in sizes.values()),
        "trainable_params": sum(sizes[n].numel() for n in trainable),
    }
    return conf, extra, info


def main() -> None:
    run = sys.argv[1] if len(sys.argv) > 1 else "candidate"
    cfg, settings = read_run_config(run), read_config("evaluate.json")
    index = read_index(Path("data/splits") / f"{cfg['split']}.json")
    data = load_prepared(index["dataset"])
    device = select_device()
    x, y = torch.from_numpy(data["x_test"]).to(device), torch.from_numpy(data["y_test"]).to(device)
    classes = index["classes"]
    groups = shot_groups(
        np.array(index["counts"]),
        settings["many_shot_min"],
        settings["few_shot_max"],
    )
    per_seed, confs, devices = {}, [], set()
    for seed in cfg["seeds"]:
        with out_of_memory_hint(f"evaluating run {run!r}"):
            conf, extra, info = score_seed(
                Path("models") / run / f"seed{seed}.pt", x, y, data, index["counts"]
            )
        confs.append(conf)
        devices.add(info["device"])
        per_seed[f"seed{seed}"] = {
            **summarize(conf),
            **shot_accuracy(conf, groups),
            **minority_recall(conf, np.array(index["counts"])),
            **extra,
        }
    table = pd.DataFrame(per_seed).T
    mean, std = seed_summary(table)  # std: sample std over seeds (ddof=1), 0.0 for one seed
    metrics = {
        **mean,
        "std": std,
        "per_seed": table.round(6).to_dict(orient="index"),
        "run": {
            "dataset": index["dataset"],
            "split": cfg["split"],
            "profile": settings["profile"],
            "model": cfg["model"],
            "loss": cfg["loss"],
            "sampler": cfg["sampler"],
            "mixup": cfg["mixup"],
            "seeds": len(cfg["seeds"]),
            "test_images": int(len(y)),
            "train_images": index["total_train"],
            "device": ", ".join(sorted(devices)),
            "mode": cfg["finetune"],
            "params": info["params"],
            "trainable_params": info["trainable_params"],
            "posthoc": bool(cfg["posthoc_tau_grid"]) or cfg["posthoc_tau"] > 0,
            "group": cfg["group"],
            "split_shape": index["params"]["shape"],
            **{k: index["params"][k] for k in ("n_max", "n_min", "k", "imbalance")},
            "second_stage": cfg.get("second_stage"),
            "first_stage": cfg.get("first_stage"),
        },
    }
    out = Path("metrics") / run
    out.mkdir(parents=True, exist_ok=True)
    pcs = [per_class(c) for c in confs]
    per_class_table = pd.DataFrame(
        {
            "class": classes,
            "train_count": index["counts"],
            **{k: np.mean([p[k] for p in pcs], 0).round(6) for k in ("precision", "recall", "f1")},
        }
    )
    write_text_atomic(out / "per_class.csv", per_class_table.to_csv(index=False))
    rows = [
        (classes[a], classes[p])
        for a in range(len(classes))
        for p in range(len(classes))
        for _ in range(int(confs[0][a, p]))
    ]
    confusion_rows = pd.DataFrame(rows, columns=["actual", "predicted"]).to_csv(index=False)
    write_text_atomic(out / "confusion.csv", confusion_rows)
    write_text_atomic(Path("metrics", f"{run}.json"), json.dumps(metrics, indent=2) + "\n")
    print(
        f"{run}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"balanced accuracy {metrics['balanced_accuracy']:.4f} over {len(cfg['seeds'])} seed(s)"
    )


if __name__ == "__main__":
    run_stage(main)
