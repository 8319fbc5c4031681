"""The report's cross-run figures, which ``dvc plots`` cannot draw from one run's files. Each
``draw_*`` returns a Figure on its own Agg canvas (no pyplot, no global state), so drawing is
headless and deterministic.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 120


def save(fig: Figure, path: Path) -> Path:
    """Write at the report's dpi with a tight box (outside legends included)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return Path(path)


def _axes(width: float, height: float, title: str, xlabel: str, ylabel: str = ""):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig, ax


def _colors(n: int) -> list:
    return [colormaps["tab10"](i % 10) for i in range(n)]


def draw_summary(runs: pd.DataFrame, metric: str = "macro_f1") -> Figure:
    """One score's bars (± std) coloured by split, best first: the whole imbalance study at once."""
    splits = list(dict.fromkeys(runs["split"]))
    colors = dict(zip(splits, _colors(len(splits)), strict=True))
    rows = pd.concat(
        [runs[runs["split"] == s].sort_values(metric, ascending=False) for s in splits]
    )
    gaps = np.repeat(np.arange(len(splits)), [sum(rows["split"] == s) for s in splits])
    y = -(np.arange(len(rows)) + 0.6 * gaps)
    vals = rows[metric].to_numpy(float)
    errs = np.where(rows[f"{metric}_n"] > 1, rows[f"{metric}_std"], 0.0)
    title = "macro-F1 of every imbalance run, by split"
    xlabel = "macro-F1 on the test set (mean ± std over seeds)"
    fig, ax = _axes(9, 0.34 * len(rows) + 0.25 * len(splits) + 1.6, title, xlabel)
    ax.barh(y, vals, xerr=errs, color=[colors[s] for s in rows["split"]], height=0.75, capsize=3)
    for yy, v, e in zip(y, vals, errs, strict=True):
        label = f"{v:.3f}" + (f" ± {e:.3f}" if e else "")
        ax.text(v + e + 0.01, yy, label, va="center", fontsize=8)
    ax.set_yticks(y, rows.index, fontsize=9)
    ax.set_xlim(0, min(1.0, np.nanmax(vals + errs)) + 0.2)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=colors[s], label=f"split {s}") for s in splits]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def draw_architecture(curves: dict[str, pd.DataFrame]) -> Figure:
    """Train (dashed) and val (bold) error per epoch, mean over seeds: He et al. 2016, Fig. 6."""
    title = "PlainNet20 vs ResNet20 (cf. He et al. 2016, Fig. 6)"
    fig, ax = _axes(8, 4.8, title, "epoch", "error (1 − accuracy)")
    for color, (run, df) in zip(_colors(len(curves)), curves.items(), strict=True):
        n = df["seed"].nunique()
        for part, style, lw in (("train", "--", 1.2), ("val", "-", 2.6)):
            err = 1 - df[df["part"] == part].groupby("step")["value"].mean()
            label = f"{run} {part} ({n} seed{'s' if n > 1 else ''})"
            ax.plot(err.index + 1, err.to_numpy(), style, color=color, lw=lw, label=label)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    return fig


def _trainable(r: pd.Series) -> str:
    """'51,300 of 11.23 M trainable': how much of the network a fine-tuning mode moves."""

    def count(n: float) -> str:
        return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{int(n):,}"

    total = "" if r["trainable_params"] == r["params"] else f" of {count(r['params'])}"
    return f"{count(r['trainable_params'])}{total} trainable"


def draw_transfer(runs: pd.DataFrame) -> Figure:
    """Test accuracy (± std) per fine-tuning mode, by trainable parameters; scratch (grey) last."""
    runs = runs.assign(_s=runs["mode"].eq("scratch")).sort_values(["_s", "trainable_params"])
    title = f"Transfer: a pretrained backbone fine-tuned on {', '.join(runs['dataset'].unique())}"
    ylabel = "test accuracy (mean ± std over seeds)"
    fig, ax = _axes(max(5.5, 2.2 * len(runs)), 4.4, title, "fine-tuning mode", ylabel)
    x, vals, errs = np.arange(len(runs)), runs["accuracy"], runs["accuracy_std"]
    colors = ["0.6" if s else c for c, s in zip(_colors(len(runs)), runs["_s"], strict=True)]
    ax.bar(x, vals, yerr=errs, color=colors, capsize=4, width=0.6)
    for xx, v, e in zip(x, vals, errs, strict=True):
        ax.text(xx, v + e + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [f"{r['mode']}\n{_trainable(r)}" for _, r in runs.iterrows()], fontsize=9)
    ax.set_ylim(0, min(1.0, np.nanmax(vals + errs) + 0.12))
    ax.grid(axis="y", alpha=0.3)
    return fig


def draw_class_counts(index: dict) -> Figure:
    """Images per class on a log axis, every class named (7-10 pt: CIFAR-100's 100 stay legible)."""
    names, counts = index["classes"], np.asarray(index["counts"])
    n, few = len(names), len(names) <= 20  # few classes: counts written on the bars
    title = (
        f"split {index['split']}: {index['dataset']}, {index['total_train']} training images, "
        f"imbalance factor {counts.max() / max(counts.min(), 1):.3g}"
    )
    width = min(max(6.0, 0.15 * n + 2), 18)
    fig, ax = _axes(width, 4.2, title, "class", "training images (log scale)")
    ax.bar(np.arange(n), counts, color="tab:blue", width=0.8)
    ax.set_yscale("log")
    ax.set_ylim(max(counts.min() / 2, 0.5), counts.max() * (3 if few else 1.6))
    if few:
        for i, c in enumerate(counts):
            ax.annotate(f"{c}", (i, c), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")  # fmt: skip
    tilt = {"rotation": 40, "ha": "right", "rotation_mode": "anchor"} if few else {"rotation": 90}
    ax.set_xticks(np.arange(n), names, fontsize=float(np.clip(600 / n, 7, 10)), **tilt)
    ax.set_xlim(-0.7, n - 0.3)
    ax.grid(axis="y", which="both", alpha=0.25)
    return fig
