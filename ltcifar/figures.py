"""The report's figures: every matplotlib drawing, and nothing else.

It exists to keep drawing apart from both the numbers (``report_data``) and the prose
(``report``): each ``draw_*`` function takes frames that ``report_data`` loaded and returns a
Figure, which tests inspect axis by axis and ``save`` writes as a PNG. Figures use matplotlib's
object-oriented API on Agg canvases (no pyplot, no global state), so drawing is headless,
deterministic and does not depend on the user's matplotlib backend.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ltcifar.report_data import BASELINE, STEP_SPLIT, TABLE_SCORES

DPI = 120
CURVE_METRICS = {"loss": "loss", "accuracy": "accuracy", "macro_f1": "macro-F1"}


# ----------------------------------------------------------------------------- helpers


def save(fig: Figure, path: Path) -> Path:
    """Render on an Agg canvas at the report's dpi with a tight bounding box (outside legends
    included) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    """tab10 colours, cycled: distinct for seeds, splits and modes alike."""
    return [colormaps["tab10"](i % 10) for i in range(n)]


def _class_ticks(ax: Axes, names: Sequence[str], axis: str = "x") -> None:
    """Every class name as a tick label, rotated and sized so 10 or 100 names stay legible:
    10 pt for CIFAR-10, 7 pt for CIFAR-100 (the figures give each class at least ~10 pt of
    axis, so rotated 7 pt names do not collide)."""
    n = len(names)
    size = float(np.clip(600 / max(n, 1), 7, 10))
    pos = np.arange(n)
    if axis == "x":
        ax.set_xticks(pos)
        rot, ha = (90, "center") if n > 20 else (40, "right")
        ax.set_xticklabels(
            names,
            rotation=rot,
            ha=ha,
            fontsize=size,
            rotation_mode="anchor" if ha == "right" else "default",
        )
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(names, fontsize=size)


# ----------------------------------------------------------------------------- a. learning curves


def _log_if_spread(ax: Axes, values: pd.Series) -> None:
    """Log y when positive values span more than 50x (a diverging first-epoch validation loss
    would otherwise flatten the rest of the curve into the x axis)."""
    v = values[values > 0]
    if len(v) and v.max() / v.min() > 50:
        ax.set_yscale("log")
        ax.set_ylabel(f"{ax.get_ylabel()} (log scale)")


