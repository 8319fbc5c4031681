"""Classification metrics, all derived from one confusion matrix.

The training loop accumulates the confusion matrix on the device and reads it once per epoch;
every score below is then a few numpy operations on a C×C matrix, so train, validation and test
metrics cannot drift apart. Division by zero gives 0, as scikit-learn's ``zero_division=0``.
"""

import numpy as np
import pandas as pd
import torch


def confusion(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C×C counts (rows true, columns predicted), kept on the device: a fixed-size index_add, as
    bincount's data-dependent output size makes CUDA sync the host."""
    flat = torch.zeros(num_classes * num_classes, dtype=torch.long, device=y_true.device)
    flat.index_add_(0, y_true * num_classes + y_pred, torch.ones_like(y_true))
    return flat.view(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def per_class(conf: np.ndarray) -> dict[str, np.ndarray]:
    conf = np.asarray(conf, dtype=float)
    tp = np.diag(conf)
    precision, recall = _div(tp, conf.sum(0)), _div(tp, conf.sum(1))
    f1 = _div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": conf.sum(1)}


def summarize(conf: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy, macro- and micro-F1, balanced accuracy (mean recall over classes present)."""
    conf = np.asarray(conf, dtype=float)
    pc = per_class(conf)
    present = pc["support"] > 0
    accuracy = float(np.trace(conf) / max(conf.sum(), 1))
    return {
        "accuracy": accuracy,
        "macro_f1": float(pc["f1"].mean()),
        "micro_f1": accuracy,  # single-label: micro precision = micro recall = accuracy
        "balanced_accuracy": float(pc["recall"][present].mean()) if present.any() else 0.0,
    }


def shot_groups(train_counts: np.ndarray, many_min: int, few_max: int) -> dict[str, np.ndarray]:
    """Many: more than ``many_min`` training images; few: under ``few_max``; medium: the rest."""
    counts = np.asarray(train_counts)
    many, few = counts > many_min, counts < few_max
    return {"many": many, "medium": ~many & ~few, "few": few}


def shot_accuracy(conf: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy over the test images of each non-empty group of classes."""
    conf = np.asarray(conf, dtype=float)
    correct, total = np.diag(conf), conf.sum(1)
    return {
        f"{name}_shot_accuracy": float(correct[m].sum() / total[m].sum())
        for name, m in groups.items()
        if m.any() and total[m].sum() > 0
    }


def minority_recall(conf: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    """Mean test recall of the classes with fewer training images than the largest class (the
    minority of a step split, the tail of an exp split); empty for a balanced split."""
    counts = np.asarray(train_counts)
    minority = counts < counts.max()
    if not minority.any():
        return {}
    return {"minority_recall": float(per_class(conf)["recall"][minority].mean())}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of |accuracy - confidence|
    weighted by the bin's share of samples; bins are (lo, hi], the first also holds 0."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    masks = [which == b for b in range(bins)]
    gaps = [m.mean() * abs(correct[m].mean() - conf[m].mean()) for m in masks if m.any()]
    return float(sum(gaps))


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def seed_summary(table: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample std (ddof=1) over seeds (rows) of each metric (columns), rounded to 6 digits.

    The seeds sample the possible ones: ddof=0 would understate a few seeds' spread by
    sqrt((n - 1) / n), 0.82 for three. One seed's std is 0.0, not NaN (which JSON and `dvc
    metrics diff` would carry on)."""
    std = table.std(ddof=1) if len(table) > 1 else pd.Series(0.0, index=table.columns)
    return table.mean().round(6).to_dict(), std.round(6).to_dict()


def draw_summary(tables: list[pd.DataFrame]) -> tuple[dict[str, float], ...]:
    """Mean, seed std and draw std of a run trained on several long-tailed draws, one table of
    seeds (rows) per draw. The two spreads stay apart, since they answer different questions:
    the seed std (sample std over training seeds at each draw, averaged over draws) is what
    another training seed moves, the draw std (sample std over draws of the per-draw means)
    what another draw of the subset moves. The mean is the mean of the per-draw means."""
    means = pd.DataFrame([t.mean() for t in tables])
    stds = [t.std(ddof=1) if len(t) > 1 else pd.Series(0.0, index=t.columns) for t in tables]
    seed_std = pd.DataFrame(stds).mean()
    draw_std = means.std(ddof=1) if len(means) > 1 else pd.Series(0.0, index=means.columns)
    return tuple(s.round(6).to_dict() for s in (means.mean(), seed_std, draw_std))