def draw_learning_curves(curves: pd.DataFrame, run: str, subtitle: str = "") -> Figure:
    """Loss, accuracy and macro-F1 per epoch in a 1×3 grid: train solid, validation dashed, one
    colour per seed (up to 5 seeds; more seeds show the mean with a ±std band), so seed-to-seed
    spread and the train/val gap are both visible."""
    fig = _figure(13, 3.9)
    axes = fig.subplots(1, 3)
    seeds = sorted(curves["seed"].unique(), key=lambda s: int(s[4:]) if s[4:].isdigit() else s)
    banded = len(seeds) > 5
    colors = _colors(1 if banded else len(seeds))
    for ax, (metric, label) in zip(axes, CURVE_METRICS.items(), strict=True):
        for part, style in (("train", "-"), ("val", "--")):
            sel = curves[(curves["metric"] == metric) & (curves["part"] == part)]
            if sel.empty:
                continue
            if banded:
                g = sel.groupby("step")["value"]
                x, m, s = g.mean().index + 1, g.mean().to_numpy(), g.std(ddof=0).to_numpy()
                ax.plot(x, m, style, color=colors[0])
                ax.fill_between(x, m - s, m + s, color=colors[0], alpha=0.2, lw=0)
            else:
                for color, seed in zip(colors, seeds, strict=True):
                    one = sel[sel["seed"] == seed].sort_values("step")
                    ax.plot(one["step"] + 1, one["value"], style, color=color, lw=1.5)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _log_if_spread(ax, curves.loc[curves["metric"] == metric, "value"])
    handles = [Line2D([], [], color="0.3", ls="-", label="train")]
    if (curves["part"] == "val").any():
        handles.append(Line2D([], [], color="0.3", ls="--", label="validation"))
    if banded:
        handles.append(Patch(color=colors[0], alpha=0.4, label=f"mean ± std, {len(seeds)} seeds"))
    else:
        handles += [
            Line2D([], [], color=c, lw=3, label=s) for c, s in zip(colors, seeds, strict=True)
        ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{run}: learning curves" + (f" ({subtitle})" if subtitle else ""))
    return fig


# ----------------------------------------------------------------------------- b. architecture


def draw_architecture(curves: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """Training (dashed) and validation (bold) error, 1 - accuracy, per epoch for PlainNet20 and
    ResNet20, averaged over seeds: the degradation plot of He et al. 2016, Fig. 6."""
    fig = _figure(8, 4.8)
    ax = fig.subplots()
    for color, (run, df) in zip(_colors(len(curves)), curves.items(), strict=True):
        n = df["seed"].nunique()
        for part, style, lw in (("train", "--", 1.2), ("val", "-", 2.6)):
            sel = df[(df["metric"] == "accuracy") & (df["part"] == part)]
            if sel.empty:
                continue
            err = 1 - sel.groupby("step")["value"].mean()
            ax.plot(
                err.index + 1,
                err.to_numpy(),
                style,
                color=color,
                lw=lw,
                label=f"{run} {part} ({n} seed{'s' if n > 1 else ''})",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (1 − accuracy)")
    ax.set_title(title or "PlainNet20 vs ResNet20 (cf. He et al. 2016, Fig. 6)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    return fig


# ----------------------------------------------------------------------------- c. class counts


def draw_class_counts(index: dict) -> Figure:
    """Training images per class of one split on a log axis, class names on x: the shape of the
    tail (exp or step) and its imbalance factor at a glance."""
    names, counts = index["classes"], np.asarray(index["counts"])
    n = len(names)
    fig = _figure(min(max(6.0, 0.15 * n + 2), 18), 4.2)
    ax = fig.subplots()
    ax.bar(np.arange(n), counts, color="tab:blue", width=0.8)
    ax.set_yscale("log")
    ax.set_ylim(max(counts.min() / 2, 0.5), counts.max() * (3 if n <= 20 else 1.6))
    if n <= 20:
        for i, c in enumerate(counts):
            ax.annotate(
                f"{c}",
                (i, c),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    _class_ticks(ax, names)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel("class")
    ax.set_ylabel("training images (log scale)")
    spec = index.get("params", {})
    ax.set_title(
        f"split {index.get('split')}: {index.get('dataset')}, {spec.get('profile')} profile\n"
        f"{index.get('total_train', counts.sum())} training images, "
        f"imbalance factor {counts.max() / max(counts.min(), 1):.3g}"
    )
    ax.grid(axis="y", which="both", alpha=0.25)
    return fig


# ----------------------------------------------------------------------------- d. per-class F1


def draw_per_class_f1(per_class: dict[str, pd.DataFrame], baseline: str = BASELINE) -> Figure:
    """One panel per method: its per-class F1 beside the baseline's, grouped bars by class, so
    it shows which classes (the tail?) a method helps or hurts; many methods stay readable."""
    base = per_class[baseline]
    others = [r for r in per_class if r != baseline]
    names = base["class"].tolist()
    n = len(names)
    ncols = min(3, len(others))
    nrows = math.ceil(len(others) / ncols)
    panel_w = min(max(4.2, 0.32 * n + 1.2), 16)
    fig = _figure(panel_w * ncols, 3.2 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.arange(n)
    for ax, run in zip(axes, others, strict=False):
        df = per_class[run].set_index("class").reindex(names)
        ax.bar(x - 0.2, base["f1"], 0.4, color="0.65")
        ax.bar(x + 0.2, df["f1"].to_numpy(), 0.4, color="tab:orange")
        ax.set_title(
            f"{run}: macro-F1 {df['f1'].mean():.3f} vs {base['f1'].mean():.3f}", fontsize=10
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("F1")
        ax.set_xlim(-0.7, n - 0.3)
        _class_ticks(ax, names)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(others) :]:
        ax.remove()
    fig.legend(
        handles=[
            Patch(color="0.65", label=f"{baseline} (baseline)"),
            Patch(color="tab:orange", label="the method named in the panel title"),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    fig.suptitle(f"Per-class F1 on the test set, {STEP_SPLIT} split: each method vs {baseline}")
    return fig


# ----------------------------------------------------------------------------- e. confusion


def draw_confusion(counts: pd.DataFrame, run: str, note: str = "") -> Figure:
    """Confusion matrix normalised by row (each true class sums to 1, so tail classes are as
    visible as head classes), class names on both axes, values printed up to 15 classes."""
    names = list(counts.index)
    n = len(names)
    rows = counts.to_numpy(dtype=float)
    totals = rows.sum(1, keepdims=True)
    norm = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)
    side = min(max(5.5, 0.13 * n + 3), 16)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= 15:
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > 0.5 else "black",
                )
    _class_ticks(ax, names, "x")
    _class_ticks(ax, names, "y")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{run}: confusion matrix, normalised by row" + (f"\n{note}" if note else ""))
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class's test images")
    return fig


# ----------------------------------------------------------------------------- f. summary


def draw_summary(runs: pd.DataFrame, metric: str = "macro_f1") -> Figure:
    """Horizontal bars of one score with ±std error bars, grouped and coloured by split and
    sorted best-first within each split: the whole imbalance study in one picture."""
    splits = list(dict.fromkeys(runs["split"]))
    colors = dict(zip(splits, _colors(len(splits)), strict=True))
    blocks = [runs[runs["split"] == s].sort_values(metric, ascending=False) for s in splits]
    rows = pd.concat(blocks)
    # One bar per run, top to bottom, with a 0.6 gap between splits.
    gaps = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    ypos = -(np.arange(len(rows)) + 0.6 * gaps)
    vals = rows[metric].to_numpy(float)
    errs = np.nan_to_num(rows[f"{metric}_std"].to_numpy(float))
    multi = rows[f"{metric}_n"].to_numpy() > 1
    fig = _figure(9, 0.34 * len(rows) + 0.25 * len(blocks) + 1.6)
    ax = fig.subplots()
    ax.barh(ypos, vals, color=[colors[s] for s in rows["split"]], height=0.75)
    if multi.any():  # one seed has no spread: no error bar rather than a misleading zero
        ax.errorbar(
            vals[multi],
            ypos[multi],
            xerr=errs[multi],
            fmt="none",
            ecolor="0.2",
            elinewidth=1,
            capsize=3,
        )
    ax.set_ylim(ypos.min() - 0.7, ypos.max() + 0.7)
    for yy, v, e, m in zip(ypos, vals, errs, multi, strict=True):
        ax.text(
            v + e + 0.01, yy, f"{v:.3f}" + (f" ± {e:.3f}" if m else ""), va="center", fontsize=8
        )
    ax.set_yticks(ypos)
    ax.set_yticklabels(rows.index, fontsize=9)
    ax.set_xlim(0, min(1.0, np.nanmax(vals + errs)) + 0.2)
    name = TABLE_SCORES.get(metric, metric)
    ax.set_xlabel(f"{name} on the test set (mean ± std over seeds)")
    ax.set_title(f"{name} of every imbalance run, by split")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(
        handles=[Patch(color=colors[s], label=f"split {s}") for s in splits],
        loc="outside right upper",
        frameon=False,
    )
    return fig


# ----------------------------------------------------------------------------- g. transfer


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{int(n):,}"


def _params_label(trainable, total=None) -> str:
    """'51,300 of 11.23 M trainable': how much of the network a mode lets move."""
    if trainable is None or pd.isna(trainable):
        return "trainable params not recorded"
    if total is None or pd.isna(total) or total == trainable:
        return f"{_count(trainable)} trainable"
    return f"{_count(trainable)} of {_count(total)} trainable"


def draw_transfer(runs: pd.DataFrame) -> Figure:
    """Test accuracy (± std over seeds) of each fine-tuning mode, labelled with how many
    parameters it trains: how much of the network must move to fit CIFAR-100. Pretrained
    modes go left to right by trainable parameters; training from scratch (grey) comes last."""
    runs = runs.assign(_s=runs["mode"].eq("scratch"), _p=runs["trainable_params"].astype(float))
    runs = runs.sort_values(["_s", "_p"])
    fig = _figure(max(5.5, 2.2 * len(runs)), 4.4)
    ax = fig.subplots()
    x = np.arange(len(runs))
    vals = runs["accuracy"].to_numpy(float)
    errs = np.nan_to_num(runs["accuracy_std"].to_numpy(float))
    colors = ["0.6" if s else c for c, s in zip(_colors(len(runs)), runs["_s"], strict=True)]
    ax.bar(x, vals, yerr=errs, color=colors, capsize=4, width=0.6)
    for xx, v, e in zip(x, vals, errs, strict=True):
        ax.text(xx, v + e + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [
            f"{r['mode'] if isinstance(r['mode'], str) else run}\n"
            f"{_params_label(r['trainable_params'], r['params'])}"
            for run, r in runs.iterrows()
        ],
        fontsize=9,
    )
    ax.set_ylim(0, min(1.0, np.nanmax(vals + errs) + 0.12))
    ax.set_xlabel("fine-tuning mode")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(
        "Transfer: a pretrained backbone fine-tuned on "
        f"{', '.join(sorted(set(map(str, runs['dataset']))))}"
    )
    ax.grid(axis="y", alpha=0.3)
    return fig
